#!/usr/bin/env python3
"""A wider zoo of small random-weight Keras models exported as SavedModels.

Not committed: it writes the fixture layout of scripts/build_keras_savedmodels.py
(`<fixture>/1/` plus `<fixture>.json` with "signatures", "inputs", "outputs",
"ops", or "export_error") for many more architectures, into a scratch
directory, to find what a SavedModel server does not handle yet:

    FERROSERVE_SAVEDMODEL_FIXTURES=target/keras-zoo cargo test ... keras_exports

Each model of MODELS is built with fixed seeds and random weights (biases,
betas, gammas, BatchNormalization moving statistics and PReLU slopes
randomised as in build_keras_savedmodels.py) and exported two ways:

  Keras 3 models
    <name>_export       model.export(dir)
    <name>_tfsave       tf.saved_model.save(model, dir)
  tf_keras (Keras 2) models
    <name>_tfk_save     model.save(dir, save_format="tf")
    <name>_tfk_tfsave   tf.saved_model.save(model, dir)

The JSON keys are those of build_keras_savedmodels.py (whose helpers this
script imports), plus "framework" ("keras" or "tf_keras"); "inputs" and
"outputs" may also hold float64, int64, uint8 and string tensors (strings as
UTF-8 text). When building a model or exporting it raises, the JSON records
"export_error" and the script goes on. When the reloaded export differs from
the Keras model in memory (rtol 1e-5, atol 1e-6), or the model in memory
raises, "keras_mismatch" says so next to the outputs (TensorFlow's outputs
stay the expectation).

Also writes <out>/README.md: the fixtures, their signatures and op types, and
the op types no fixture of tests/fixtures/savedmodels has.

Run from the repository root, in the virtualenv of requirements/scripts.txt
with tf_keras installed without its dependencies (see the comment there):

    target/py/scripts/bin/python scripts/build_keras_zoo.py [--out DIR] [--only NAME ...]

--out defaults to target/keras-zoo and is deleted first.
"""

import argparse
import json
import pathlib
import shutil
import sys
import zlib

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

# Sets the environment (CPU only, oneDNN off, one thread) and imports TensorFlow
# and Keras 3; its MODELS are not touched.
import build_keras_savedmodels as base  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402
from keras import layers, ops  # noqa: E402

try:
    import tf_keras
except ImportError:  # tf_keras models then record the import error
    tf_keras = None

ROOT = base.ROOT
DEFAULT_OUT = ROOT / "target" / "keras-zoo"
COMMITTED = ROOT / "tests" / "fixtures" / "savedmodels"
VERSION = base.VERSION
SIGNATURE = base.SIGNATURE
BATCH = base.BATCH
WEIGHT_SEED = 20260301
INPUT_SEED = base.INPUT_SEED
RTOL = base.RTOL
ATOL = base.ATOL
SIZE_LIMIT = 30 * 1024 * 1024

EXPORTS = {
    "keras": {"export": "model.export", "tfsave": "tf.saved_model.save"},
    "tf_keras": {
        "tfk_save": 'tf_keras model.save(save_format="tf")',
        "tfk_tfsave": "tf_keras tf.saved_model.save",
    },
}


# --- Keras 3 models ---------------------------------------------------------------
#
# Input specs: ("float", shape[, dtype]) normal(0, 1); ("tokens", shape, vocabulary
# [, dtype]) integer ids with a 0 and vocabulary - 1; ("padded", shape,
# vocabulary) int32 ids whose row i ends in i + 1 zeros; ("uint8", shape) pixels;
# ("strings", shape, words) byte strings drawn from words.


def conv_bn_relu(x, filters, kernel=3):
    x = layers.Conv2D(filters, kernel, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x)


def resnet_block():
    image = keras.Input((8, 8, 3), name="image")
    x = conv_bn_relu(image, 4)
    y = conv_bn_relu(x, 4)
    y = layers.Conv2D(4, 3, padding="same", use_bias=False)(y)
    y = layers.BatchNormalization()(y)
    x = layers.ReLU()(layers.Add()([x, y]))
    shortcut = layers.Conv2D(6, 1, strides=2)(x)
    y = layers.Conv2D(6, 3, strides=2, padding="same")(x)
    x = layers.ReLU()(layers.Add()([shortcut, y]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(image, layers.Dense(3)(x), name="resnet_block")


def mobilenet_v2_block():
    image = keras.Input((8, 8, 4), name="image")
    x = layers.Conv2D(8, 1, use_bias=False)(image)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU(6.0)(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU(6.0)(x)
    x = layers.Conv2D(4, 1, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Add()([image, x])
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(image, layers.Dense(2)(x), name="mobilenet_v2_block")


def inception_block():
    image = keras.Input((8, 8, 3), name="image")
    a = layers.Conv2D(2, 1, activation="relu")(image)
    b = layers.Conv2D(2, 1, activation="relu")(image)
    b = layers.Conv2D(3, 3, padding="same", activation="relu")(b)
    c = layers.Conv2D(2, 1, activation="relu")(image)
    c = layers.Conv2D(2, 5, padding="same", activation="relu")(c)
    d = layers.MaxPooling2D(3, strides=1, padding="same")(image)
    d = layers.Conv2D(2, 1, activation="relu")(d)
    x = layers.Concatenate()([a, b, c, d])
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(image, layers.Dense(3)(x), name="inception_block")


def vgg_pool():
    return keras.Sequential(
        [
            keras.Input((11, 11, 3), name="image"),
            layers.Conv2D(4, 3, padding="same", activation="relu"),
            layers.Conv2D(4, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(3, strides=2, padding="same"),
            layers.Conv2D(6, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2, strides=2, padding="same"),
            layers.Flatten(),
            layers.Dense(3),
        ],
        name="vgg_pool",
    )


def grouped_conv():
    return keras.Sequential(
        [
            keras.Input((6, 6, 4), name="image"),
            layers.Conv2D(6, 3, groups=2),
            layers.Flatten(),
            layers.Dense(2),
        ],
        name="grouped_conv",
    )


def dilated_conv2d():
    return keras.Sequential(
        [
            keras.Input((9, 9, 2), name="image"),
            layers.Conv2D(3, 3, dilation_rate=2),
            layers.Conv2D(2, 3, dilation_rate=2, padding="same"),
            layers.Flatten(),
            layers.Dense(2),
        ],
        name="dilated_conv2d",
    )


def conv3d_pool():
    return keras.Sequential(
        [
            keras.Input((4, 6, 6, 2), name="volume"),
            layers.Conv3D(3, 3, padding="same", activation="relu"),
            layers.MaxPooling3D(2),
            layers.Flatten(),
            layers.Dense(2),
        ],
        name="conv3d_pool",
    )


def conv1d_pools():
    return keras.Sequential(
        [
            keras.Input((12, 3), name="sequence"),
            layers.Conv1D(4, 3, activation="relu"),
            layers.MaxPooling1D(2),
            layers.Conv1D(4, 3, padding="same"),
            layers.AveragePooling1D(2),
            layers.GlobalAveragePooling1D(),
            layers.Dense(2),
        ],
        name="conv1d_pools",
    )


def crop_upsample_bilinear():
    return keras.Sequential(
        [
            keras.Input((8, 8, 2), name="image"),
            layers.Cropping2D(((1, 2), (2, 1))),
            layers.UpSampling2D(2, interpolation="bilinear"),
            layers.Conv2D(2, 1),
            layers.Flatten(),
            layers.Dense(2),
        ],
        name="crop_upsample_bilinear",
    )


def resizing():
    image = keras.Input((6, 6, 2), name="image")
    a = layers.Flatten()(layers.Resizing(9, 7, interpolation="bilinear")(image))
    b = layers.Flatten()(layers.Resizing(4, 5, interpolation="nearest")(image))
    x = layers.Concatenate()([a, b])
    return keras.Model(image, layers.Dense(3)(x), name="resizing")


def rescale_normalize_uint8():
    pixels = keras.Input((4, 4, 3), dtype="uint8", name="pixels")
    rescale = layers.Rescaling(1.0 / 255)
    normalize = layers.Normalization(axis=-1)
    fixed = np.linspace(0.0, 1.0, 2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    normalize.adapt(fixed**2)
    x = normalize(rescale(pixels))
    x = layers.Flatten()(x)
    return keras.Model(pixels, layers.Dense(2)(x), name="rescale_normalize_uint8")


def reshape_ops():
    return keras.Sequential(
        [
            keras.Input((4, 3), name="features"),
            layers.Permute((2, 1)),
            layers.Flatten(),
            layers.RepeatVector(2),
            layers.Reshape((2, 3, 4)),
            layers.Permute((3, 1, 2)),
            layers.Flatten(),
            layers.Dense(2),
        ],
        name="reshape_ops",
    )


def embedding_pool():
    return keras.Sequential(
        [
            keras.Input((8,), dtype="int32", name="tokens"),
            layers.Embedding(30, 4),
            layers.GlobalAveragePooling1D(),
            layers.Dense(2),
        ],
        name="embedding_pool",
    )


def transformer_encoder():
    sequence = keras.Input((5, 8), name="sequence")
    attended = layers.MultiHeadAttention(num_heads=2, key_dim=4)(sequence, sequence)
    x = layers.LayerNormalization()(layers.Add()([sequence, attended]))
    y = layers.Dense(16, activation="relu")(x)
    y = layers.Dense(8)(y)
    x = layers.LayerNormalization()(layers.Add()([x, y]))
    x = layers.GlobalAveragePooling1D()(x)
    return keras.Model(sequence, layers.Dense(2)(x), name="transformer_encoder")


def attention_layer():
    query = keras.Input((4, 6), name="query")
    value = keras.Input((5, 6), name="value")
    x = layers.Attention(use_scale=True)([query, value])
    x = layers.Flatten()(x)
    return keras.Model([query, value], layers.Dense(2)(x), name="attention_layer")


def dense_rank3():
    return keras.Sequential(
        [
            keras.Input((4, 5), name="sequence"),
            layers.Dense(6, activation="relu"),
            layers.Dense(3),
        ],
        name="dense_rank3",
    )


def softmax_axis1():
    return keras.Sequential(
        [
            keras.Input((4, 5), name="sequence"),
            layers.Dense(5),
            layers.Softmax(axis=1),
        ],
        name="softmax_axis1",
    )


def activations_a():
    hard_swish = "hard_swish" if hasattr(keras.activations, "hard_swish") else "hard_silu"
    return keras.Sequential(
        [
            keras.Input((6,), name="features"),
            layers.Dense(6, activation="selu"),
            layers.Dense(6, activation="hard_sigmoid"),
            layers.Dense(6, activation=hard_swish),
            layers.Dense(6, activation="exponential"),
            layers.Dense(2),
        ],
        name="activations_a",
    )


def activations_b():
    return keras.Sequential(
        [
            keras.Input((6,), name="features"),
            layers.Dense(6),
            layers.ReLU(max_value=1.5, threshold=0.2),
            layers.Dense(6),
            layers.PReLU(),
            layers.Dense(6),
            # ThresholdedReLU(theta=0.3) of Keras 2: x if x > theta else 0.
            layers.ReLU(threshold=0.3),
            layers.Dense(6),
            layers.ReLU(negative_slope=0.2, max_value=1.0, threshold=0.1),
            layers.Dense(2),
        ],
        name="activations_b",
    )


def activations_c():
    features = keras.Input((6,), name="features")
    x = layers.Dense(6)(features)
    x = layers.Activation(lambda t: keras.activations.gelu(t, approximate=True))(x)
    x = layers.Dense(6)(x)
    x = layers.Activation("mish")(x)
    x = layers.Dense(6, activation="softsign")(x)
    x = layers.Dense(6, activation="silu")(x)
    x = layers.Dense(6, activation="relu6")(x)
    x = layers.Dense(4, activation="log_softmax")(x)
    return keras.Model(features, x, name="activations_c")


def custom_ops():
    features = keras.Input((6,), name="features")
    x = layers.Dense(6)(features)
    a = ops.sqrt(ops.abs(x))
    b = ops.clip(x, -0.5, 0.5)
    c = ops.where(x > 0.1, x, 0.1 * x)
    d = ops.maximum(a, c)
    e = ops.minimum(b, ops.square(x))
    f = ops.cumsum(x, axis=1)
    g = ops.log1p(ops.abs(x)) - ops.sum(x, axis=1, keepdims=True)
    h = ops.exp(-ops.abs(x)) * ops.max(x, axis=1, keepdims=True)
    values = ops.concatenate([a, b, c, d, e, f, g, h], axis=1)
    return keras.Model(
        features,
        {"values": values, "argmax": ops.argmax(x, axis=1)},
        name="custom_ops",
    )


def lstm_masked():
    return keras.Sequential(
        [
            keras.Input((7,), dtype="int32", name="tokens"),
            layers.Embedding(15, 4, mask_zero=True),
            layers.LSTM(5),
            layers.Dense(2),
        ],
        name="lstm_masked",
    )


def gru_reset_before():
    return keras.Sequential(
        [
            keras.Input((5, 3), name="sequence"),
            layers.GRU(4, reset_after=False),
            layers.Dense(2),
        ],
        name="gru_reset_before",
    )


def bigru_sum():
    return keras.Sequential(
        [
            keras.Input((5, 3), name="sequence"),
            layers.Bidirectional(layers.GRU(4, return_sequences=True), merge_mode="sum"),
            layers.Dense(2),
        ],
        name="bigru_sum",
    )


def lstm_state():
    sequence = keras.Input((5, 3), name="sequence")
    output, state_h, state_c = layers.LSTM(4, return_state=True)(sequence)
    return keras.Model(sequence, [layers.Dense(2)(output), state_h, state_c], name="lstm_state")


def simple_rnn_backwards():
    return keras.Sequential(
        [
            keras.Input((6, 3), name="sequence"),
            layers.SimpleRNN(4, go_backwards=True, return_sequences=True),
            layers.Dense(2),
        ],
        name="simple_rnn_backwards",
    )


def stacked_lstm():
    return keras.Sequential(
        [
            keras.Input((5, 3), name="sequence"),
            layers.LSTM(6, return_sequences=True),
            layers.LSTM(4, return_sequences=True),
            layers.LSTM(3),
            layers.Dense(2),
        ],
        name="stacked_lstm",
    )


def conv_lstm2d():
    return keras.Sequential(
        [
            keras.Input((3, 5, 5, 2), name="frames"),
            layers.ConvLSTM2D(2, 3, padding="same"),
            layers.Flatten(),
            layers.Dense(2),
        ],
        name="conv_lstm2d",
    )


def int64_input():
    tokens = keras.Input((6,), dtype="int64", name="tokens")
    x = layers.Flatten()(layers.Embedding(12, 3)(tokens))
    y = ops.cast(tokens, "float32") / 12.0
    x = layers.Concatenate()([x, y])
    return keras.Model(tokens, layers.Dense(2)(x), name="int64_input")


def float64_input():
    features = keras.Input((4,), dtype="float64", name="features")
    wide = layers.Dense(3, dtype="float64", activation="tanh")(features)
    wide = layers.Dense(2, dtype="float64")(wide)
    narrow = layers.Dense(2)(features)
    return keras.Model(features, [wide, narrow], name="float64_input")


def multi_io_list():
    a = keras.Input((5,), name="a")
    b = keras.Input((3, 2), name="b")
    x = layers.Concatenate()([a, layers.Flatten()(b)])
    x = layers.Dense(6, activation="relu")(x)
    return keras.Model(
        [a, b],
        [layers.Dense(2)(x), layers.Dense(1, activation="sigmoid")(x)],
        name="multi_io_list",
    )


def dict_three():
    features = keras.Input((6,), name="features")
    x = layers.Dense(8, activation="relu")(features)
    outputs = {
        "alpha": layers.Dense(1, name="alpha")(x),
        "beta": layers.Dense(2, activation="softmax", name="beta")(x),
        "gamma": layers.Dense(3, activation="tanh", name="gamma")(x),
    }
    return keras.Model(features, outputs, name="dict_three")


def merge_layers():
    a = keras.Input((4,), name="a")
    b = keras.Input((6,), name="b")
    bb = layers.Dense(4)(b)
    parts = [
        layers.Subtract()([a, bb]),
        layers.Multiply()([a, bb]),
        layers.Average()([a, bb]),
        layers.Maximum()([a, bb]),
        layers.Minimum()([a, bb]),
        layers.Dot(axes=1, normalize=True)([a, bb]),
    ]
    x = layers.Concatenate()(parts)
    return keras.Model([a, b], layers.Dense(2)(x), name="merge_layers")


def norm_layers():
    return keras.Sequential(
        [
            keras.Input((4, 4, 4), name="image"),
            layers.GroupNormalization(groups=2),
            layers.UnitNormalization(),
            layers.Conv2D(3, 1),
            layers.LayerNormalization(axis=(1, 2, 3)),
            layers.GlobalMaxPooling2D(),
            layers.Dense(2),
        ],
        name="norm_layers",
    )


def conv1d_variants():
    return keras.Sequential(
        [
            keras.Input((6, 3), name="sequence"),
            layers.Conv1DTranspose(3, 3, strides=2),
            layers.SeparableConv1D(4, 3),
            layers.DepthwiseConv1D(3),
            layers.UpSampling1D(2),
            layers.ZeroPadding1D(1),
            layers.Cropping1D((2, 1)),
            layers.GlobalMaxPooling1D(),
            layers.Dense(2),
        ],
        name="conv1d_variants",
    )


def conv2d_transpose_padding():
    return keras.Sequential(
        [
            keras.Input((4, 4, 3), name="image"),
            layers.Conv2DTranspose(2, 3, strides=2, output_padding=1),
            layers.Conv2DTranspose(2, 2, strides=(1, 2), padding="same"),
            layers.Flatten(),
            layers.Dense(2),
        ],
        name="conv2d_transpose_padding",
    )


def string_lookup():
    words = keras.Input((3,), dtype="string", name="words")
    ids = layers.StringLookup(vocabulary=["red", "green", "blue", "cyan"])(words)
    x = layers.Flatten()(layers.Embedding(6, 3)(ids))
    hashed = layers.Hashing(num_bins=5)(words)
    y = ops.cast(hashed, "float32")
    x = layers.Concatenate()([x, y])
    return keras.Model(words, layers.Dense(2)(x), name="string_lookup")


# --- tf_keras (Keras 2) models ------------------------------------------------------


def tfk_mnist_cnn():
    L = tf_keras.layers
    return tf_keras.Sequential(
        [
            tf_keras.Input((28, 28, 1), name="image"),
            L.Conv2D(32, 3, activation="relu"),
            L.MaxPooling2D(2),
            L.Flatten(),
            L.Dense(10, activation="softmax"),
        ],
        name="mnist_cnn",
    )


def tfk_lstm():
    L = tf_keras.layers
    return tf_keras.Sequential(
        [
            tf_keras.Input((6, 5), name="sequence"),
            L.LSTM(8),
            L.Dense(3, activation="softmax"),
        ],
        name="lstm",
    )


def tfk_gru():
    L = tf_keras.layers
    return tf_keras.Sequential(
        [
            tf_keras.Input((6, 5), name="sequence"),
            L.GRU(8, return_sequences=True),
            L.GRU(4),
            L.Dense(3),
        ],
        name="gru",
    )


def tfk_bn_cnn():
    L = tf_keras.layers
    return tf_keras.Sequential(
        [
            tf_keras.Input((8, 8, 3), name="image"),
            L.Conv2D(4, 3, padding="same", use_bias=False),
            L.BatchNormalization(),
            L.ReLU(),
            L.Conv2D(6, 3, strides=2, padding="same", use_bias=False),
            L.BatchNormalization(),
            L.ReLU(),
            L.GlobalAveragePooling2D(),
            L.Dense(2),
        ],
        name="bn_cnn",
    )


# name -> (framework, builder, {input name: spec}, description)
MODELS = {
    "resnet_block": (
        "keras", resnet_block, {"image": ("float", (8, 8, 3))},
        "Conv2D+BN+ReLU twice with an Add identity skip, then a strided block with a "
        "1x1 strided Conv2D shortcut, GlobalAveragePooling2D, Dense(3)",
    ),
    "mobilenet_v2_block": (
        "keras", mobilenet_v2_block, {"image": ("float", (8, 8, 4))},
        "inverted residual: Conv2D 1x1 expand, BN, ReLU6, DepthwiseConv2D(3,same), BN, "
        "ReLU6, Conv2D 1x1 project, BN, Add(input), GlobalAveragePooling2D, Dense(2)",
    ),
    "inception_block": (
        "keras", inception_block, {"image": ("float", (8, 8, 3))},
        "Concatenate of 1x1, 1x1-3x3, 1x1-5x5 and MaxPooling2D(3,strides 1,same)-1x1 "
        "branches, GlobalAveragePooling2D, Dense(3)",
    ),
    "vgg_pool": (
        "keras", vgg_pool, {"image": ("float", (11, 11, 3))},
        "Conv2D(relu) x2, MaxPooling2D(3,strides 2,same), Conv2D(relu), "
        "MaxPooling2D(2,strides 2,same) on odd sizes, Flatten, Dense(3)",
    ),
    "grouped_conv": (
        "keras", grouped_conv, {"image": ("float", (6, 6, 4))},
        "Conv2D(6,3,groups=2), Flatten, Dense(2)",
    ),
    "dilated_conv2d": (
        "keras", dilated_conv2d, {"image": ("float", (9, 9, 2))},
        "Conv2D(3,3,dilation 2,valid), Conv2D(2,3,dilation 2,same), Flatten, Dense(2)",
    ),
    "conv3d_pool": (
        "keras", conv3d_pool, {"volume": ("float", (4, 6, 6, 2))},
        "Conv3D(3,3,same,relu), MaxPooling3D(2), Flatten, Dense(2)",
    ),
    "conv1d_pools": (
        "keras", conv1d_pools, {"sequence": ("float", (12, 3))},
        "Conv1D(4,3,relu), MaxPooling1D(2), Conv1D(4,3,same), AveragePooling1D(2), "
        "GlobalAveragePooling1D, Dense(2)",
    ),
    "crop_upsample_bilinear": (
        "keras", crop_upsample_bilinear, {"image": ("float", (8, 8, 2))},
        "Cropping2D(((1,2),(2,1))), UpSampling2D(2, bilinear), Conv2D(2,1), Flatten, Dense(2)",
    ),
    "resizing": (
        "keras", resizing, {"image": ("float", (6, 6, 2))},
        "Resizing(9,7,bilinear) and Resizing(4,5,nearest) branches, Flatten, "
        "Concatenate, Dense(3)",
    ),
    "rescale_normalize_uint8": (
        "keras", rescale_normalize_uint8, {"pixels": ("uint8", (4, 4, 3))},
        "uint8 pixels: Rescaling(1/255), Normalization(axis -1, adapted on a fixed "
        "array), Flatten, Dense(2)",
    ),
    "reshape_ops": (
        "keras", reshape_ops, {"features": ("float", (4, 3))},
        "Permute((2,1)), Flatten, RepeatVector(2), Reshape((2,3,4)), Permute((3,1,2)), "
        "Flatten, Dense(2)",
    ),
    "embedding_pool": (
        "keras", embedding_pool, {"tokens": ("tokens", (8,), 30)},
        "int32 token ids: Embedding(30,4), GlobalAveragePooling1D, Dense(2)",
    ),
    "transformer_encoder": (
        "keras", transformer_encoder, {"sequence": ("float", (5, 8))},
        "self-attention MultiHeadAttention(2 heads, key_dim 4), Add, LayerNormalization, "
        "Dense(16, relu), Dense(8), Add, LayerNormalization, GlobalAveragePooling1D, Dense(2)",
    ),
    "attention_layer": (
        "keras", attention_layer, {"query": ("float", (4, 6)), "value": ("float", (5, 6))},
        "Attention(use_scale)([query, value]), Flatten, Dense(2)",
    ),
    "dense_rank3": (
        "keras", dense_rank3, {"sequence": ("float", (4, 5))},
        "Dense(6, relu) and Dense(3) on a rank-3 input (no TimeDistributed)",
    ),
    "softmax_axis1": (
        "keras", softmax_axis1, {"sequence": ("float", (4, 5))},
        "Dense(5) on rank 3, Softmax(axis=1)",
    ),
    "activations_a": (
        "keras", activations_a, {"features": ("float", (6,))},
        "Dense(6) with selu, hard_sigmoid, hard_swish, exponential; Dense(2)",
    ),
    "activations_b": (
        "keras", activations_b, {"features": ("float", (6,))},
        "Dense(6) each followed by ReLU(max 1.5, threshold 0.2), PReLU, ReLU(threshold 0.3) "
        "(ThresholdedReLU), ReLU(negative_slope 0.2, max 1, threshold 0.1); Dense(2)",
    ),
    "activations_c": (
        "keras", activations_c, {"features": ("float", (6,))},
        "Dense(6), tanh-approximate GELU, Dense(6), mish, Dense(6, softsign), Dense(6, silu), "
        "Dense(6, relu6), Dense(4, log_softmax)",
    ),
    "custom_ops": (
        "keras", custom_ops, {"features": ("float", (6,))},
        "Dense(6) then keras.ops: sqrt(abs), clip, where, maximum, minimum, square, cumsum, "
        "log1p, sum, exp, max; outputs {values: float, argmax: int}",
    ),
    "lstm_masked": (
        "keras", lstm_masked, {"tokens": ("padded", (7,), 15)},
        "int32 token ids padded with 0: Embedding(15,4,mask_zero), LSTM(5), Dense(2)",
    ),
    "gru_reset_before": (
        "keras", gru_reset_before, {"sequence": ("float", (5, 3))},
        "GRU(4, reset_after=False), Dense(2)",
    ),
    "bigru_sum": (
        "keras", bigru_sum, {"sequence": ("float", (5, 3))},
        "Bidirectional(GRU(4, return_sequences), merge_mode sum), Dense(2)",
    ),
    "lstm_state": (
        "keras", lstm_state, {"sequence": ("float", (5, 3))},
        "LSTM(4, return_state): outputs [Dense(2)(output), state_h, state_c]",
    ),
    "simple_rnn_backwards": (
        "keras", simple_rnn_backwards, {"sequence": ("float", (6, 3))},
        "SimpleRNN(4, go_backwards, return_sequences), Dense(2)",
    ),
    "stacked_lstm": (
        "keras", stacked_lstm, {"sequence": ("float", (5, 3))},
        "LSTM(6, return_sequences), LSTM(4, return_sequences), LSTM(3), Dense(2)",
    ),
    "conv_lstm2d": (
        "keras", conv_lstm2d, {"frames": ("float", (3, 5, 5, 2))},
        "ConvLSTM2D(2,3,same), Flatten, Dense(2)",
    ),
    "int64_input": (
        "keras", int64_input, {"tokens": ("tokens", (6,), 12, "int64")},
        "int64 token ids: Embedding(12,3), Flatten, Concatenate with cast(tokens)/12, Dense(2)",
    ),
    "float64_input": (
        "keras", float64_input, {"features": ("float", (4,), "float64")},
        "float64 features: outputs [float64 Dense(3, tanh), float64 Dense(2)] and "
        "[float32 Dense(2)]",
    ),
    "multi_io_list": (
        "keras", multi_io_list, {"a": ("float", (5,)), "b": ("float", (3, 2))},
        "inputs a, b: Concatenate, Dense(6, relu); list outputs [Dense(2), Dense(1, sigmoid)]",
    ),
    "dict_three": (
        "keras", dict_three, {"features": ("float", (6,))},
        "Dense(8, relu); outputs {alpha: Dense(1), beta: Dense(2, softmax), "
        "gamma: Dense(3, tanh)}",
    ),
    "merge_layers": (
        "keras", merge_layers, {"a": ("float", (4,)), "b": ("float", (6,))},
        "a, Dense(4)(b): Subtract, Multiply, Average, Maximum, Minimum, Dot(normalize), "
        "Concatenate, Dense(2)",
    ),
    "norm_layers": (
        "keras", norm_layers, {"image": ("float", (4, 4, 4))},
        "GroupNormalization(2), UnitNormalization, Conv2D(3,1), LayerNormalization over "
        "(1,2,3), GlobalMaxPooling2D, Dense(2)",
    ),
    "conv1d_variants": (
        "keras", conv1d_variants, {"sequence": ("float", (6, 3))},
        "Conv1DTranspose(3,3,strides 2), SeparableConv1D(4,3), DepthwiseConv1D(3), "
        "UpSampling1D(2), ZeroPadding1D(1), Cropping1D((2,1)), GlobalMaxPooling1D, Dense(2)",
    ),
    "conv2d_transpose_padding": (
        "keras", conv2d_transpose_padding, {"image": ("float", (4, 4, 3))},
        "Conv2DTranspose(2,3,strides 2,output_padding 1), Conv2DTranspose(2,2,strides "
        "(1,2),same), Flatten, Dense(2)",
    ),
    "string_lookup": (
        "keras", string_lookup,
        {"words": ("strings", (3,), ("red", "green", "blue", "cyan", "magenta"))},
        "string input: StringLookup(4 words) -> Embedding(6,3), Hashing(5) -> cast; "
        "Concatenate, Dense(2)",
    ),
    "mnist_cnn": (
        "tf_keras", tfk_mnist_cnn, {"image": ("float", (28, 28, 1))},
        "tf_keras: the MNIST tutorial CNN: Conv2D(32,3,relu), MaxPooling2D(2), Flatten, "
        "Dense(10, softmax)",
    ),
    "lstm": (
        "tf_keras", tfk_lstm, {"sequence": ("float", (6, 5))},
        "tf_keras: LSTM(8), Dense(3, softmax)",
    ),
    "gru": (
        "tf_keras", tfk_gru, {"sequence": ("float", (6, 5))},
        "tf_keras: GRU(8, return_sequences), GRU(4), Dense(3)",
    ),
    "bn_cnn": (
        "tf_keras", tfk_bn_cnn, {"image": ("float", (8, 8, 3))},
        "tf_keras: Conv2D(4,3,same,no bias), BatchNormalization, ReLU, "
        "Conv2D(6,3,strides 2,same,no bias), BatchNormalization, ReLU, "
        "GlobalAveragePooling2D, Dense(2)",
    ),
}


def fixture_names(name):
    framework = MODELS[name][0]
    return [(kind, f"{name}_{kind}") for kind in EXPORTS[framework]]


# --- building -------------------------------------------------------------------------


def randomise(model, rng):
    """Random values for the weights Keras initialises to constants."""
    for var in model.weights:
        # Keras 3: "bias"; tf_keras: "dense/bias:0".
        short = var.name.split("/")[-1].split(":")[0]
        value = np.asarray(var.numpy())
        dtype, shape = value.dtype, value.shape
        if short in ("bias", "beta"):
            value = value + rng.normal(0.0, 0.1, shape)
        elif short == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
        elif short == "moving_mean":
            value = rng.normal(0.0, 0.5, shape)
        elif short == "moving_variance":
            value = rng.uniform(0.5, 2.0, shape)
        elif short == "alpha":  # PReLU slopes, zeros by default
            value = rng.uniform(0.05, 0.5, shape)
        else:
            continue
        var.assign(value.astype(dtype))


def build(name, index):
    framework, builder, _, _ = MODELS[name]
    seed = WEIGHT_SEED + index
    if framework == "keras":
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
    else:
        if tf_keras is None:
            raise ImportError("tf_keras is not installed (see requirements/scripts.txt)")
        tf_keras.backend.clear_session()
        tf_keras.utils.set_random_seed(seed)
    model = builder()
    randomise(model, np.random.default_rng(seed))
    return model


def example_inputs(name):
    """Keras input name -> a batch of BATCH examples."""
    specs = MODELS[name][2]
    rng = np.random.default_rng(INPUT_SEED + zlib.crc32(name.encode()))
    arrays = {}
    for input_name, spec in specs.items():
        kind, shape = spec[0], (BATCH, *spec[1])
        if kind == "float":
            dtype = spec[2] if len(spec) > 2 else "float32"
            arrays[input_name] = rng.normal(0.0, 1.0, shape).astype(dtype)
        elif kind == "tokens":
            vocabulary = spec[2]
            dtype = spec[3] if len(spec) > 3 else "int32"
            ids = rng.integers(1, vocabulary, shape).astype(dtype)
            ids.flat[0] = 0
            ids.flat[-1] = vocabulary - 1
            arrays[input_name] = ids
        elif kind == "padded":
            vocabulary = spec[2]
            ids = rng.integers(1, vocabulary, shape).astype(np.int32)
            for row in range(BATCH):
                ids[row, shape[1] - row - 1:] = 0
            arrays[input_name] = ids
        elif kind == "uint8":
            pixels = rng.integers(0, 256, shape).astype(np.uint8)
            pixels.flat[0], pixels.flat[-1] = 0, 255
            arrays[input_name] = pixels
        elif kind == "strings":
            words = [w.encode() for w in spec[2]]
            picks = rng.integers(0, len(words), shape)
            arrays[input_name] = np.array([words[i] for i in picks.ravel()], dtype=object).reshape(shape)
        else:
            raise ValueError(spec)
    return arrays


def input_name(tensor):
    return tensor.name.split(":")[0]


def keras_outputs(model, framework, arrays):
    """The in-memory model's outputs, keyed as the SavedModel's output aliases."""
    feed = [tf.constant(arrays[input_name(t)]) for t in model.inputs]
    result = model(feed if len(feed) > 1 else feed[0], training=False)
    if isinstance(result, dict):
        return {k: np.asarray(v) for k, v in result.items()}
    results = list(result) if isinstance(result, (list, tuple)) else [result]
    if framework == "tf_keras":
        keys = list(model.output_names)
    else:
        keys = [f"output_{i}" for i in range(len(results))]
    return {k: np.asarray(v) for k, v in zip(keys, results)}


# --- exporting ------------------------------------------------------------------------


def export(model, kind, version_dir):
    if kind in ("export", "tfsave"):
        base.export(model, kind, version_dir)
    elif kind == "tfk_save":
        model.save(str(version_dir), save_format="tf")
    elif kind == "tfk_tfsave":
        tf.saved_model.save(model, str(version_dir))
    else:
        raise ValueError(kind)


def tensor_json(array):
    array = np.asarray(array)
    if array.dtype.kind == "f":
        values = [float(v) for v in array.ravel()]
    elif array.dtype.kind in "iu":
        values = [int(v) for v in array.ravel()]
    elif array.dtype.kind == "b":
        values = [bool(v) for v in array.ravel()]
    elif array.dtype.kind in "OS":
        values = [bytes(v).decode("utf-8", "backslashreplace") for v in array.ravel()]
        return {"dtype": "string", "shape": list(array.shape), "values": values}
    else:
        raise RuntimeError(f"no JSON form for dtype {array.dtype}")
    return {"dtype": array.dtype.name, "shape": list(array.shape), "values": values}


def rel(path):
    path = pathlib.Path(path).resolve()
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return path.as_posix()


def error_line(err):
    text = f"{type(err).__name__}: {err}".strip()
    return text.splitlines()[0] if text else type(err).__name__


def compare(outputs, reference):
    """None if the reloaded export computes what the Keras model computes."""
    if sorted(outputs) != sorted(reference):
        if len(outputs) == len(reference) == 1:
            reference = {next(iter(outputs)): next(iter(reference.values()))}
        else:
            return f"output aliases {sorted(outputs)}, Keras model's {sorted(reference)}"
    for alias, want in reference.items():
        try:
            np.testing.assert_allclose(outputs[alias], want, rtol=RTOL, atol=ATOL)
        except AssertionError as err:
            lines = [line for line in str(err).splitlines() if line.strip()]
            return f"{alias}: " + "; ".join(lines[:4])
    return None


def export_fixture(out_dir, name, kind, model, arrays, reference, build_error):
    framework, _, _, description = MODELS[name]
    fixture = f"{name}_{kind}"
    model_dir = out_dir / fixture
    version_dir = model_dir / VERSION
    doc = {
        "tensorflow": tf.__version__,
        "keras": keras.__version__ if framework == "keras" else getattr(tf_keras, "__version__", None),
        "framework": framework,
        "model": name,
        "export": EXPORTS[framework][kind],
        "description": description,
        "savedmodel": rel(version_dir),
    }
    outputs = None
    try:
        if build_error is not None:
            raise build_error
        model_dir.mkdir(parents=True)
        export(model, kind, version_dir)
        meta_graph = base.serve_meta_graph(version_dir)
        sigs = base.signatures(meta_graph)
        if SIGNATURE not in sigs:
            raise RuntimeError(f"no {SIGNATURE} signature; signatures {sorted(sigs)}")
        feeds = base.feeds_for(sigs[SIGNATURE], arrays)
        outputs = base.run_serving_default(version_dir, feeds)
        ops_list = base.reachable_ops(meta_graph, SIGNATURE)
    except Exception as err:  # noqa: BLE001 - any failure of this export path is recorded
        shutil.rmtree(model_dir, ignore_errors=True)
        message = error_line(err)
        doc["export_error"] = message
        print(f"{rel(model_dir)}: EXPORT FAILED ({doc['export']}): {message}", flush=True)
        base.write_json(out_dir / f"{fixture}.json", doc)
        return {"fixture": fixture, "model": name, "kind": kind, "error": message}, None

    doc["signatures"] = sigs
    doc["inputs"] = {alias: tensor_json(feeds[alias]) for alias in sorted(feeds)}
    doc["outputs"] = {alias: tensor_json(outputs[alias]) for alias in sorted(outputs)}
    doc["ops"] = ops_list
    mismatch = None
    if isinstance(reference, Exception):
        mismatch = f"the Keras model in memory raised {error_line(reference)}"
    elif reference is not None:
        mismatch = compare(outputs, reference)
    if mismatch:
        doc["keras_mismatch"] = mismatch
        print(f"{fixture}: WARNING: differs from the Keras model: {mismatch}", flush=True)
    base.write_json(out_dir / f"{fixture}.json", doc)
    size = base.dir_size(model_dir)
    print(f"{rel(model_dir)}: {size} bytes, {len(ops_list)} op types", flush=True)
    summary = {
        "fixture": fixture, "model": name, "kind": kind, "size": size,
        "ops": ops_list, "signatures": sigs, "mismatch": mismatch,
    }
    return summary, outputs


# --- README ---------------------------------------------------------------------------


def committed_ops():
    ops_union = set()
    for path in sorted(COMMITTED.glob("*.json")):
        ops_union |= set(json.loads(path.read_text()).get("ops", []))
    return ops_union


def signature_oddities(summaries):
    lines = []
    for s in summaries:
        if "error" in s:
            continue
        sig = s["signatures"][SIGNATURE]
        notes = []
        for side in ("inputs", "outputs"):
            for alias, info in sig[side].items():
                if info["dtype"] not in ("DT_FLOAT", "DT_INT32"):
                    notes.append(f"{side[:-1]} `{alias}` {info['dtype']}")
                if info["shape"] is None:
                    notes.append(f"{side[:-1]} `{alias}` of unknown rank")
                elif any(d == -1 for d in info["shape"][1:]):
                    notes.append(f"{side[:-1]} `{alias}` shape {info['shape']}")
        extra = sorted(set(s["signatures"]) - {SIGNATURE, "serve", "__saved_model_init_op"})
        if extra:
            notes.append(f"other signatures {extra}")
        if notes:
            lines.append(f"- `{s['fixture']}`: " + "; ".join(notes))
    return lines


def write_readme(out_dir, summaries):
    known = committed_ops()
    ok = [s for s in summaries if "error" not in s]
    union = set().union(*(s["ops"] for s in ok)) if ok else set()
    new = sorted(union - known)
    rows = []
    for s in summaries:
        framework = MODELS[s["model"]][0]
        written_by = EXPORTS[framework][s["kind"]]
        if "error" in s:
            rows.append(f"| `{s['fixture']}` | {written_by} | export failed: {s['error']} | | |")
            continue
        sig = s["signatures"][SIGNATURE]
        keys = ", ".join(f"`{k}`" for k in s["signatures"])
        rows.append(
            f"| `{s['fixture']}` | {written_by} | {keys} | "
            f"{base.aliases(sig['inputs'])} | {base.aliases(sig['outputs'])} |"
        )
    models = "\n".join(
        f"- `{name}` ({framework}): {desc}" for name, (framework, _, _, desc) in MODELS.items()
    )
    groups = {}
    for s in ok:
        groups.setdefault(tuple(s["ops"]), []).append(s["fixture"])
    op_lines = "\n".join(
        f"- {', '.join(f'`{f}`' for f in fixtures)}: {', '.join(o)}" for o, fixtures in groups.items()
    )
    new_lines = "\n".join(
        f"- {op}: " + ", ".join(f"`{s['fixture']}`" for s in ok if op in s["ops"]) for op in new
    ) or "(none)"
    odd = "\n".join(signature_oddities(summaries)) or "(none)"
    mismatches = "\n".join(
        f"- `{s['fixture']}`: {s['mismatch']}" for s in ok if s.get("mismatch")
    ) or "(none)"
    failures = "\n".join(
        f"- `{s['fixture']}`: {s['error']}" for s in summaries if "error" in s
    ) or "(none)"
    (out_dir / "README.md").write_text(f"""# Keras SavedModel zoo

Written by `scripts/build_keras_zoo.py` with tensorflow-cpu {tf.__version__},
keras {keras.__version__} and tf_keras {getattr(tf_keras, '__version__', '(not installed)')}.
Not committed. The layout and JSON keys are those of
`tests/fixtures/savedmodels` (plus `framework`, and `keras_mismatch` where an
export differs from the Keras model in memory).

## Op types not in tests/fixtures/savedmodels

{new_lines}

## Failed exports

{failures}

## Exports that differ from the Keras model in memory

{mismatches}

## Signatures beyond float32/int32 inputs and outputs of known rank

{odd}

## Models

{models}

## Fixtures

| fixture | written by | signatures | serving_default inputs | serving_default outputs |
|---|---|---|---|---|
{chr(10).join(rows)}

## Op types

{op_lines}
""")
    return new


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT,
                        help="output directory, deleted first (default: target/keras-zoo)")
    parser.add_argument("--only", nargs="*", metavar="NAME", help="build only these models")
    args = parser.parse_args()
    out_dir = args.out.resolve()
    unknown = sorted(set(args.only or []) - set(MODELS))
    if unknown:
        sys.exit(f"unknown models {unknown}; known: {sorted(MODELS)}")
    if out_dir == COMMITTED.resolve() or out_dir == ROOT:
        sys.exit(f"refusing to delete {out_dir}")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)

    summaries = []
    for index, name in enumerate(MODELS):
        if args.only and name not in args.only:
            continue
        framework = MODELS[name][0]
        model = reference = build_error = None
        arrays = example_inputs(name)
        try:
            model = build(name, index)
        except Exception as err:  # noqa: BLE001 - recorded as every export's error
            build_error = RuntimeError(f"building the model raised {error_line(err)}")
        if model is not None:
            try:
                reference = keras_outputs(model, framework, arrays)
            except Exception as err:  # noqa: BLE001 - the exports may still work
                reference = err
        answers = {}
        for kind in EXPORTS[framework]:
            summary, outputs = export_fixture(out_dir, name, kind, model, arrays, reference, build_error)
            summaries.append(summary)
            if outputs is not None:
                answers[kind] = outputs
        if len(answers) == 2:
            (k1, first), (k2, second) = answers.items()
            if sorted(first) != sorted(second):
                print(f"{name}: WARNING: output aliases differ: {k1} {sorted(first)}, "
                      f"{k2} {sorted(second)}", flush=True)
            else:
                for alias in first:
                    if not np.allclose(first[alias], second[alias], rtol=RTOL, atol=ATOL):
                        print(f"{name}: WARNING: {alias} differs between {k1} and {k2}", flush=True)

    new = write_readme(out_dir, summaries)
    total = base.dir_size(out_dir)
    failed = [s["fixture"] for s in summaries if "error" in s]
    print(f"wrote {rel(out_dir / 'README.md')}")
    print(f"total: {total} bytes ({total / 1024 / 1024:.2f} MiB) in {rel(out_dir)}, "
          f"{len(summaries)} fixtures")
    print(f"op types not in {rel(COMMITTED)}: {', '.join(new) or '(none)'}")
    if failed:
        print(f"failed exports: {', '.join(failed)}")
    if total > SIZE_LIMIT:
        print(f"WARNING: more than {SIZE_LIMIT} bytes; make the models smaller")


if __name__ == "__main__":
    main()
