#!/usr/bin/env python3
"""Export the example digit classifier as a TensorFlow SavedModel.

Reads the weights of examples/models/mnist/1/model.onnx (written by
scripts/build_example_model.py), loads them into the same Keras network
(Conv2D 32x3x3 + ReLU, MaxPool 2x2, Flatten, Dense 10 + softmax) and exports
it with Keras 3's `keras.export.ExportArchive`, so that the SavedModel and the
ONNX file compute the same function with the same signature aliases. No
training is involved: the weights are copied bit for bit.

  ONNX initializer          Keras weight           note
  conv.weight [32,1,3,3]    conv kernel [3,3,1,32] OIHW -> HWIO transpose
  conv.bias   [32]          conv bias   [32]
  dense.weight [5408,10]    dense kernel [5408,10] as is (Gemm without transB)
  dense.bias  [10]          dense bias  [10]

Outputs (paths relative to the repository root):

  examples/models/mnist_savedmodel/1/   the SavedModel: saved_model.pb,
                                        fingerprint.pb, variables/variables.index,
                                        variables/variables.data-00000-of-00001
  examples/models/mnist_savedmodel/README.md
  tests/fixtures/mnist_savedmodel_variables.json
                                        what TensorFlow reads from the SavedModel,
                                        for tests of a native (TensorFlow-free)
                                        reader:
      "signature"   serving_default's method name and, per alias, the tensor
                    name, dtype and shape stored in saved_model.pb
      "variables"   for every key of the checkpoint variables/variables (as
                    listed by tf.train.load_checkpoint): "dtype" (numpy name:
                    "float32", "int64", "string", ...) and "shape"; numeric
                    tensors also have "num_elements", "sum" and "sum_of_squares"
                    (float64, exactly rounded with math.fsum) and "first" (the
                    first 4 values of the flattened tensor); string tensors
                    such as _CHECKPOINTABLE_OBJECT_GRAPH have no value stats
      "predictions" {"0": [10 probabilities], ..., "9": [...]}: the output of
                    TensorFlow's own serving_default signature
                    (tf.saved_model.load) for examples/digits/<d>.png, each
                    run alone as input [1,28,28,1] = pixel / 255; floats are
                    the exact float32 values

`saved_model_cli show --dir examples/models/mnist_savedmodel/1 --tag_set serve
--signature_def serving_default` prints:

    The given SavedModel SignatureDef contains the following input(s):
      inputs['image'] tensor_info:
          dtype: DT_FLOAT
          shape: (-1, 28, 28, 1)
          name: serving_default_image:0
    The given SavedModel SignatureDef contains the following output(s):
      outputs['probabilities'] tensor_info:
          dtype: DT_FLOAT
          shape: (-1, 10)
          name: StatefulPartitionedCall:0
    Method name is: tensorflow/serving/predict

The script checks this signature in saved_model.pb, checks that the checkpoint
holds exactly the ONNX weights, and checks that TensorFlow's serving_default
matches onnxruntime on the ONNX file for examples/digits/0.png .. 9.png (one
at a time and as one batch of 10) within rtol 1e-5, atol 1e-6. It prints the
largest absolute difference.

Keras 3 stores every weight twice in the checkpoint: once under `variables/N`
(the tracked model's variables) and once under `_all_variables/N` (the
variables the endpoint uses). Keras lists the latter in an order that depends
on object addresses, which changes from run to run; the script puts them in
the model's order (conv kernel, conv bias, dense kernel, dense bias), so that
variables/ and saved_model.pb are the same bytes on every run. TensorFlow
writes a fresh random `uuid` into fingerprint.pb on every save; when a rerun
produces the same SavedModel (same saved_model.pb and variables/, and the same
fingerprint apart from the uuid), the script keeps the existing fingerprint.pb,
so a rerun leaves every file unchanged.

Run from the repository root, in a virtualenv with requirements/scripts.txt
(after scripts/build_example_model.py):

    target/py/scripts/bin/python scripts/build_example_savedmodel.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import json
import math
import pathlib
import shutil
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from PIL import Image

import tensorflow as tf

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

import keras  # noqa: E402
from tensorflow.core.protobuf import fingerprint_pb2, saved_model_pb2  # noqa: E402

SIZE = 28
RTOL = 1e-5
ATOL = 1e-6
INPUT_ALIAS = "image"
OUTPUT_ALIAS = "probabilities"
SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"

ROOT = pathlib.Path(__file__).resolve().parent.parent
ONNX_PATH = ROOT / "examples" / "models" / "mnist" / "1" / "model.onnx"
MODEL_DIR = ROOT / "examples" / "models" / "mnist_savedmodel"
VERSION_DIR = MODEL_DIR / "1"
README_PATH = MODEL_DIR / "README.md"
DIGITS_DIR = ROOT / "examples" / "digits"
FIXTURE_PATH = ROOT / "tests" / "fixtures" / "mnist_savedmodel_variables.json"

# The signature the export must have: alias -> (tensor name, dtype, shape).
EXPECTED_INPUTS = {INPUT_ALIAS: ("serving_default_image:0", tf.float32, [-1, SIZE, SIZE, 1])}
EXPECTED_OUTPUTS = {OUTPUT_ALIAS: ("StatefulPartitionedCall:0", tf.float32, [-1, 10])}

SAVED_MODEL_FILES = [
    "saved_model.pb",
    "variables/variables.index",
    "variables/variables.data-00000-of-00001",
]


def rel(path):
    return pathlib.Path(path).relative_to(ROOT).as_posix()


def read_onnx_weights():
    model = onnx.load(ONNX_PATH)
    weights = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    expected = {
        "conv.weight": (32, 1, 3, 3),
        "conv.bias": (32,),
        "dense.weight": (13 * 13 * 32, 10),
        "dense.bias": (10,),
    }
    got = {name: w.shape for name, w in weights.items()}
    if got != expected:
        sys.exit(f"{rel(ONNX_PATH)}: unexpected initializers {got}, expected {expected}")
    for name, w in weights.items():
        if w.dtype != np.float32:
            sys.exit(f"{rel(ONNX_PATH)}: initializer {name} is {w.dtype}, expected float32")
    return weights


def build_keras_model(weights):
    model = keras.Sequential(
        [
            keras.Input(shape=(SIZE, SIZE, 1), name="image"),
            keras.layers.Conv2D(32, (3, 3), padding="valid", activation="relu", name="conv"),
            keras.layers.MaxPooling2D((2, 2), name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(10, activation="softmax", name="dense"),
        ],
        name="mnist",
    )
    # ONNX Conv weights are OIHW; Keras Conv2D kernels are HWIO.
    conv_kernel = np.ascontiguousarray(weights["conv.weight"].transpose(2, 3, 1, 0))
    model.get_layer("conv").set_weights([conv_kernel, weights["conv.bias"]])
    model.get_layer("dense").set_weights([weights["dense.weight"], weights["dense.bias"]])
    # The model's variables in order, with the arrays the checkpoint must hold.
    return model, [conv_kernel, weights["conv.bias"], weights["dense.weight"], weights["dense.bias"]]


def order_endpoint_variables(archive, model):
    """Make `archive` list the variables its endpoints use in the model's order.

    Before saving, ExportArchive.write_out() collects the variables used by
    the endpoints (`_filter_and_track_resources`) from the traced functions,
    whose variable set is ordered by object address. Sorting that list by
    the model's variable order afterwards makes the export reproducible.
    """
    collect = getattr(archive, "_filter_and_track_resources", None)
    if collect is None:
        sys.exit("this Keras version's ExportArchive has no _filter_and_track_resources()")
    rank = {}
    for i, v in enumerate(model.variables):
        rank[id(v)] = i
        rank[id(v.value)] = i

    def collect_in_model_order():
        collect()
        used = list(archive._tf_trackable._all_variables)
        if sorted(rank.get(id(v), -1) for v in used) != list(range(len(model.variables))):
            sys.exit("the serving endpoint does not use exactly the model's variables")
        archive._tf_trackable._all_variables = sorted(used, key=lambda v: rank[id(v)])

    archive._filter_and_track_resources = collect_in_model_order


def export(model, out_dir):
    archive = keras.export.ExportArchive()
    archive.track(model)
    order_endpoint_variables(archive, model)

    def serve(image):
        return {OUTPUT_ALIAS: model(image, training=False)}

    archive.add_endpoint(
        name=SIGNATURE,
        fn=serve,
        input_signature=[tf.TensorSpec([None, SIZE, SIZE, 1], tf.float32, name=INPUT_ALIAS)],
    )
    archive.write_out(str(out_dir), verbose=False)


def check_signature(export_dir):
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    if len(sm.meta_graphs) != 1 or list(sm.meta_graphs[0].meta_info_def.tags) != ["serve"]:
        sys.exit("expected exactly one MetaGraph, tagged 'serve'")
    sig = sm.meta_graphs[0].signature_def[SIGNATURE]
    if sig.method_name != PREDICT_METHOD:
        sys.exit(f"{SIGNATURE}: method {sig.method_name!r}, expected {PREDICT_METHOD!r}")

    def describe(infos, expected, kind):
        out = {}
        for alias, info in sorted(infos.items()):
            dtype = tf.dtypes.as_dtype(info.dtype)
            shape = [d.size for d in info.tensor_shape.dim]
            got = (info.name, dtype, shape)
            if alias not in expected or got != expected[alias]:
                sys.exit(f"{SIGNATURE}: {kind} {alias!r} is {got}, expected {expected}")
            out[alias] = {"name": info.name, "dtype": dtype.name, "shape": shape}
        if set(out) != set(expected):
            sys.exit(f"{SIGNATURE}: {kind}s {sorted(out)}, expected {sorted(expected)}")
        return out

    return {
        "name": SIGNATURE,
        "method_name": sig.method_name,
        "inputs": describe(sig.inputs, EXPECTED_INPUTS, "input"),
        "outputs": describe(sig.outputs, EXPECTED_OUTPUTS, "output"),
    }


def fsum64(values):
    return math.fsum(values.astype(np.float64).ravel().tolist())


def describe_checkpoint(prefix, expected_arrays):
    reader = tf.train.load_checkpoint(str(prefix))
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    out = {}
    for key in sorted(shapes):
        dtype = tf.dtypes.as_dtype(dtypes[key])
        entry = {"dtype": "string" if dtype == tf.string else np.dtype(dtype.as_numpy_dtype).name}
        entry["shape"] = [int(d) for d in shapes[key]]
        if dtype != tf.string:
            value = np.asarray(reader.get_tensor(key))
            flat = value.ravel()
            entry["num_elements"] = int(flat.size)
            entry["sum"] = fsum64(flat)
            # x * x of a float32 is exact in float64, so this is exactly rounded too.
            entry["sum_of_squares"] = math.fsum((flat.astype(np.float64) ** 2).tolist())
            entry["first"] = flat[:4].tolist()
        out[key] = entry

    # Both copies of every weight must be exactly the ONNX initializers.
    for group in ("variables", "_all_variables"):
        for i, expected in enumerate(expected_arrays):
            key = f"{group}/{i}/.ATTRIBUTES/VARIABLE_VALUE"
            if key not in shapes:
                sys.exit(f"checkpoint has no key {key}; keys: {sorted(shapes)}")
            stored = reader.get_tensor(key)
            if stored.dtype != expected.dtype or not np.array_equal(stored, expected):
                sys.exit(f"checkpoint {key} differs from the ONNX weight it was set from")
    extra = sorted(set(shapes) - {"_CHECKPOINTABLE_OBJECT_GRAPH"}
                   - {f"{g}/{i}/.ATTRIBUTES/VARIABLE_VALUE" for g in ("variables", "_all_variables")
                      for i in range(len(expected_arrays))})
    if extra:
        sys.exit(f"unexpected checkpoint keys {extra}")
    return out


def load_digits():
    digits = {}
    for d in range(10):
        path = DIGITS_DIR / f"{d}.png"
        img = Image.open(path)
        if img.mode != "L" or img.size != (SIZE, SIZE):
            sys.exit(f"{rel(path)}: expected 28x28 8-bit grayscale, got {img.mode} {img.size}")
        pixels = np.asarray(img, dtype=np.uint8)
        digits[d] = (pixels.astype(np.float32) / np.float32(255.0)).reshape(1, SIZE, SIZE, 1)
    return digits


def onnx_session():
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(ONNX_PATH), opts, providers=["CPUExecutionProvider"])


def compare(export_dir, digits):
    """TensorFlow's serving_default vs onnxruntime; returns TF's per-digit outputs."""
    serving = tf.saved_model.load(str(export_dir)).signatures[SIGNATURE]
    sess = onnx_session()

    def tf_run(x):
        out = serving(**{INPUT_ALIAS: tf.constant(x)})
        if set(out) != {OUTPUT_ALIAS}:
            sys.exit(f"{SIGNATURE} returned {sorted(out)}, expected [{OUTPUT_ALIAS!r}]")
        return out[OUTPUT_ALIAS].numpy()

    def ort_run(x):
        return sess.run([OUTPUT_ALIAS], {INPUT_ALIAS: x})[0]

    predictions = {}
    max_diff = 0.0
    for d, x in digits.items():
        tf_out, ort_out = tf_run(x), ort_run(x)
        if tf_out.dtype != np.float32 or tf_out.shape != (1, 10):
            sys.exit(f"digit {d}: TensorFlow output {tf_out.dtype} {tf_out.shape}, expected float32 (1, 10)")
        np.testing.assert_allclose(tf_out, ort_out, rtol=RTOL, atol=ATOL, err_msg=f"digit {d}")
        max_diff = max(max_diff, float(np.abs(tf_out - ort_out).max()))
        pred = int(tf_out.argmax())
        print(f"digit {d}: TensorFlow predicts {pred} (p={tf_out[0, pred]:.4f})"
              + ("" if pred == d else "  MISCLASSIFIED"))
        predictions[str(d)] = tf_out.ravel().tolist()

    batch = np.concatenate([digits[d] for d in range(10)])
    tf_batch, ort_batch = tf_run(batch), ort_run(batch)
    np.testing.assert_allclose(tf_batch, ort_batch, rtol=RTOL, atol=ATOL, err_msg="batch of 10")
    batch_diff = float(np.abs(tf_batch - ort_batch).max())
    print(f"max |TensorFlow - onnxruntime|: {max_diff:.3g} (one digit at a time), "
          f"{batch_diff:.3g} (batch of 10)")
    return predictions, max(max_diff, batch_diff)


def same_export(new_dir, old_dir):
    """True when old_dir holds the same SavedModel, fingerprint uuid aside."""
    if not (old_dir / "fingerprint.pb").is_file():
        return False
    for name in SAVED_MODEL_FILES:
        old = old_dir / name
        if not old.is_file() or old.read_bytes() != (new_dir / name).read_bytes():
            return False
    fingerprints = []
    for d in (new_dir, old_dir):
        fp = fingerprint_pb2.FingerprintDef()
        fp.ParseFromString((d / "fingerprint.pb").read_bytes())
        fp.ClearField("uuid")
        fingerprints.append(fp.SerializeToString(deterministic=True))
    return fingerprints[0] == fingerprints[1]


def install(new_dir):
    """Replace VERSION_DIR with new_dir, keeping the old fingerprint.pb if nothing changed."""
    if VERSION_DIR.exists() and same_export(new_dir, VERSION_DIR):
        shutil.copyfile(VERSION_DIR / "fingerprint.pb", new_dir / "fingerprint.pb")
        print(f"{rel(VERSION_DIR)}: same SavedModel as before; kept its fingerprint.pb")
    if VERSION_DIR.exists():
        shutil.rmtree(VERSION_DIR)
    new_dir.rename(VERSION_DIR)
    for path in sorted(p for p in VERSION_DIR.rglob("*")):
        if path.is_file():
            print(f"wrote {rel(path)} ({path.stat().st_size} bytes)")


def write_readme(max_diff):
    README_PATH.write_text(f"""# Example model: `mnist_savedmodel`

The example digit classifier of [`../mnist`](../mnist/README.md) as a
TensorFlow SavedModel, exported by Keras 3 from exactly the same weights: the
four ONNX initializers of `../mnist/1/model.onnx` are copied bit for bit into
the Keras network (Conv2D 32 3x3 + ReLU, MaxPool 2x2, Flatten, Dense 10 +
softmax; the conv weight transposed from OIHW to HWIO). Both files compute
the same function under the same signature aliases, so a server must give the
same answers for either (up to float rounding).

`1/` holds `saved_model.pb`, `fingerprint.pb` and the checkpoint
`variables/variables.{{index,data-00000-of-00001}}`. As Keras 3 exports do,
the checkpoint holds each weight twice, under `variables/N` (the tracked
model's variables) and `_all_variables/N` (the variables the endpoint uses),
N = 0..3 for conv kernel `[3,3,1,32]`, conv bias `[32]`, dense kernel
`[5408,10]` and dense bias `[10]`, plus the object graph
`_CHECKPOINTABLE_OBJECT_GRAPH`.

## Signature

`serving_default`, method `tensorflow/serving/predict`, tag set `serve`:

| alias | TensorInfo.name | dtype | shape |
|---|---|---|---|
| input `image` | `serving_default_image:0` | DT_FLOAT | `[-1,28,28,1]` (NHWC), pixel / 255 |
| output `probabilities` | `StatefulPartitionedCall:0` | DT_FLOAT | `[-1,10]`, softmax over the digits 0..9 |

`saved_model_cli show --dir examples/models/mnist_savedmodel/1 --tag_set serve --signature_def serving_default`:

    The given SavedModel SignatureDef contains the following input(s):
      inputs['image'] tensor_info:
          dtype: DT_FLOAT
          shape: (-1, 28, 28, 1)
          name: serving_default_image:0
    The given SavedModel SignatureDef contains the following output(s):
      outputs['probabilities'] tensor_info:
          dtype: DT_FLOAT
          shape: (-1, 10)
          name: StatefulPartitionedCall:0
    Method name is: tensorflow/serving/predict

On `examples/digits/0.png` .. `9.png`, TensorFlow's `serving_default`
(`tf.saved_model.load`) and onnxruntime on `../mnist/1/model.onnx` differ by
at most {max_diff:.3g}.

## Rebuilding

From the repository root, after `scripts/build_example_model.py`:

    target/py/scripts/bin/python scripts/build_example_savedmodel.py

This rewrites `1/`, this README and
`tests/fixtures/mnist_savedmodel_variables.json`. Reruns with the same package
versions give the same files (TensorFlow's random fingerprint uuid aside, the
script keeps the existing `fingerprint.pb` when nothing else changed). See
`scripts/README.md`.
""")
    print(f"wrote {rel(README_PATH)}")


def write_fixture(signature, variables, predictions):
    doc = {
        "savedmodel": rel(VERSION_DIR),
        "checkpoint": rel(VERSION_DIR / "variables" / "variables"),
        "signature": signature,
        "variables": variables,
        "prediction_inputs": rel(DIGITS_DIR) + "/<digit>.png as [1,28,28,1] float32 pixel / 255",
        "predictions": predictions,
    }
    FIXTURE_PATH.parent.mkdir(parents=True, exist_ok=True)
    with open(FIXTURE_PATH, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"wrote {rel(FIXTURE_PATH)} ({len(variables)} checkpoint keys)")


def main():
    weights = read_onnx_weights()
    model, arrays = build_keras_model(weights)
    digits = load_digits()

    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=MODEL_DIR, prefix=".export-") as tmp:
        new_dir = pathlib.Path(tmp) / "1"
        export(model, new_dir)
        signature = check_signature(new_dir)
        variables = describe_checkpoint(new_dir / "variables" / "variables", arrays)
        predictions, max_diff = compare(new_dir, digits)
        install(new_dir)

    for key, entry in variables.items():
        print(f"  {key}: {entry['dtype']} {entry['shape']}")
    write_readme(max_diff)
    write_fixture(signature, variables, predictions)


if __name__ == "__main__":
    main()
