#!/usr/bin/env python3
"""Build the example MNIST-style digit classifier served from examples/models/mnist.

Trains the small convolutional network of TensorFlow's classic MNIST tutorial
(Conv2D 32x3x3 + ReLU, MaxPool 2x2, Flatten, Dense 10 + softmax) on the real
handwritten digits shipped with scikit-learn (`sklearn.datasets.load_digits`,
1,797 8x8 images from the UCI "Optical Recognition of Handwritten Digits" set),
upscaled to 28x28 8-bit grayscale (white digit on black, like MNIST).

Outputs (paths relative to the repository root):

  examples/models/mnist/1/model.onnx   the trained network as ONNX (opset 13),
                                       NHWC input `image` [batch,28,28,1] float32
                                       (pixel / 255), output `probabilities`
                                       [batch,10]
  examples/models/mnist/README.md      description of the model and its accuracy
  examples/digits/0.png .. 9.png       one held-out (never trained on) digit per
                                       class, 28x28 8-bit grayscale, each one the
                                       model classifies correctly

The ONNX graph is written by hand with onnx.helper from the trained Keras
weights, using only Transpose, Conv, Relu, MaxPool, Flatten, Gemm and Softmax.
The script checks that onnxruntime reproduces Keras's predictions on the
held-out split.

Run from the repository root:

    target/py/scripts/bin/python scripts/build_example_model.py

Everything is seeded and training runs on one CPU thread, so reruns on the same
machine and package versions produce the same files.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("PYTHONHASHSEED", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import tensorflow as tf

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

import keras  # noqa: E402

SEED = 20240601
TEST_FRACTION = 0.2
EPOCHS = 40
BATCH_SIZE = 32
MAX_SHIFT = 2  # pixels, random translation used as augmentation
SIZE = 28

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "examples" / "models" / "mnist"
MODEL_PATH = MODEL_DIR / "1" / "model.onnx"
README_PATH = MODEL_DIR / "README.md"
DIGITS_DIR = ROOT / "examples" / "digits"


def to_28x28(images8):
    """8x8 images with values 0..16 -> 28x28 uint8 images with values 0..255."""
    out = np.empty((len(images8), SIZE, SIZE), dtype=np.uint8)
    for i, img in enumerate(images8):
        scaled = img.astype(np.float32) * (255.0 / 16.0)
        big = Image.fromarray(scaled, mode="F").resize((SIZE, SIZE), Image.BICUBIC)
        out[i] = np.clip(np.rint(np.asarray(big)), 0, 255).astype(np.uint8)
    return out


def random_shift(images, rng):
    """Translate each image by up to MAX_SHIFT pixels in x and y, zero fill."""
    n = len(images)
    padded = np.pad(images, ((0, 0), (MAX_SHIFT, MAX_SHIFT), (MAX_SHIFT, MAX_SHIFT)))
    dy = rng.integers(0, 2 * MAX_SHIFT + 1, size=n)
    dx = rng.integers(0, 2 * MAX_SHIFT + 1, size=n)
    out = np.empty_like(images)
    for i in range(n):
        out[i] = padded[i, dy[i] : dy[i] + SIZE, dx[i] : dx[i] + SIZE]
    return out


def to_input(images_u8):
    """uint8 [n,28,28] -> float32 [n,28,28,1] in 0..1 (the model's input)."""
    return (images_u8.astype(np.float32) / np.float32(255.0))[..., np.newaxis]


def build_keras_model():
    return keras.Sequential(
        [
            keras.Input(shape=(SIZE, SIZE, 1), name="image"),
            keras.layers.Conv2D(32, (3, 3), padding="valid", activation="relu", name="conv"),
            keras.layers.MaxPooling2D((2, 2), name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(10, activation="softmax", name="dense"),
        ],
        name="mnist",
    )


def export_onnx(model):
    conv = model.get_layer("conv")
    dense = model.get_layer("dense")
    conv_kernel, conv_bias = (np.asarray(w, dtype=np.float32) for w in conv.get_weights())
    dense_kernel, dense_bias = (np.asarray(w, dtype=np.float32) for w in dense.get_weights())
    assert conv_kernel.shape == (3, 3, 1, 32), conv_kernel.shape
    assert dense_kernel.shape == (13 * 13 * 32, 10), dense_kernel.shape

    # Keras stores Conv2D kernels as HWIO; ONNX Conv wants OIHW.
    conv_w = np.ascontiguousarray(conv_kernel.transpose(3, 2, 0, 1))

    initializers = [
        numpy_helper.from_array(conv_w, "conv.weight"),
        numpy_helper.from_array(conv_bias, "conv.bias"),
        numpy_helper.from_array(np.ascontiguousarray(dense_kernel), "dense.weight"),
        numpy_helper.from_array(dense_bias, "dense.bias"),
    ]
    nodes = [
        helper.make_node("Transpose", ["image"], ["image_nchw"], name="to_nchw", perm=[0, 3, 1, 2]),
        helper.make_node(
            "Conv",
            ["image_nchw", "conv.weight", "conv.bias"],
            ["conv_out"],
            name="conv",
            kernel_shape=[3, 3],
            strides=[1, 1],
            pads=[0, 0, 0, 0],
            dilations=[1, 1],
            group=1,
        ),
        helper.make_node("Relu", ["conv_out"], ["relu_out"], name="relu"),
        helper.make_node(
            "MaxPool",
            ["relu_out"],
            ["pool_out"],
            name="pool",
            kernel_shape=[2, 2],
            strides=[2, 2],
            pads=[0, 0, 0, 0],
        ),
        # Back to NHWC so that Flatten matches the order of Keras's Flatten.
        helper.make_node("Transpose", ["pool_out"], ["pool_nhwc"], name="to_nhwc", perm=[0, 2, 3, 1]),
        helper.make_node("Flatten", ["pool_nhwc"], ["flat"], name="flatten", axis=1),
        helper.make_node(
            "Gemm",
            ["flat", "dense.weight", "dense.bias"],
            ["logits"],
            name="dense",
            alpha=1.0,
            beta=1.0,
            transA=0,
            transB=0,
        ),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mnist",
        inputs=[helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", SIZE, SIZE, 1])],
        outputs=[helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        initializer=initializers,
    )
    onnx_model = helper.make_model(
        graph,
        producer_name="ferroserve-scripts",
        producer_version="1",
        opset_imports=[helper.make_opsetid("", 13)],
    )
    onnx_model.ir_version = 8
    onnx_model.doc_string = (
        "Digit classifier (TensorFlow MNIST tutorial CNN) trained on scikit-learn's "
        "8x8 digits resized to 28x28. Input: NHWC float32 pixel/255."
    )
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


def onnx_predict(model_bytes, x):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    return sess.run(["probabilities"], {"image": x})[0]


def write_readme(n_train, n_test, keras_acc, onnx_acc, missing):
    missing_note = ""
    if missing:
        missing_note = (
            "\nNo correctly classified held-out image was found for class(es) "
            + ", ".join(str(c) for c in missing)
            + "; those files are missing.\n"
        )
    text = f"""# Example model: `mnist`

A small handwritten-digit classifier in ONNX, used by the examples and tests.
It is the convolutional network of TensorFlow's classic MNIST tutorial:
Conv2D (32 filters, 3x3, valid padding) + ReLU, MaxPool 2x2, Flatten,
Dense 10 + softmax.

## Data

It is trained not on MNIST but on the real handwritten digits shipped with
scikit-learn (`sklearn.datasets.load_digits`): 1,797 8x8 images with values
0..16, from the UCI "Optical Recognition of Handwritten Digits" data set. Each
image is scaled to 0..255 and resized (bicubic) to 28x28 8-bit grayscale,
white digit on black background like MNIST. A stratified {int(TEST_FRACTION * 100)}% split
({n_test} images) is held out; the network is trained on the other {n_train}
images with small random shifts (up to {MAX_SHIFT} pixels) as augmentation.

Held-out accuracy: **{keras_acc * 100:.2f}%** (Keras), **{onnx_acc * 100:.2f}%** (this ONNX file,
run by onnxruntime; its probabilities match Keras's within 1e-5).

`examples/digits/0.png` .. `9.png` are held-out images (never trained on), one
per class, named by their true class, each classified correctly (and with
probability >= 0.9 where possible) by this model.
{missing_note}
## Signature

| | name | type | shape |
|---|---|---|---|
| input | `image` | float32 | `[batch, 28, 28, 1]` (NHWC), pixel / 255 |
| output | `probabilities` | float32 | `[batch, 10]`, softmax over the digits 0..9 |

ONNX opset 13, IR version 8. The graph uses only Transpose, Conv, Relu,
MaxPool, Flatten, Gemm and Softmax:

    image -> Transpose(0,3,1,2) -> Conv -> Relu -> MaxPool(2x2, stride 2)
          -> Transpose(0,2,3,1) -> Flatten -> Gemm -> Softmax -> probabilities

## Rebuilding

From the repository root:

    target/py/scripts/bin/python scripts/build_example_model.py

This retrains the model (seeded, one CPU thread) and rewrites `1/model.onnx`,
this README and `examples/digits/*.png`. See `scripts/README.md`.
"""
    README_PATH.write_text(text)


def main():
    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(SEED)

    digits = load_digits()
    images = to_28x28(digits.images)
    labels = digits.target.astype(np.int64)
    assert images.shape == (1797, SIZE, SIZE)

    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=TEST_FRACTION, random_state=SEED, stratify=labels
    )
    x_train_u8, y_train = images[idx_train], labels[idx_train]
    x_test_u8, y_test = images[idx_test], labels[idx_test]
    x_test = to_input(x_test_u8)
    print(f"train: {len(idx_train)} images, held out: {len(idx_test)} images")

    model = build_keras_model()
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    for epoch in range(EPOCHS):
        x_aug = to_input(random_shift(x_train_u8, rng))
        hist = model.fit(x_aug, y_train, batch_size=BATCH_SIZE, epochs=1, shuffle=True, verbose=0)
        _, acc = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
        print(
            f"epoch {epoch + 1:2d}: loss {hist.history['loss'][0]:.4f} "
            f"train acc {hist.history['accuracy'][0]:.4f} held-out acc {acc:.4f}"
        )

    keras_probs = model.predict(x_test, batch_size=256, verbose=0)
    keras_pred = keras_probs.argmax(axis=1)
    keras_acc = float((keras_pred == y_test).mean())
    print(f"Keras held-out accuracy: {keras_acc:.4f} ({(keras_pred == y_test).sum()}/{len(y_test)})")

    onnx_model = export_onnx(model)
    model_bytes = onnx_model.SerializeToString()
    onnx_probs = onnx_predict(model_bytes, x_test)
    max_diff = float(np.abs(onnx_probs - keras_probs).max())
    onnx_pred = onnx_probs.argmax(axis=1)
    onnx_acc = float((onnx_pred == y_test).mean())
    print(f"ONNX held-out accuracy:  {onnx_acc:.4f} ({(onnx_pred == y_test).sum()}/{len(y_test)})")
    print(f"max |onnxruntime - Keras| on held-out probabilities: {max_diff:.3g}")
    if max_diff > 1e-5:
        sys.exit(f"onnxruntime and Keras disagree by {max_diff} (> 1e-5)")
    if onnx_acc != keras_acc or not np.array_equal(onnx_pred, keras_pred):
        sys.exit("onnxruntime and Keras predict different classes")

    MODEL_PATH.parent.mkdir(parents=True, exist_ok=True)
    MODEL_PATH.write_bytes(model_bytes)
    print(f"wrote {MODEL_PATH.relative_to(ROOT)} ({len(model_bytes)} bytes)")

    # One correctly classified held-out image per class: the first in split
    # order that the model gets right with probability >= 0.9 (or, failing
    # that, the most confident correct one), so the examples are unambiguous.
    DIGITS_DIR.mkdir(parents=True, exist_ok=True)
    missing = []
    for cls in range(10):
        ok = np.flatnonzero((y_test == cls) & (keras_pred == cls) & (onnx_pred == cls))
        path = DIGITS_DIR / f"{cls}.png"
        if len(ok) == 0:
            missing.append(cls)
            print(f"class {cls}: no correctly classified held-out image")
            continue
        confident = ok[onnx_probs[ok, cls] >= 0.9]
        i = confident[0] if len(confident) else ok[np.argmax(onnx_probs[ok, cls])]
        Image.fromarray(x_test_u8[i], mode="L").save(path, optimize=False)
        print(f"wrote {path.relative_to(ROOT)} (data set index {idx_test[i]}, p={onnx_probs[i, cls]:.4f})")

    write_readme(len(idx_train), len(idx_test), keras_acc, onnx_acc, missing)
    print(f"wrote {README_PATH.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
