#!/usr/bin/env python3
"""Export small random-weight Keras 3 models as TensorFlow SavedModels, with expectations.

Builds the models of MODELS below with fixed seeds (keras.utils.set_random_seed;
no training) and exports each of them two ways:

  <name>_export   model.export(dir): Keras 3's ExportArchive. It writes the
                  signatures `serve` and `serving_default` (the same endpoint
                  twice) and names each input alias after its keras.Input.
  <name>_tfsave   tf.saved_model.save(model, dir): TensorFlow's own saver with
                  the model's default signature `serving_default`, whose input
                  aliases are `inputs`, `inputs_1`, ... rather than the
                  keras.Input names.

Every weight that Keras would initialise to a constant gets a random value, so
that each one changes the result: biases and LayerNormalization/
BatchNormalization betas get normal(0, 0.1) noise added, gammas are drawn
from uniform(0.5, 1.5), BatchNormalization moving means from normal(0, 0.5)
and moving variances from uniform(0.5, 2). Kernels, recurrent kernels and
embeddings keep Keras' (seeded) random initialisers.

Outputs (paths relative to the repository root; the script deletes
tests/fixtures/savedmodels/ and writes it anew):

  tests/fixtures/savedmodels/<name>_<export|tfsave>/1/
        the SavedModel as TensorFlow wrote it: saved_model.pb, fingerprint.pb,
        variables/variables.{index,data-00000-of-00001}, assets/ (if any)
  tests/fixtures/savedmodels/<name>_<export|tfsave>.json
        the expectations:
    "tensorflow", "keras"  the versions that wrote the SavedModel
    "model", "export", "description", "savedmodel"
                           model name, export method ("model.export" or
                           "tf.saved_model.save"), architecture, version dir
    "signatures"  every SignatureDef of the MetaGraphDef tagged "serve", read
                  from saved_model.pb with saved_model_pb2 (what
                  `saved_model_cli show --all` lists), __saved_model_init_op
                  included: {key: {"method_name", "inputs": {alias: {"name",
                  "dtype" ("DT_FLOAT", ...), "shape" (dims, -1 unknown; null
                  for unknown rank)}}, "outputs": {...}}}
    "inputs"      serving_default's input batch of 3 examples, per alias:
                  {"dtype" (numpy name), "shape", "values" (flat, row-major)};
                  floats are float32 normal(0, 1), token ids int32 in range
                  with at least one 0, all from np.random.default_rng(seed)
    "outputs"     per output alias, the same three keys: what
                  tf.saved_model.load(dir).signatures["serving_default"]
                  returns for "inputs" (the SavedModel is reloaded from disk),
                  floats as the exact float32 values
    "ops"         the sorted distinct op types serving_default can run: the
                  nodes of the MetaGraphDef's graph that its outputs depend on
                  (Placeholder, VarHandleOp, StatefulPartitionedCall, ...) and
                  every node of each library function they reach through
                  function-valued attributes (call nodes' `f`, While/
                  StatelessWhile `cond` and `body`, If/Case branches, ...) or
                  by calling a library function directly as an op
    "export_error"  only when the export (or reloading it) raised: the
                  exception; then there is no version directory and no
                  "signatures", "inputs", "outputs" or "ops"
  tests/fixtures/savedmodels/README.md
        a description of the fixtures, their signatures and op types

Models (input aliases as given to keras.Input; batch dimension first):

  mnist_cnn      image [28,28,1] -> Conv2D(32,3,relu) -> MaxPooling2D(2) ->
                 Flatten -> Dense(10, softmax)
  cnn_bn_dw      image [16,16,3] -> Conv2D(8,3,same,no bias) -> BatchNorm ->
                 ReLU(max 6) -> DepthwiseConv2D(3,strides 2,same) -> BatchNorm ->
                 ReLU -> AveragePooling2D(2,same) -> Conv2D(12,1) ->
                 GlobalAveragePooling2D -> Dropout(0.2) -> Dense(5)
  mlp_two_input  features [12], extra [4] -> Concatenate -> Dense(16) ->
                 LayerNormalization -> exact GELU -> Dense(8, tanh) ->
                 {"score": Dense(1, sigmoid), "logits": Dense(3)}
  simple_rnn     tokens int32 [7] -> Embedding(20,6) -> SimpleRNN(8) -> Dense(2)
  gru            sequence [6,5] -> GRU(8, return_sequences) -> GRU(4) -> Dense(3)
  lstm           sequence [6,5] -> LSTM(8) -> Dense(3, softmax)
  conv1d_text    sequence [10,4] -> Conv1D(6,3,causal) -> Conv1D(6,3,dilation 2)
                 -> GlobalMaxPooling1D -> Dense(2)
  sep_upsample   image [8,8,2] -> SeparableConv2D(4,3,same) ->
                 Conv2DTranspose(3,3,strides 2,same) -> UpSampling2D(2) ->
                 ZeroPadding2D(1) -> Conv2D(2,3) -> Flatten -> Dense(2)
  bilstm         sequence [5,3] -> Bidirectional(LSTM(4, return_sequences)) ->
                 TimeDistributed(Dense(2))
  leaky_elu_mlp  features [6] -> Dense(8) -> LeakyReLU(0.1) -> Dense(8, elu) ->
                 Dense(8, swish) -> Dense(8, softplus) -> Dense(2)

No export path raised with tensorflow-cpu 2.21.0 and keras 3.15.1; should
one raise with other versions, the script prints it, writes the JSON with
"export_error" only, and carries on.

The script runs TensorFlow on the CPU only (CUDA_VISIBLE_DEVICES="", so
recurrent layers never take the CudnnRNN path), with oneDNN off and one
thread, and checks that both exports of a model agree with each other and
with the Keras model in memory (rtol 1e-5, atol 1e-6). It prints one line
per export with its size and number of op types, and the total size.
Reruns with the same package versions give the same JSON files and README.
The SavedModel bytes may differ: fingerprint.pb holds a random uuid, and
model.export lists the checkpoint's second copy of each weight
(`_all_variables/N`) in an order that depends on object addresses.

Run from the repository root, in a virtualenv with requirements/scripts.txt:

    target/py/scripts/bin/python scripts/build_keras_savedmodels.py
"""

import os

os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import json
import pathlib
import shutil
import sys
import zlib

import numpy as np

import tensorflow as tf

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

import keras  # noqa: E402
from keras import layers  # noqa: E402
from tensorflow.core.framework import types_pb2  # noqa: E402
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "tests" / "fixtures" / "savedmodels"
README_PATH = OUT_DIR / "README.md"
VERSION = "1"
SIGNATURE = "serving_default"
SERVE_TAG = "serve"
BATCH = 3
# The model's weights come from keras.utils.set_random_seed(WEIGHT_SEED + its
# index in MODELS) and the extra random values from default_rng of the same
# seed; its input batch from default_rng(INPUT_SEED + crc32 of its name).
WEIGHT_SEED = 20260101
INPUT_SEED = 4242
RTOL = 1e-5
ATOL = 1e-6
SIZE_LIMIT = 3 * 1024 * 1024

EXPORTS = {
    "export": "model.export",
    "tfsave": "tf.saved_model.save",
}


# --- the models -----------------------------------------------------------------
#
# Each builder returns a Keras model; INPUTS says how to fill each named input:
# ("float", shape) for normal(0, 1) float32, ("tokens", shape, vocabulary) for
# int32 token ids.


def mnist_cnn():
    return keras.Sequential(
        [
            keras.Input((28, 28, 1), name="image"),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(10, activation="softmax"),
        ],
        name="mnist_cnn",
    )


def cnn_bn_dw():
    return keras.Sequential(
        [
            keras.Input((16, 16, 3), name="image"),
            layers.Conv2D(8, 3, padding="same", use_bias=False),
            layers.BatchNormalization(),
            layers.ReLU(max_value=6),
            layers.DepthwiseConv2D(3, strides=2, padding="same"),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.AveragePooling2D(2, padding="same"),
            layers.Conv2D(12, 1),
            layers.GlobalAveragePooling2D(),
            layers.Dropout(0.2),
            layers.Dense(5),
        ],
        name="cnn_bn_dw",
    )


def mlp_two_input():
    features = keras.Input((12,), name="features")
    extra = keras.Input((4,), name="extra")
    x = layers.Concatenate()([features, extra])
    x = layers.Dense(16)(x)
    x = layers.LayerNormalization()(x)
    # keras.activations.gelu defaults to approximate=False: the exact, erf form.
    x = layers.Activation("gelu")(x)
    x = layers.Dense(8, activation="tanh")(x)
    outputs = {
        "score": layers.Dense(1, activation="sigmoid", name="score")(x),
        "logits": layers.Dense(3, name="logits")(x),
    }
    return keras.Model([features, extra], outputs, name="mlp_two_input")


def simple_rnn():
    return keras.Sequential(
        [
            keras.Input((7,), dtype="int32", name="tokens"),
            layers.Embedding(20, 6),
            layers.SimpleRNN(8),
            layers.Dense(2),
        ],
        name="simple_rnn",
    )


def gru():
    return keras.Sequential(
        [
            keras.Input((6, 5), name="sequence"),
            layers.GRU(8, return_sequences=True),
            layers.GRU(4),
            layers.Dense(3),
        ],
        name="gru",
    )


def lstm():
    return keras.Sequential(
        [
            keras.Input((6, 5), name="sequence"),
            layers.LSTM(8),
            layers.Dense(3, activation="softmax"),
        ],
        name="lstm",
    )


def conv1d_text():
    return keras.Sequential(
        [
            keras.Input((10, 4), name="sequence"),
            layers.Conv1D(6, 3, padding="causal"),
            layers.Conv1D(6, 3, dilation_rate=2),
            layers.GlobalMaxPooling1D(),
            layers.Dense(2),
        ],
        name="conv1d_text",
    )


def sep_upsample():
    return keras.Sequential(
        [
            keras.Input((8, 8, 2), name="image"),
            layers.SeparableConv2D(4, 3, padding="same"),
            layers.Conv2DTranspose(3, 3, strides=2, padding="same"),
            layers.UpSampling2D(2),
            layers.ZeroPadding2D(1),
            layers.Conv2D(2, 3),
            layers.Flatten(),
            layers.Dense(2),
        ],
        name="sep_upsample",
    )


def bilstm():
    return keras.Sequential(
        [
            keras.Input((5, 3), name="sequence"),
            layers.Bidirectional(layers.LSTM(4, return_sequences=True)),
            layers.TimeDistributed(layers.Dense(2)),
        ],
        name="bilstm",
    )


def leaky_elu_mlp():
    return keras.Sequential(
        [
            keras.Input((6,), name="features"),
            layers.Dense(8),
            layers.LeakyReLU(negative_slope=0.1),
            layers.Dense(8, activation="elu"),
            layers.Dense(8, activation="swish"),
            layers.Dense(8, activation="softplus"),
            layers.Dense(2),
        ],
        name="leaky_elu_mlp",
    )


# name -> (builder, {input name: how to fill it}, description)
MODELS = {
    "mnist_cnn": (
        mnist_cnn,
        {"image": ("float", (28, 28, 1))},
        "the MNIST tutorial CNN: Conv2D(32,3,relu), MaxPooling2D(2), Flatten, "
        "Dense(10, softmax)",
    ),
    "cnn_bn_dw": (
        cnn_bn_dw,
        {"image": ("float", (16, 16, 3))},
        "Conv2D(8,3,same,no bias), BatchNormalization, ReLU(max 6), "
        "DepthwiseConv2D(3,strides 2,same), BatchNormalization, ReLU, "
        "AveragePooling2D(2,same), Conv2D(12,1), GlobalAveragePooling2D, "
        "Dropout(0.2), Dense(5)",
    ),
    "mlp_two_input": (
        mlp_two_input,
        {"features": ("float", (12,)), "extra": ("float", (4,))},
        "two inputs: Concatenate, Dense(16), LayerNormalization, exact GELU, "
        "Dense(8, tanh), outputs {score: Dense(1, sigmoid), logits: Dense(3)}",
    ),
    "simple_rnn": (
        simple_rnn,
        {"tokens": ("tokens", (7,), 20)},
        "int32 token ids: Embedding(20,6), SimpleRNN(8), Dense(2)",
    ),
    "gru": (
        gru,
        {"sequence": ("float", (6, 5))},
        "GRU(8, return_sequences), GRU(4), Dense(3)",
    ),
    "lstm": (
        lstm,
        {"sequence": ("float", (6, 5))},
        "LSTM(8), Dense(3, softmax)",
    ),
    "conv1d_text": (
        conv1d_text,
        {"sequence": ("float", (10, 4))},
        "Conv1D(6,3,causal), Conv1D(6,3,dilation 2), GlobalMaxPooling1D, Dense(2)",
    ),
    "sep_upsample": (
        sep_upsample,
        {"image": ("float", (8, 8, 2))},
        "SeparableConv2D(4,3,same), Conv2DTranspose(3,3,strides 2,same), "
        "UpSampling2D(2), ZeroPadding2D(1), Conv2D(2,3), Flatten, Dense(2)",
    ),
    "bilstm": (
        bilstm,
        {"sequence": ("float", (5, 3))},
        "Bidirectional(LSTM(4, return_sequences)), TimeDistributed(Dense(2))",
    ),
    "leaky_elu_mlp": (
        leaky_elu_mlp,
        {"features": ("float", (6,))},
        "Dense(8), LeakyReLU(0.1), Dense(8, elu), Dense(8, swish), "
        "Dense(8, softplus), Dense(2)",
    ),
}


def rel(path):
    return pathlib.Path(path).relative_to(ROOT).as_posix()


def build(name, index):
    builder, _, _ = MODELS[name]
    keras.backend.clear_session()
    keras.utils.set_random_seed(WEIGHT_SEED + index)
    model = builder()
    rng = np.random.default_rng(WEIGHT_SEED + index)
    for var in model.weights:
        value = np.asarray(var.numpy())
        shape = value.shape
        if var.name in ("bias", "beta"):
            value = value + rng.normal(0.0, 0.1, shape)
        elif var.name == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
        elif var.name == "moving_mean":
            value = rng.normal(0.0, 0.5, shape)
        elif var.name == "moving_variance":
            value = rng.uniform(0.5, 2.0, shape)
        else:
            continue
        var.assign(value.astype(np.float32))
    return model


def example_inputs(name):
    """Keras input name -> a batch of BATCH examples."""
    _, specs, _ = MODELS[name]
    rng = np.random.default_rng(INPUT_SEED + zlib.crc32(name.encode()))
    arrays = {}
    for input_name, spec in specs.items():
        if spec[0] == "float":
            arrays[input_name] = rng.normal(0.0, 1.0, (BATCH, *spec[1])).astype(np.float32)
        elif spec[0] == "tokens":
            _, shape, vocabulary = spec
            ids = rng.integers(1, vocabulary, (BATCH, *shape)).astype(np.int32)
            ids.flat[0] = 0
            ids.flat[-1] = vocabulary - 1
            arrays[input_name] = ids
        else:
            raise ValueError(spec)
    return arrays


def keras_outputs(model, arrays):
    """The in-memory model's outputs: output alias -> array (for the cross-check)."""
    feed = [tf.constant(arrays[t.name]) for t in model.inputs]
    result = model(feed if len(feed) > 1 else feed[0], training=False)
    if isinstance(result, dict):
        return {k: np.asarray(v) for k, v in result.items()}
    return {"output_0": np.asarray(result)}


# --- reading saved_model.pb -----------------------------------------------------


def serve_meta_graph(version_dir):
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    found = [mg for mg in sm.meta_graphs if set(mg.meta_info_def.tags) == {SERVE_TAG}]
    if len(found) != 1:
        tags = [sorted(mg.meta_info_def.tags) for mg in sm.meta_graphs]
        raise RuntimeError(f"expected one MetaGraphDef tagged 'serve', found tag sets {tags}")
    return found[0]


def tensor_info(info):
    if info.WhichOneof("encoding") not in (None, "name"):
        raise RuntimeError(f"unsupported TensorInfo encoding {info.WhichOneof('encoding')}")
    shape = None if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim]
    return {"name": info.name, "dtype": types_pb2.DataType.Name(info.dtype), "shape": shape}


def signatures(meta_graph):
    out = {}
    for key in sorted(meta_graph.signature_def):
        sig = meta_graph.signature_def[key]
        out[key] = {
            "method_name": sig.method_name,
            "inputs": {a: tensor_info(sig.inputs[a]) for a in sorted(sig.inputs)},
            "outputs": {a: tensor_info(sig.outputs[a]) for a in sorted(sig.outputs)},
        }
    return out


def node_name(tensor):
    return tensor.lstrip("^").split(":")[0]


def attr_functions(attr_map):
    """Names of the functions that a node's attributes refer to."""
    names = []
    for key in sorted(attr_map):
        value = attr_map[key]
        kind = value.WhichOneof("value")
        if kind == "func":
            names.append(value.func.name)
        elif kind == "list":
            names.extend(f.name for f in value.list.func)
    return names


def reachable_ops(meta_graph, signature_key):
    """Op types of the graph nodes the signature's outputs need, and of the
    library functions those reach (see "ops" in the module docstring)."""
    graph = meta_graph.graph_def
    library = {f.signature.name: f for f in graph.library.function}
    nodes = {n.name: n for n in graph.node}
    sig = meta_graph.signature_def[signature_key]

    ops = set()
    functions = []
    seen_nodes = set()
    stack = [node_name(info.name) for info in sig.outputs.values()]
    while stack:
        name = stack.pop()
        if name in seen_nodes:
            continue
        seen_nodes.add(name)
        node = nodes[name]
        if node.op in library:
            functions.append(node.op)
        else:
            ops.add(node.op)
        functions.extend(attr_functions(node.attr))
        stack.extend(node_name(i) for i in node.input)

    seen_functions = set()
    while functions:
        fname = functions.pop()
        if fname in seen_functions:
            continue
        if fname not in library:
            raise RuntimeError(f"function {fname} is not in the graph's library")
        seen_functions.add(fname)
        for node in library[fname].node_def:
            if node.op in library:
                functions.append(node.op)
            else:
                ops.add(node.op)
            functions.extend(attr_functions(node.attr))
    return sorted(ops)


# --- exporting and checking ---------------------------------------------------------


def export(model, kind, version_dir):
    if kind == "export":
        model.export(str(version_dir), verbose=False)
    elif kind == "tfsave":
        tf.saved_model.save(model, str(version_dir))
    else:
        raise ValueError(kind)


def feeds_for(signature, arrays):
    """serving_default input alias -> the array of the Keras input it stands for.

    Aliases named after a Keras input take that input; the others (such as
    tf.saved_model.save's `inputs`, `inputs_1`) the one Keras input of the
    same dtype and shape.
    """
    feeds = {}
    unused = dict(arrays)
    for alias, info in signature["inputs"].items():
        if alias in unused:
            feeds[alias] = unused.pop(alias)
    for alias, info in signature["inputs"].items():
        if alias in feeds:
            continue
        dtype = tf.dtypes.as_dtype(types_pb2.DataType.Value(info["dtype"])).as_numpy_dtype

        def fits(array):
            shape = info["shape"]
            return array.dtype == dtype and shape is not None and len(shape) == array.ndim and all(
                d in (-1, n) for d, n in zip(shape, array.shape)
            )

        matches = [k for k, a in unused.items() if fits(a)]
        if len(matches) != 1:
            raise RuntimeError(f"input alias {alias!r} {info}: matching Keras inputs {matches}")
        feeds[alias] = unused.pop(matches[0])
    if unused:
        raise RuntimeError(f"Keras inputs {sorted(unused)} have no alias in {SIGNATURE}")
    return feeds


def tensor_json(array):
    array = np.asarray(array)
    if array.dtype == np.float32:
        values = [float(v) for v in array.ravel()]
    elif array.dtype.kind in "iu":
        values = [int(v) for v in array.ravel()]
    else:
        raise RuntimeError(f"no JSON form for dtype {array.dtype}")
    return {"dtype": array.dtype.name, "shape": list(array.shape), "values": values}


def run_serving_default(version_dir, feeds):
    """serving_default of the SavedModel reloaded from disk."""
    loaded = tf.saved_model.load(str(version_dir))
    fn = loaded.signatures[SIGNATURE]
    result = fn(**{alias: tf.constant(array) for alias, array in feeds.items()})
    return {alias: result[alias].numpy() for alias in sorted(result)}


def dir_size(path):
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def export_fixture(name, kind, model, arrays, reference):
    """Export one way, write the JSON; returns (summary dict, outputs or None)."""
    _, _, description = MODELS[name]
    fixture = f"{name}_{kind}"
    model_dir = OUT_DIR / fixture
    version_dir = model_dir / VERSION
    doc = {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "model": name,
        "export": EXPORTS[kind],
        "description": description,
        "savedmodel": rel(version_dir),
    }
    outputs = None
    try:
        model_dir.mkdir(parents=True)
        export(model, kind, version_dir)
        meta_graph = serve_meta_graph(version_dir)
        sigs = signatures(meta_graph)
        if SIGNATURE not in sigs:
            raise RuntimeError(f"no {SIGNATURE} signature; signatures {sorted(sigs)}")
        feeds = feeds_for(sigs[SIGNATURE], arrays)
        outputs = run_serving_default(version_dir, feeds)
        ops = reachable_ops(meta_graph, SIGNATURE)
    except Exception as err:  # noqa: BLE001 - any failure of this export path is recorded
        shutil.rmtree(model_dir, ignore_errors=True)
        message = f"{type(err).__name__}: {err}".strip().splitlines()[0]
        doc["export_error"] = message
        print(f"{rel(model_dir)}: EXPORT FAILED ({EXPORTS[kind]}): {message}")
        write_json(OUT_DIR / f"{fixture}.json", doc)
        return {"fixture": fixture, "error": message}, None

    # The reloaded SavedModel must compute what the Keras model computes.
    if sorted(outputs) != sorted(reference):
        sys.exit(f"{fixture}: outputs {sorted(outputs)}, Keras model's {sorted(reference)}")
    for alias, want in reference.items():
        np.testing.assert_allclose(
            outputs[alias], want, rtol=RTOL, atol=ATOL, err_msg=f"{fixture}: {alias}"
        )

    doc["signatures"] = sigs
    doc["inputs"] = {alias: tensor_json(feeds[alias]) for alias in sorted(feeds)}
    doc["outputs"] = {alias: tensor_json(outputs[alias]) for alias in sorted(outputs)}
    doc["ops"] = ops
    write_json(OUT_DIR / f"{fixture}.json", doc)
    size = dir_size(model_dir)
    print(f"{rel(model_dir)}: {size} bytes, {len(ops)} op types, signatures {sorted(sigs)}")
    summary = {"fixture": fixture, "size": size, "ops": ops, "signatures": sigs}
    return summary, outputs


def write_json(path, doc):
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


# --- README -------------------------------------------------------------------------


def aliases(infos):
    return ", ".join(
        f"`{a}` {i['dtype'][3:].lower()}{i['shape'] if i['shape'] is not None else '[?]'}"
        for a, i in infos.items()
    )


def write_readme(summaries):
    rows = []
    for s in summaries:
        name, kind = s["fixture"].rsplit("_", 1)
        if "error" in s:
            rows.append(f"| `{s['fixture']}` | {EXPORTS[kind]} | export failed: {s['error']} | | |")
            continue
        sig = s["signatures"][SIGNATURE]
        keys = ", ".join(f"`{k}`" for k in s["signatures"])
        rows.append(
            f"| `{s['fixture']}` | {EXPORTS[kind]} | {keys} | "
            f"{aliases(sig['inputs'])} | {aliases(sig['outputs'])} |"
        )
    models = "\n".join(f"- `{name}`: {desc}" for name, (_, _, desc) in MODELS.items())
    table = "\n".join(rows)
    # Fixtures with the same op types share one line.
    groups = {}
    for s in summaries:
        if "error" not in s:
            groups.setdefault(tuple(s["ops"]), []).append(s["fixture"])
    op_lines = "\n".join(
        f"- {', '.join(f'`{f}`' for f in fixtures)}: {', '.join(ops)}"
        for ops, fixtures in groups.items()
    )
    README_PATH.write_text(f"""# Keras 3 SavedModel fixtures

Small Keras 3 models with random weights (seeded, no training), each exported
as a TensorFlow SavedModel two ways:

- `<model>_export/1/`: `model.export(dir)`, Keras 3's `ExportArchive`. It
  writes the same endpoint under two signature keys, `serve` and
  `serving_default`, and names the input aliases after the `keras.Input`
  names.
- `<model>_tfsave/1/`: `tf.saved_model.save(model, dir)`. Only
  `serving_default`, with input aliases `inputs`, `inputs_1`, ... (in the
  order of the model's inputs) instead of the `keras.Input` names.

Both kinds also hold the `__saved_model_init_op` signature (output of dtype
DT_INVALID and unknown rank). A model with one output names it `output_0`;
`mlp_two_input` returns a dict and its aliases are the dict's keys.

Next to each directory, `<model>_<export|tfsave>.json` holds what TensorFlow
makes of it (tensorflow-cpu {tf.__version__}, keras {keras.__version__}):

- `signatures`: every SignatureDef of the MetaGraphDef tagged `serve`, as
  `saved_model_cli show --all` lists it (method name; per alias the tensor
  name, dtype and shape, `null` for unknown rank);
- `inputs`: a batch of 3 examples for `serving_default` (float32 normal(0, 1),
  int32 token ids including 0), per alias its dtype, shape and flat values;
- `outputs`: what `tf.saved_model.load(dir).signatures["serving_default"]`
  returns for that batch, exact float32 values;
- `ops`: the op types `serving_default` can run, through function calls,
  While/If bodies and branches;
- `export_error` instead of the above when that export raised.

## Models

{models}

## Fixtures

| fixture | written by | signatures | serving_default inputs | serving_default outputs |
|---|---|---|---|---|
{table}

All shapes have the batch dimension (-1) first.

## Op types

The `ops` of each fixture: what `serving_default` runs, from the graph nodes
its outputs depend on through every function they call (While loops'
`cond` and `body` included).

{op_lines}

## Rebuilding

From the repository root, in the virtualenv of `requirements/scripts.txt`:

    target/py/scripts/bin/python scripts/build_keras_savedmodels.py

The script deletes this directory and writes it anew (README included). With
the same package versions the JSON files come out the same; the SavedModel
files may differ in bytes (`fingerprint.pb` holds a random uuid, and
`model.export` orders the `_all_variables/N` copies of the weights by object
address). The test
`tests/python/official/test_savedmodels.py` serves every fixture and checks
its signatures and outputs.
""")
    print(f"wrote {rel(README_PATH)}")


def main():
    if OUT_DIR.exists():
        shutil.rmtree(OUT_DIR)
    OUT_DIR.mkdir(parents=True)

    summaries = []
    for index, name in enumerate(MODELS):
        model = build(name, index)
        arrays = example_inputs(name)
        reference = keras_outputs(model, arrays)
        answers = {}
        for kind in EXPORTS:
            summary, outputs = export_fixture(name, kind, model, arrays, reference)
            summaries.append(summary)
            if outputs is not None:
                answers[kind] = outputs
        if len(answers) == 2:
            first, second = answers.values()
            for alias in first:
                np.testing.assert_allclose(
                    first[alias], second[alias], rtol=RTOL, atol=ATOL,
                    err_msg=f"{name}: {alias} differs between the two exports",
                )

    write_readme(summaries)
    total = dir_size(OUT_DIR)
    failed = [s["fixture"] for s in summaries if "error" in s]
    print(f"total: {total} bytes ({total / 1024 / 1024:.2f} MiB) in {rel(OUT_DIR)}")
    if failed:
        print(f"failed exports: {', '.join(failed)}")
    if total > SIZE_LIMIT:
        print(f"WARNING: more than {SIZE_LIMIT} bytes; make the models smaller")


if __name__ == "__main__":
    main()
