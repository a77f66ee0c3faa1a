#!/usr/bin/env python3
"""Write small ONNX models of common network architectures.

    python scripts/make_arch_models.py OUT_DIR

writes one model per architecture in TensorFlow Serving's layout,
``OUT_DIR/<name>/1/model.onnx``. The graphs are built by hand with
``onnx.helper`` in the forms that exporters (PyTorch, tf2onnx) produce, with
seeded random weights (He-initialised convolutions and dense layers,
BatchNormalization with non-trivial running statistics), small enough that a
batch runs in milliseconds on naive kernels. Each model's first input
dimension is symbolic. ``example_inputs(name)`` returns a deterministic input
batch for each model, so tests can feed the models without further
knowledge of them.

Models (opset in brackets):

  resnet          [17] images [N,3,32,32] -> logits, probabilities [N,10]
                  Conv+BatchNormalization+Relu stem, MaxPool 3x3/2, basic
                  residual blocks (Add), a stride-2 block with a 1x1
                  projection shortcut, GlobalAveragePool, Flatten, Gemm, Softmax
  mobilenet       [17] images [N,3,64,64] -> logits, probabilities [N,10]
                  MobileNetV2 inverted residual blocks: pointwise expand,
                  depthwise Conv (group = channels), pointwise project,
                  BatchNormalization, Clip(0, 6), residual Add, HardSwish,
                  GlobalAveragePool, Shape/Gather/Unsqueeze/Concat/Reshape
                  flattening as PyTorch exports it, Gemm, Softmax
  inception       [17] images [N,3,32,32] -> logits, probabilities [N,10]
                  two Inception modules (1x1 / 1x1+3x3 / 1x1+5x5 or 1x1+3x3+3x3
                  / MaxPool 3x3/1 + 1x1, Concat on channels), AveragePool
                  3x3/2 without padding counted, ReduceMean over H and W
                  (axes attribute), MatMul, Add, Softmax
  lstm_tagger     [11] tokens int64 [batch,T] -> tags [batch,T,9] (log
                  probabilities), tag_ids int64 [batch,T]
                  Gather embedding, Transpose, bidirectional LSTM, Transpose,
                  Reshape, MatMul, Add, LogSoftmax (opset-11 coercion), ArgMax
  gru_classifier  [13] sequence [batch,T,6] -> scores [batch,3]
                  Transpose, GRU (linear_before_reset=1), Squeeze (axes as an
                  input), Gemm, Sigmoid
  conv1d_text     [11] tokens int64 [batch,T] -> logits, probabilities [batch,4]
                  Gather embedding, 1-D Conv with dilations 1, 2 and 4,
                  MaxPool 1-D, Split (split attribute) into a gated linear unit
                  (Sigmoid, Mul), GlobalMaxPool, Squeeze (axes attribute),
                  Gemm, Softmax
  attention_mlp   [21] features [batch,T,32] -> logits [batch,5]
                  pre-norm transformer encoder block: LayerNormalization,
                  MatMul into q/k/v, Split (num_outputs), Reshape, Transpose,
                  batched MatMul, a causal mask from Shape/Gather/Range/
                  Unsqueeze/Greater/Where, Softmax, residual Add, Gelu,
                  ReduceMean (axes as an input), Erf-based GELU head
  unet_tiny       [17] images [N,3,32,32] -> mask_logits, mask [N,2,32,32]
                  reflect Pad, Conv, InstanceNormalization, strided Conv down,
                  ConvTranspose up, Resize (linear, and nearest/asymmetric/
                  floor), Concat skip connections, PRelu, LeakyRelu, Sigmoid
  vgg_tiny        [13] images [N,3,32,32] -> probabilities [N,10]
                  Conv+Relu stacks, LRN, MaxPool 2x2, Flatten, Gemm, Dropout
                  (inference), Softmax
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PRODUCER = "ferroserve-scripts"
VERSION_DIR = "1"
# Every model draws its weights from default_rng(BASE_SEED + its index in
# MODELS), its example inputs from default_rng(INPUT_SEED + that index).
BASE_SEED = 20250611
INPUT_SEED = 777

# ImageNet normalisation, as image models' preprocessing applies it.
IMAGE_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(1, 3, 1, 1)
IMAGE_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(1, 3, 1, 1)


class GraphBuilder:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self._counts: dict[str, int] = {}

    def unique(self, prefix: str) -> str:
        n = self._counts.get(prefix, 0)
        self._counts[prefix] = n + 1
        return f"{prefix}_{n}"

    def const(self, prefix: str, array) -> str:
        """An initializer holding ``array``; returns its name."""
        name = self.unique(prefix)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], outputs: int = 1, **attrs):
        """Appends a node; returns its output name (or names when ``outputs`` > 1)."""
        name = self.unique(op_type.lower())
        names = [f"{name}_out{i}" if outputs > 1 else f"{name}_out" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=name, **attrs))
        return names if outputs > 1 else names[0]

    def constant_node(self, array) -> str:
        """A Constant node, as PyTorch exports small values."""
        name = self.unique("constant")
        out = f"{name}_out"
        value = numpy_helper.from_array(np.asarray(array), f"{name}_value")
        self.nodes.append(helper.make_node("Constant", [], [out], name=name, value=value))
        return out

    def rename_output(self, value: str, new_name: str) -> str:
        """Renames the node output ``value`` (the last node's) to ``new_name``."""
        for node in reversed(self.nodes):
            for i, out in enumerate(node.output):
                if out == value:
                    node.output[i] = new_name
                    return new_name
        raise KeyError(value)

    # ------------------------------------------------------------------
    # weights

    def he(self, shape, fan_in: float, gain: float = 2.0) -> np.ndarray:
        return (self.rng.standard_normal(shape) * math.sqrt(gain / fan_in)).astype(np.float32)

    def small(self, shape, scale: float = 0.1) -> np.ndarray:
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    # ------------------------------------------------------------------
    # layers

    def conv(self, x, c_in, c_out, k, *, stride=1, pad=None, group=1, dilation=1,
             bias=True, gain=2.0):
        """Conv over 2-D (``k`` an int) or 1-D (``k`` a 1-tuple) data."""
        ks = [k, k] if isinstance(k, int) else list(k)
        if pad is None:
            pad = dilation * (ks[0] - 1) // 2
        fan_in = c_in // group * int(np.prod(ks))
        w = self.const("conv_w", self.he((c_out, c_in // group, *ks), fan_in, gain))
        inputs = [x, w]
        if bias:
            inputs.append(self.const("conv_b", self.small(c_out)))
        return self.op(
            "Conv", inputs,
            kernel_shape=ks,
            strides=[stride] * len(ks),
            pads=[pad] * (2 * len(ks)),
            dilations=[dilation] * len(ks),
            group=group,
        )

    def batch_norm(self, x, c, epsilon=1e-5, gamma=(0.5, 1.5)):
        rng = self.rng
        scale = self.const("bn_scale", rng.uniform(*gamma, c).astype(np.float32))
        bias = self.const("bn_bias", self.small(c, 0.2))
        mean = self.const("bn_mean", self.small(c, 0.3))
        var = self.const("bn_var", rng.uniform(0.5, 2.0, c).astype(np.float32))
        return self.op("BatchNormalization", [x, scale, bias, mean, var], epsilon=epsilon)

    def gemm(self, x, n_in, n_out, gain=2.0):
        """Gemm with a [out, in] weight (transB=1), as torch.nn.Linear exports."""
        w = self.const("fc_w", self.he((n_out, n_in), n_in, gain))
        b = self.const("fc_b", self.small(n_out))
        return self.op("Gemm", [x, w, b], transB=1)

    def dense(self, x, n_in, n_out, gain=2.0):
        """MatMul + Add with a [in, out] weight."""
        w = self.const("dense_w", self.he((n_in, n_out), n_in, gain))
        b = self.const("dense_b", self.small(n_out))
        return self.op("Add", [self.op("MatMul", [x, w]), b])


def image_input(name="images", size=32):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 3, size, size])


def finish(b: GraphBuilder, name: str, opset: int, inputs, outputs) -> onnx.ModelProto:
    graph = helper.make_graph(b.nodes, name, inputs, outputs, initializer=b.initializers)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        graph,
        producer_name=PRODUCER,
        producer_version="1",
        opset_imports=opsets,
        ir_version=helper.find_min_ir_version_for(opsets),
        doc_string=f"{name}: small {name} architecture with random weights (make_arch_models.py)",
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def classifier_outputs(b: GraphBuilder, logits: str, batch: str, classes: int, axis=1):
    b.rename_output(logits, "logits")
    b.op("Softmax", ["logits"], axis=axis)
    b.rename_output(b.nodes[-1].output[0], "probabilities")
    return [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes]),
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [batch, classes]),
    ]


# ----------------------------------------------------------------------
# resnet


def build_resnet(rng) -> onnx.ModelProto:
    b = GraphBuilder(rng)

    def conv_bn(x, c_in, c_out, k, stride=1, relu=True, gamma=(0.5, 1.5)):
        y = b.conv(x, c_in, c_out, k, stride=stride, bias=False)
        y = b.batch_norm(y, c_out, gamma=gamma)
        return b.op("Relu", [y]) if relu else y

    def basic_block(x, c_in, c_out, stride):
        y = conv_bn(x, c_in, c_out, 3, stride)
        # a smaller last scale in the residual branch keeps the sum's scale
        y = conv_bn(y, c_out, c_out, 3, relu=False, gamma=(0.3, 0.7))
        if stride != 1 or c_in != c_out:
            x = conv_bn(x, c_in, c_out, 1, stride, relu=False)
        return b.op("Relu", [b.op("Add", [y, x])])

    x = conv_bn("images", 3, 16, 3)
    x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])  # 16x16
    x = basic_block(x, 16, 16, 1)
    x = basic_block(x, 16, 16, 1)
    x = basic_block(x, 16, 32, 2)  # 8x8, projection shortcut
    x = basic_block(x, 32, 32, 1)
    x = b.op("GlobalAveragePool", [x])
    x = b.op("Flatten", [x], axis=1)
    logits = b.gemm(x, 32, 10, gain=0.5)
    outputs = classifier_outputs(b, logits, "N", 10)
    return finish(b, "resnet", 17, [image_input()], outputs)


# ----------------------------------------------------------------------
# mobilenet


def build_mobilenet(rng) -> onnx.ModelProto:
    b = GraphBuilder(rng)
    zero = b.const("clip_min", np.array(0.0, dtype=np.float32))
    six = b.const("clip_max", np.array(6.0, dtype=np.float32))

    def relu6(x):
        return b.op("Clip", [x, zero, six])

    def conv_bn(x, c_in, c_out, k, stride=1, group=1, act=relu6):
        y = b.conv(x, c_in, c_out, k, stride=stride, group=group, bias=False)
        y = b.batch_norm(y, c_out, epsilon=1e-3)
        return act(y) if act else y

    def inverted_residual(x, c_in, c_out, stride, expand):
        hidden = c_in * expand
        y = conv_bn(x, c_in, hidden, 1)
        y = conv_bn(y, hidden, hidden, 3, stride=stride, group=hidden)  # depthwise
        y = conv_bn(y, hidden, c_out, 1, act=None)  # linear bottleneck
        if stride == 1 and c_in == c_out:
            y = b.op("Add", [x, y])
        return y

    def hard_swish(x):
        return b.op("HardSwish", [x])

    x = conv_bn("images", 3, 16, 3, stride=2, act=hard_swish)  # 32x32
    x = inverted_residual(x, 16, 16, 1, 1)
    x = inverted_residual(x, 16, 24, 2, 4)  # 16x16
    x = inverted_residual(x, 24, 24, 1, 4)
    x = inverted_residual(x, 24, 32, 2, 4)  # 8x8
    x = inverted_residual(x, 32, 32, 1, 4)
    x = conv_bn(x, 32, 64, 1, act=hard_swish)
    x = b.op("GlobalAveragePool", [x])
    # x.view(x.size(0), -1) as torch.onnx exports it
    shape = b.op("Shape", [x])
    batch = b.op("Gather", [shape, b.constant_node(np.array(0, dtype=np.int64))], axis=0)
    batch = b.op("Unsqueeze", [batch, b.constant_node(np.array([0], dtype=np.int64))])
    target = b.op("Concat", [batch, b.constant_node(np.array([-1], dtype=np.int64))], axis=0)
    x = b.op("Reshape", [x, target])
    logits = b.gemm(x, 64, 10, gain=1.0)
    outputs = classifier_outputs(b, logits, "N", 10)
    return finish(b, "mobilenet", 17, [image_input(size=64)], outputs)


# ----------------------------------------------------------------------
# inception


def build_inception(rng) -> onnx.ModelProto:
    b = GraphBuilder(rng)

    def conv_relu(x, c_in, c_out, k, stride=1):
        return b.op("Relu", [b.conv(x, c_in, c_out, k, stride=stride)])

    def conv_bn_relu(x, c_in, c_out, k):
        y = b.batch_norm(b.conv(x, c_in, c_out, k, bias=False), c_out, epsilon=1e-3)
        return b.op("Relu", [y])

    def module(x, c_in, c1, c3r, c3, c5r, c5, cp, double_3x3):
        b1 = conv_relu(x, c_in, c1, 1)
        b2 = conv_relu(conv_relu(x, c_in, c3r, 1), c3r, c3, 3)
        b3 = conv_relu(x, c_in, c5r, 1)
        if double_3x3:
            b3 = conv_bn_relu(conv_bn_relu(b3, c5r, c5, 3), c5, c5, 3)
        else:
            b3 = conv_relu(b3, c5r, c5, 5)  # pads 2
        b4 = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
        b4 = conv_relu(b4, c_in, cp, 1)
        return b.op("Concat", [b1, b2, b3, b4], axis=1), c1 + c3 + c5 + cp

    x = conv_bn_relu("images", 3, 16, 3)
    x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])  # 16x16
    x, c = module(x, 16, 8, 8, 12, 4, 8, 8, double_3x3=False)  # 36 channels
    x, c = module(x, c, 12, 12, 16, 6, 8, 8, double_3x3=True)  # 44 channels
    x = b.op("AveragePool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
             count_include_pad=0)  # 8x8
    x = b.op("ReduceMean", [x], axes=[2, 3], keepdims=0)
    logits = b.dense(x, c, 10, gain=4.0)
    outputs = classifier_outputs(b, logits, "N", 10)
    return finish(b, "inception", 17, [image_input()], outputs)


# ----------------------------------------------------------------------
# lstm_tagger

LSTM_VOCAB = 50
LSTM_TAGS = 9


def build_lstm_tagger(rng) -> onnx.ModelProto:
    b = GraphBuilder(rng)
    emb, hidden = 16, 16
    table = b.const("embedding", (rng.standard_normal((LSTM_VOCAB, emb))).astype(np.float32))
    x = b.op("Gather", [table, "tokens"], axis=0)  # [N, T, E]
    x = b.op("Transpose", [x], perm=[1, 0, 2])  # [T, N, E]
    bound = 1.0 / math.sqrt(hidden)

    def uniform(shape):
        return rng.uniform(-bound, bound, shape).astype(np.float32)

    w = b.const("lstm_W", uniform((2, 4 * hidden, emb)))
    r = b.const("lstm_R", uniform((2, 4 * hidden, hidden)))
    bias = b.const("lstm_B", uniform((2, 8 * hidden)))
    y = b.op("LSTM", [x, w, r, bias], direction="bidirectional", hidden_size=hidden)
    y = b.op("Transpose", [y], perm=[2, 0, 1, 3])  # [T, 2, N, H] -> [N, T, 2, H]
    y = b.op("Reshape", [y, b.const("shape", np.array([0, 0, -1], dtype=np.int64))])
    y = b.dense(y, 2 * hidden, LSTM_TAGS, gain=8.0)
    b.op("LogSoftmax", [y], axis=-1)
    b.rename_output(b.nodes[-1].output[0], "tags")
    b.op("ArgMax", ["tags"], axis=-1, keepdims=0)
    b.rename_output(b.nodes[-1].output[0], "tag_ids")
    inputs = [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "T"])]
    outputs = [
        helper.make_tensor_value_info("tags", TensorProto.FLOAT, ["batch", "T", LSTM_TAGS]),
        helper.make_tensor_value_info("tag_ids", TensorProto.INT64, ["batch", "T"]),
    ]
    return finish(b, "lstm_tagger", 11, inputs, outputs)


# ----------------------------------------------------------------------
# gru_classifier

GRU_FEATURES = 6


def build_gru_classifier(rng) -> onnx.ModelProto:
    b = GraphBuilder(rng)
    hidden = 16
    bound = 1.0 / math.sqrt(hidden)

    def uniform(shape):
        return rng.uniform(-bound, bound, shape).astype(np.float32)

    x = b.op("Transpose", ["sequence"], perm=[1, 0, 2])  # [T, N, F]
    w = b.const("gru_W", uniform((1, 3 * hidden, GRU_FEATURES)))
    r = b.const("gru_R", uniform((1, 3 * hidden, hidden)))
    bias = b.const("gru_B", uniform((1, 6 * hidden)))
    _, y_h = b.op("GRU", [x, w, r, bias], outputs=2, hidden_size=hidden,
                  linear_before_reset=1)
    h = b.op("Squeeze", [y_h, b.const("axes", np.array([0], dtype=np.int64))])  # [N, H]
    b.op("Sigmoid", [b.gemm(h, hidden, 3, gain=1.0)])
    b.rename_output(b.nodes[-1].output[0], "scores")
    inputs = [helper.make_tensor_value_info("sequence", TensorProto.FLOAT,
                                            ["batch", "T", GRU_FEATURES])]
    outputs = [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3])]
    return finish(b, "gru_classifier", 13, inputs, outputs)


# ----------------------------------------------------------------------
# conv1d_text

TEXT_VOCAB = 100


def build_conv1d_text(rng) -> onnx.ModelProto:
    b = GraphBuilder(rng)
    emb = 16
    table = b.const("embedding", (rng.standard_normal((TEXT_VOCAB, emb))).astype(np.float32))
    x = b.op("Gather", [table, "tokens"], axis=0)  # [N, T, E]
    x = b.op("Transpose", [x], perm=[0, 2, 1])  # [N, E, T]
    x = b.op("Relu", [b.conv(x, emb, 32, (3,))])
    x = b.op("Relu", [b.conv(x, 32, 32, (3,), dilation=2)])  # pads 2
    x = b.op("MaxPool", [x], kernel_shape=[2], strides=[2])  # T / 2
    x = b.conv(x, 32, 48, (3,), dilation=4, gain=1.0)  # pads 4
    value, gate = b.op("Split", [x], outputs=2, axis=1, split=[24, 24])
    x = b.op("Mul", [value, b.op("Sigmoid", [gate])])  # gated linear unit
    x = b.op("GlobalMaxPool", [x])  # [N, 24, 1]
    x = b.op("Squeeze", [x], axes=[2])
    logits = b.gemm(x, 24, 4, gain=1.0)
    outputs = classifier_outputs(b, logits, "batch", 4)
    inputs = [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "T"])]
    return finish(b, "conv1d_text", 11, inputs, outputs)


# ----------------------------------------------------------------------
# attention_mlp

ATTN_DIM = 32
ATTN_HEADS = 4


def build_attention_mlp(rng) -> onnx.ModelProto:
    b = GraphBuilder(rng)
    d, heads = ATTN_DIM, ATTN_HEADS
    dh = d // heads

    def layer_norm(x):
        gamma = b.const("ln_scale", rng.uniform(0.8, 1.2, d).astype(np.float32))
        beta = b.const("ln_bias", b.small(d))
        return b.op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=1e-5)

    def int64s(values):
        return b.const("ints", np.array(values, dtype=np.int64))

    def split_heads(x):  # [N, T, D] -> [N, heads, T, dh]
        x = b.op("Reshape", [x, int64s([0, 0, heads, dh])])
        return b.op("Transpose", [x], perm=[0, 2, 1, 3])

    # causal mask [T, T]: True above the diagonal
    shape = b.op("Shape", ["features"])
    t = b.op("Gather", [shape, b.const("index", np.array(1, dtype=np.int64))], axis=0)
    steps = b.op("Range", [b.const("start", np.array(0, dtype=np.int64)), t,
                           b.const("delta", np.array(1, dtype=np.int64))])
    rows = b.op("Unsqueeze", [steps, int64s([1])])
    cols = b.op("Unsqueeze", [steps, int64s([0])])
    future = b.op("Greater", [cols, rows])

    h = layer_norm("features")
    qkv = b.dense(h, d, 3 * d, gain=1.0)
    q, k, v = b.op("Split", [qkv], outputs=3, axis=-1, num_outputs=3)
    q, k, v = split_heads(q), split_heads(k), split_heads(v)
    scores = b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 1, 3, 2])])
    scores = b.op("Div", [scores, b.const("sqrt_dh", np.array(math.sqrt(dh), dtype=np.float32))])
    scores = b.op("Where", [future, b.const("neg", np.array(-1e9, dtype=np.float32)), scores])
    attn = b.op("Softmax", [scores], axis=-1)
    ctx = b.op("MatMul", [attn, v])  # [N, heads, T, dh]
    ctx = b.op("Transpose", [ctx], perm=[0, 2, 1, 3])
    ctx = b.op("Reshape", [ctx, int64s([0, 0, d])])
    x = b.op("Add", ["features", b.dense(ctx, d, d, gain=1.0)])

    h = layer_norm(x)
    h = b.op("Gelu", [b.dense(h, d, 2 * d)])
    x = b.op("Add", [x, b.dense(h, 2 * d, d, gain=1.0)])

    pooled = b.op("ReduceMean", [x, int64s([1])], keepdims=0)  # [N, D]
    h = b.dense(pooled, d, d)
    # GELU written out with Erf, as older exporters emit it
    erf = b.op("Erf", [b.op("Div", [h, b.const("sqrt2", np.array(math.sqrt(2.0), dtype=np.float32))])])
    one = b.const("one", np.array(1.0, dtype=np.float32))
    half = b.const("half", np.array(0.5, dtype=np.float32))
    h = b.op("Mul", [b.op("Mul", [h, b.op("Add", [erf, one])]), half])
    b.rename_output(b.dense(h, d, 5, gain=1.0), "logits")
    inputs = [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", "T", d])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])]
    return finish(b, "attention_mlp", 21, inputs, outputs)


# ----------------------------------------------------------------------
# unet_tiny


def build_unet_tiny(rng) -> onnx.ModelProto:
    b = GraphBuilder(rng)

    def float32s(values):
        return b.const("floats", np.array(values, dtype=np.float32))

    def prelu(x, c):
        return b.op("PRelu", [x, b.const("slope", rng.uniform(0.05, 0.3, (c, 1, 1)).astype(np.float32))])

    # encoder, 32x32: reflect padding outside the Conv, then instance norm
    x = b.op("Pad", ["images", b.const("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64))],
             mode="reflect")
    x = b.conv(x, 3, 8, 3, pad=0)
    scale = b.const("in_scale", rng.uniform(0.5, 1.5, 8).astype(np.float32))
    bias = b.const("in_bias", b.small(8))
    enc1 = b.op("Relu", [b.op("InstanceNormalization", [x, scale, bias], epsilon=1e-5)])
    x = b.op("Relu", [b.conv(enc1, 8, 16, 3, stride=2)])  # 16x16
    enc2 = b.op("Relu", [b.conv(x, 16, 16, 3)])
    x = b.op("Relu", [b.conv(enc2, 16, 32, 3, stride=2)])  # 8x8
    bottom = b.op("LeakyRelu", [b.conv(x, 32, 32, 3)], alpha=0.1)

    # decoder
    w = b.const("deconv_w", b.he((32, 16, 2, 2), 32))
    up = b.op("ConvTranspose", [bottom, w, b.const("deconv_b", b.small(16))],
              kernel_shape=[2, 2], strides=[2, 2])  # 16x16
    x = b.op("Concat", [up, enc2], axis=1)
    x = prelu(b.conv(x, 32, 16, 3), 16)
    x = b.op("Resize", [x, "", float32s([1, 1, 2, 2])], mode="linear")  # 32x32, half_pixel
    x = b.conv(x, 16, 8, 1)
    side = b.op("Resize", [bottom, "", float32s([1, 1, 4, 4])], mode="nearest",
                coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    side = b.conv(side, 32, 4, 1, gain=1.0)
    x = b.op("Concat", [x, enc1, side], axis=1)
    x = prelu(b.conv(x, 20, 8, 3), 8)
    b.rename_output(b.conv(x, 8, 2, 1, gain=1.0), "mask_logits")
    b.op("Sigmoid", ["mask_logits"])
    b.rename_output(b.nodes[-1].output[0], "mask")
    outputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 2, 32, 32])
        for name in ("mask_logits", "mask")
    ]
    return finish(b, "unet_tiny", 17, [image_input()], outputs)


# ----------------------------------------------------------------------
# vgg_tiny


def build_vgg_tiny(rng) -> onnx.ModelProto:
    b = GraphBuilder(rng)

    def conv_relu(x, c_in, c_out):
        return b.op("Relu", [b.conv(x, c_in, c_out, 3)])

    def max_pool(x):
        return b.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])

    x = conv_relu("images", 3, 16)
    x = conv_relu(x, 16, 16)
    x = b.op("LRN", [x], size=5, alpha=0.05, beta=0.75, bias=2.0)
    x = max_pool(x)  # 16x16
    x = conv_relu(x, 16, 32)
    x = conv_relu(x, 32, 32)
    x = max_pool(x)  # 8x8
    x = conv_relu(x, 32, 64)
    x = max_pool(x)  # 4x4
    x = b.op("Flatten", [x], axis=1)
    x = b.op("Relu", [b.gemm(x, 64 * 4 * 4, 64)])
    x = b.op("Dropout", [x])
    logits = b.gemm(x, 64, 10, gain=1.0)
    b.op("Softmax", [logits], axis=1)
    b.rename_output(b.nodes[-1].output[0], "probabilities")
    outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])]
    return finish(b, "vgg_tiny", 13, [image_input()], outputs)


# ----------------------------------------------------------------------

BUILDERS: dict[str, Callable[[np.random.Generator], onnx.ModelProto]] = {
    "resnet": build_resnet,
    "mobilenet": build_mobilenet,
    "inception": build_inception,
    "lstm_tagger": build_lstm_tagger,
    "gru_classifier": build_gru_classifier,
    "conv1d_text": build_conv1d_text,
    "attention_mlp": build_attention_mlp,
    "unet_tiny": build_unet_tiny,
    "vgg_tiny": build_vgg_tiny,
}
MODELS: list[str] = list(BUILDERS)


def build_model(name: str) -> onnx.ModelProto:
    """The model ``name`` of ``MODELS``, built from its fixed seed."""
    rng = np.random.default_rng(BASE_SEED + MODELS.index(name))
    return BUILDERS[name](rng)


def _images(rng, batch, size):
    # Smooth random images in [0, 1]: a coarse grid upsampled, plus noise,
    # then normalised like ImageNet inputs.
    coarse = rng.random((batch, 3, size // 8, size // 8))
    pixels = np.kron(coarse, np.ones((8, 8))) * 0.8 + rng.random((batch, 3, size, size)) * 0.2
    return ((pixels.astype(np.float32) - IMAGE_MEAN) / IMAGE_STD).astype(np.float32)


def example_inputs(name: str) -> dict[str, np.ndarray]:
    """A deterministic input batch for model ``name``, by graph input name."""
    rng = np.random.default_rng(INPUT_SEED + MODELS.index(name))
    if name in ("resnet", "inception", "unet_tiny", "vgg_tiny"):
        return {"images": _images(rng, 2, 32)}
    if name == "mobilenet":
        return {"images": _images(rng, 2, 64)}
    if name == "lstm_tagger":
        return {"tokens": rng.integers(0, LSTM_VOCAB, (3, 7), dtype=np.int64)}
    if name == "gru_classifier":
        t = np.arange(10, dtype=np.float32)[None, :, None]
        phase = rng.uniform(0, 2 * np.pi, (3, 1, GRU_FEATURES)).astype(np.float32)
        noise = rng.standard_normal((3, 10, GRU_FEATURES)).astype(np.float32) * 0.1
        return {"sequence": (np.sin(0.6 * t + phase) + noise).astype(np.float32)}
    if name == "conv1d_text":
        return {"tokens": rng.integers(0, TEXT_VOCAB, (3, 24), dtype=np.int64)}
    if name == "attention_mlp":
        return {"features": rng.standard_normal((2, 6, ATTN_DIM)).astype(np.float32)}
    raise KeyError(name)


def write_models(out_dir: Path, names: Sequence[str] = MODELS) -> dict[str, Path]:
    """Writes ``out_dir/<name>/1/model.onnx`` for each name; returns the paths."""
    paths = {}
    for name in names:
        path = Path(out_dir) / name / VERSION_DIR / "model.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(build_model(name), path)
        paths[name] = path
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="directory to write <name>/1/model.onnx into")
    parser.add_argument("--model", action="append", choices=MODELS,
                        help="write only this model (repeatable)")
    args = parser.parse_args(argv)
    for name, path in write_models(args.out_dir, args.model or MODELS).items():
        model = onnx.load(path)
        ops = sorted({node.op_type for node in model.graph.node})
        print(f"{path}: opset {model.opset_import[0].version}, "
              f"{path.stat().st_size} bytes, ops: {' '.join(ops)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
