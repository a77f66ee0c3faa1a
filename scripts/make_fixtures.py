#!/usr/bin/env python3
"""Write the reference fixtures used by the Rust tests.

1. tests/fixtures/mnist_reference.json

   onnxruntime's output of the example model examples/models/mnist/1/model.onnx
   for every PNG in examples/digits/ (input = pixels / 255 as float32
   [1,28,28,1]), plus one batch of 4 seeded pseudo-random inputs in [0,1).
   Every case has "file" (repository-relative path, or null for the random
   batch), "class" (from the file name, or null), "shape", "input" (flattened,
   row-major) and "probabilities" (flattened). Floats are written with Python's
   repr of the float32 value, so they round-trip exactly to float32.

2. tests/fixtures/onnx/<name>/{model.onnx,input_0.pb,output_0.pb}

   Small NCHW-style ONNX test models built with onnx.helper (seeded He-init
   weights) with one reference input and onnxruntime's output, serialized as
   onnx TensorProto (the layout of the ONNX backend test data sets):

     mnist_cnn   input[N,1,28,28] -> Conv 32x3x3 -> Relu -> MaxPool 2x2
                 -> Flatten -> Gemm 5408x10 -> Softmax -> probs        (batch 2)
     cnn_small   input[N,3,32,32] -> 3 x [Conv 3x3 pad 1 -> Relu -> MaxPool 2x2]
                 (8, 16, 32 channels) -> Flatten -> Gemm 512x64 -> Relu
                 -> Gemm 64x10 -> Softmax -> probs                     (batch 2)
     matmul_mlp  x[N,20] -> MatMul -> Add -> Relu -> Reshape [-1,4,4]
                 -> Transpose(0,2,1) -> Reshape [-1,16] -> MatMul -> Add
                 -> Softmax -> y; its initializers are also listed among the
                 graph inputs, as older ONNX files do                  (batch 3)
     gemm_trans  x[N,6] -> Gemm(transB=1, alpha=0.5, beta=2) -> y      (batch 2)

3. tests/fixtures/models/iris/1/{model.onnx,labels.txt} and
   tests/fixtures/iris_reference.json

   A model for Classify, Regress and MultiInference, fitted to scikit-learn's
   iris data set: inputs sepal[N,2] and petal[N,2] (cm), outputs
   scores[N,3] = Softmax(sepal @ Ws + petal @ Wp + b) (multinomial logistic
   regression of the species) and outputs[N,1] = sepal @ Vs + petal @ Vp + c
   (least-squares regression of the species index, 0..2). labels.txt names
   the three species in class order. The reference JSON holds five flowers
   with onnxruntime's scores and outputs.

Run from the repository root after scripts/build_example_model.py:

    target/py/scripts/bin/python scripts/make_fixtures.py
"""

import json
import pathlib
import re

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

SEED = 20240602
OPSET = 13
IR_VERSION = 8
MAX_MODEL_BYTES = 300 * 1024

ROOT = pathlib.Path(__file__).resolve().parent.parent
MNIST_MODEL = "examples/models/mnist/1/model.onnx"
DIGITS_DIR = "examples/digits"
REFERENCE_JSON = ROOT / "tests" / "fixtures" / "mnist_reference.json"
ONNX_FIXTURES = ROOT / "tests" / "fixtures" / "onnx"


def session(model_bytes, quiet=False):
    opts = ort.SessionOptions()
    if quiet:
        opts.log_severity_level = 3  # errors only
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    # Reference semantics: run the graph as written, without fusions.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def floats(a):
    # ndarray.tolist() on float32 gives Python floats holding the exact float32
    # values; json writes them with repr (shortest exact double repr).
    return np.asarray(a, dtype=np.float32).ravel().tolist()


# --------------------------------------------------------------------------
# mnist_reference.json
# --------------------------------------------------------------------------


def make_mnist_reference():
    model_bytes = (ROOT / MNIST_MODEL).read_bytes()
    sess = session(model_bytes)
    (inp,) = sess.get_inputs()
    (out,) = sess.get_outputs()
    assert inp.name == "image" and out.name == "probabilities", (inp.name, out.name)

    pngs = sorted(
        (ROOT / DIGITS_DIR).glob("*.png"),
        key=lambda p: (0, int(p.stem)) if p.stem.isdigit() else (1, p.stem),
    )
    if not pngs:
        raise SystemExit(f"no PNG files in {DIGITS_DIR}; run scripts/build_example_model.py first")

    cases = []
    for path in pngs:
        img = Image.open(path)
        if img.mode != "L":
            raise SystemExit(f"{path}: expected 8-bit grayscale, got mode {img.mode}")
        pixels = np.asarray(img, dtype=np.uint8)
        if pixels.shape != (28, 28):
            raise SystemExit(f"{path}: expected 28x28, got {pixels.shape}")
        x = (pixels.astype(np.float32) / np.float32(255.0)).reshape(1, 28, 28, 1)
        probs = sess.run([out.name], {inp.name: x})[0]
        m = re.match(r"^(\d)", path.stem)
        cls = int(m.group(1)) if m else None
        pred = int(probs.argmax())
        status = "ok" if cls is None or pred == cls else "MISCLASSIFIED"
        print(f"{path.relative_to(ROOT)}: class {cls}, predicted {pred} (p={probs[0, pred]:.4f}) {status}")
        cases.append(
            {
                "file": path.relative_to(ROOT).as_posix(),
                "class": cls,
                "shape": list(x.shape),
                "input": floats(x),
                "probabilities": floats(probs),
            }
        )

    rng = np.random.default_rng(SEED)
    x = rng.random((4, 28, 28, 1), dtype=np.float32)
    probs = sess.run([out.name], {inp.name: x})[0]
    cases.append(
        {
            "file": None,
            "class": None,
            "shape": list(x.shape),
            "input": floats(x),
            "probabilities": floats(probs),
        }
    )

    doc = {
        "model": MNIST_MODEL,
        "input": inp.name,
        "output": out.name,
        "cases": cases,
    }
    REFERENCE_JSON.parent.mkdir(parents=True, exist_ok=True)
    with open(REFERENCE_JSON, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {REFERENCE_JSON.relative_to(ROOT)} ({len(cases)} cases)")


# --------------------------------------------------------------------------
# Small ONNX test models
# --------------------------------------------------------------------------


def he_normal(rng, shape, fan_in):
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def small_bias(rng, n):
    return (rng.standard_normal(n) * 0.1).astype(np.float32)


def conv_params(rng, prefix, c_out, c_in, k):
    w = he_normal(rng, (c_out, c_in, k, k), c_in * k * k)
    b = small_bias(rng, c_out)
    return [numpy_helper.from_array(w, f"{prefix}.weight"), numpy_helper.from_array(b, f"{prefix}.bias")]


def dense_params(rng, prefix, n_in, n_out):
    w = he_normal(rng, (n_in, n_out), n_in)
    b = small_bias(rng, n_out)
    return [numpy_helper.from_array(w, f"{prefix}.weight"), numpy_helper.from_array(b, f"{prefix}.bias")]


def finish_model(graph):
    model = helper.make_model(
        graph,
        producer_name="ferroserve-scripts",
        producer_version="1",
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def mnist_cnn(rng):
    inits = conv_params(rng, "conv", 32, 1, 3) + dense_params(rng, "fc", 32 * 13 * 13, 10)
    nodes = [
        helper.make_node(
            "Conv", ["input", "conv.weight", "conv.bias"], ["conv_out"], name="conv",
            kernel_shape=[3, 3], pads=[0, 0, 0, 0], strides=[1, 1],
        ),
        helper.make_node("Relu", ["conv_out"], ["relu_out"], name="relu"),
        helper.make_node("MaxPool", ["relu_out"], ["pool_out"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pool_out"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "mnist_cnn",
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        outputs=[helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])],
        initializer=inits,
    )
    x = rng.random((2, 1, 28, 28), dtype=np.float32)
    return finish_model(graph), x


def cnn_small(rng):
    inits, nodes = [], []
    prev, c_in = "input", 3
    for i, c_out in enumerate([8, 16, 32], start=1):
        inits += conv_params(rng, f"conv{i}", c_out, c_in, 3)
        nodes += [
            helper.make_node(
                "Conv", [prev, f"conv{i}.weight", f"conv{i}.bias"], [f"conv{i}_out"], name=f"conv{i}",
                kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1],
            ),
            helper.make_node("Relu", [f"conv{i}_out"], [f"relu{i}_out"], name=f"relu{i}"),
            helper.make_node(
                "MaxPool", [f"relu{i}_out"], [f"pool{i}_out"], name=f"pool{i}", kernel_shape=[2, 2], strides=[2, 2]
            ),
        ]
        prev, c_in = f"pool{i}_out", c_out
    inits += dense_params(rng, "fc1", 32 * 4 * 4, 64) + dense_params(rng, "fc2", 64, 10)
    nodes += [
        helper.make_node("Flatten", [prev], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc1.weight", "fc1.bias"], ["fc1_out"], name="fc1"),
        helper.make_node("Relu", ["fc1_out"], ["fc1_relu"], name="relu_fc1"),
        helper.make_node("Gemm", ["fc1_relu", "fc2.weight", "fc2.bias"], ["logits"], name="fc2"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "cnn_small",
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        outputs=[helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])],
        initializer=inits,
    )
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    return finish_model(graph), x


def matmul_mlp(rng):
    w1 = he_normal(rng, (20, 16), 20)
    b1 = small_bias(rng, 16)
    w2 = he_normal(rng, (16, 5), 16)
    b2 = small_bias(rng, 5)
    inits = [
        numpy_helper.from_array(w1, "W1"),
        numpy_helper.from_array(b1, "b1"),
        numpy_helper.from_array(np.array([-1, 4, 4], dtype=np.int64), "shape_4x4"),
        numpy_helper.from_array(np.array([-1, 16], dtype=np.int64), "shape_16"),
        numpy_helper.from_array(w2, "W2"),
        numpy_helper.from_array(b2, "b2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h1"], name="matmul1"),
        helper.make_node("Add", ["h1", "b1"], ["h1b"], name="add1"),
        helper.make_node("Relu", ["h1b"], ["h1r"], name="relu1"),
        helper.make_node("Reshape", ["h1r", "shape_4x4"], ["h1_4x4"], name="reshape1"),
        helper.make_node("Transpose", ["h1_4x4"], ["h1_t"], name="transpose", perm=[0, 2, 1]),
        helper.make_node("Reshape", ["h1_t", "shape_16"], ["h1_flat"], name="reshape2"),
        helper.make_node("MatMul", ["h1_flat", "W2"], ["h2"], name="matmul2"),
        helper.make_node("Add", ["h2", "b2"], ["logits"], name="add2"),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=-1),
    ]
    # Old-style file: every initializer is also declared as a graph input.
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 20])] + [
        helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits
    ]
    graph = helper.make_graph(
        nodes, "matmul_mlp",
        inputs=inputs,
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        initializer=inits,
    )
    x = rng.standard_normal((3, 20)).astype(np.float32)
    return finish_model(graph), x


def gemm_trans(rng):
    b = he_normal(rng, (4, 6), 6)
    c = small_bias(rng, 4)
    inits = [numpy_helper.from_array(b, "B"), numpy_helper.from_array(c, "C")]
    nodes = [
        helper.make_node("Gemm", ["x", "B", "C"], ["y"], name="gemm", alpha=0.5, beta=2.0, transA=0, transB=1),
    ]
    graph = helper.make_graph(
        nodes, "gemm_trans",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        initializer=inits,
    )
    x = rng.standard_normal((2, 6)).astype(np.float32)
    return finish_model(graph), x


def write_onnx_fixture(name, model, x):
    # matmul_mlp lists its initializers among the graph inputs on purpose;
    # onnxruntime warns about each of them, which is expected here.
    quiet = name == "matmul_mlp"
    model_bytes = model.SerializeToString()
    if len(model_bytes) > MAX_MODEL_BYTES:
        raise SystemExit(f"{name}: model is {len(model_bytes)} bytes (limit {MAX_MODEL_BYTES})")
    input_name = model.graph.input[0].name
    output_name = model.graph.output[0].name
    sess = session(model_bytes, quiet=quiet)
    (y,) = sess.run([output_name], {input_name: x})

    out_dir = ONNX_FIXTURES / name
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.onnx").write_bytes(model_bytes)
    (out_dir / "input_0.pb").write_bytes(numpy_helper.from_array(x, input_name).SerializeToString())
    (out_dir / "output_0.pb").write_bytes(numpy_helper.from_array(y, output_name).SerializeToString())
    print(
        f"wrote {out_dir.relative_to(ROOT)}/ (model {len(model_bytes)} bytes, "
        f"{input_name}{list(x.shape)} -> {output_name}{list(y.shape)})"
    )


def make_onnx_fixtures():
    builders = [
        ("mnist_cnn", mnist_cnn),
        ("cnn_small", cnn_small),
        ("matmul_mlp", matmul_mlp),
        ("gemm_trans", gemm_trans),
    ]
    for i, (name, build) in enumerate(builders):
        # One seeded generator per model, so each fixture is stable on its own.
        rng = np.random.default_rng([SEED, i])
        model, x = build(rng)
        write_onnx_fixture(name, model, x)


IRIS_DIR = ROOT / "tests" / "fixtures" / "models" / "iris" / "1"
IRIS_REFERENCE = ROOT / "tests" / "fixtures" / "iris_reference.json"


def make_iris_model():
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    iris = load_iris()
    x = iris.data.astype(np.float32)
    y = iris.target
    classifier = LogisticRegression(max_iter=1000).fit(x, y)
    w = classifier.coef_.T.astype(np.float32)  # [4, 3]
    b = classifier.intercept_.astype(np.float32)  # [3]
    design = np.hstack([x, np.ones((len(x), 1), np.float32)])
    solution, *_ = np.linalg.lstsq(design, y.astype(np.float32), rcond=None)
    v = solution[:4].reshape(4, 1).astype(np.float32)
    c = solution[4:].astype(np.float32)  # [1]
    inits = [
        numpy_helper.from_array(w[:2], "Ws"),
        numpy_helper.from_array(w[2:], "Wp"),
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array(v[:2], "Vs"),
        numpy_helper.from_array(v[2:], "Vp"),
        numpy_helper.from_array(c, "c"),
    ]
    nodes = [
        helper.make_node("MatMul", ["sepal", "Ws"], ["ls"]),
        helper.make_node("MatMul", ["petal", "Wp"], ["lp"]),
        helper.make_node("Add", ["ls", "lp"], ["l"]),
        helper.make_node("Add", ["l", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["scores"], axis=-1),
        helper.make_node("MatMul", ["sepal", "Vs"], ["rs"]),
        helper.make_node("MatMul", ["petal", "Vp"], ["rp"]),
        helper.make_node("Add", ["rs", "rp"], ["r"]),
        helper.make_node("Add", ["r", "c"], ["outputs"]),
    ]
    graph = helper.make_graph(
        nodes, "iris",
        inputs=[
            helper.make_tensor_value_info("sepal", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("petal", TensorProto.FLOAT, ["N", 2]),
        ],
        outputs=[
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ["N", 1]),
        ],
        initializer=inits,
    )
    model = finish_model(graph)
    model_bytes = model.SerializeToString()
    IRIS_DIR.mkdir(parents=True, exist_ok=True)
    (IRIS_DIR / "model.onnx").write_bytes(model_bytes)
    (IRIS_DIR / "labels.txt").write_text("".join(f"{name}\n" for name in iris.target_names))

    picks = [0, 50, 100, 25, 125]
    flowers = x[picks]
    sess = session(model_bytes)
    scores, outputs = sess.run(["scores", "outputs"], {"sepal": flowers[:, :2], "petal": flowers[:, 2:]})
    cases = [
        {
            "sepal": floats(flowers[i, :2]),
            "petal": floats(flowers[i, 2:]),
            "class": int(y[p]),
            "scores": floats(scores[i]),
            "output": floats(outputs[i])[0],
        }
        for i, p in enumerate(picks)
    ]
    reference = {"model": str(IRIS_DIR.relative_to(ROOT) / "model.onnx"), "labels": list(iris.target_names), "cases": cases}
    IRIS_REFERENCE.write_text(json.dumps(reference, separators=(",", ":")) + "\n")
    print(f"wrote {IRIS_DIR.relative_to(ROOT)}/ and {IRIS_REFERENCE.relative_to(ROOT)}")


def main():
    make_mnist_reference()
    make_onnx_fixtures()
    make_iris_model()


if __name__ == "__main__":
    main()
