#!/usr/bin/env python3
"""Build TensorFlow 1 style SavedModels (graph mode, tf.compat.v1), with expectations.

Legacy TensorFlow Serving deployments hold SavedModels written by TensorFlow 1's
SavedModelBuilder: one MetaGraphDef tagged `serve` whose top-level GraphDef
holds the whole model (no function library), variables created with
get_variable, and the restore ops of a tf.compat.v1.train.Saver
(`save/RestoreV2`, `save/Assign*`, `save/restore_all`) in the same graph. The
server restores the variables by feeding the checkpoint prefix
(`<dir>/variables/variables`) to the saver's filename tensor and running its
restore op, then runs the signatures' tensors. This script writes such models
with tensorflow-cpu 2.21.0, through tf.compat.v1 only:

  - each model is built in its own tf.Graph and tf.compat.v1.Session;
  - every variable comes from tf.compat.v1.get_variable, its initializer a
    constant_initializer holding seeded random values (numpy default_rng; no
    training), with use_resource=False (VariableV2 "ref" variables, read
    through `<var>/read` Identity nodes) or use_resource=True (VarHandleOp,
    read with ReadVariableOp);
  - tf.compat.v1.saved_model.Builder.add_meta_graph_and_variables(sess,
    ["serve"], signature_def_map=...) saves the graph and the variables, with
    signatures from tf.compat.v1.saved_model.predict_signature_def (or
    signature_def_utils.build_signature_def), method
    tensorflow/serving/predict.

The Builder adds a sharded V2 Saver: SaverDef restore_op_name
"save/restore_all", filename_tensor_name "save/Const:0". save/restore_all is
a NoOp with a control input on save/restore_shard, a NoOp with control inputs
on one assign node per variable; each assign takes the variable (input 0) and
an output `save/RestoreV2:k` of the RestoreV2 node (input 1; directly for
ref variables' Assign, through an Identity `save/Identity_N` for resource
variables' AssignVariableOp), and `save/RestoreV2/tensor_names` (a string
Const) holds the checkpoint key of output k. The checkpoint keys are the
variable names (`dense1/kernel`, ...), with no object graph; the
MetaGraphDef has no object_graph_def and the Builder writes no
fingerprint.pb.

Models (float32; batch dimension first; signature aliases in quotes):

  tf1_mlp_refvars     "x" [None,6] -> matmul + bias_add + relu (8 units) ->
                      matmul + bias ("logits", 3) -> softmax
                      ("probabilities"); ref variables (VariableV2)
  tf1_mlp_resource    the same with resource variables (VarHandleOp)
  tf1_cnn             "x" [None,8,8,1] -> conv2d 3x3 (4 filters, SAME) +
                      bias_add + relu -> max_pool2d 2x2 (stride 2) ->
                      reshape [-1, 64] -> matmul + bias ("logits", 3);
                      resource variables
  tf1_two_signatures  "x" [None,5] -> matmul + bias_add + tanh ("embedding",
                      4) -> matmul + bias -> sigmoid ("scores", 2); ref
                      variables; two signatures on one graph:
                      `serving_default` (x -> scores) and `embed`
                      (x -> embedding, an intermediate tensor)

Outputs (paths relative to the repository root; the script deletes
tests/fixtures/savedmodels_tf1/ and writes it anew):

  tests/fixtures/savedmodels_tf1/<name>/1/
        the SavedModel as the Builder wrote it: saved_model.pb,
        variables/variables.{index,data-00000-of-00001}
  tests/fixtures/savedmodels_tf1/<name>.json
        the expectations, in the format of scripts/build_keras_savedmodels.py:
    "tensorflow"  the version that wrote the SavedModel
    "keras"       null (no Keras involved)
    "model", "export", "description", "savedmodel"
                  model name, "tf.compat.v1.saved_model.Builder", the
                  architecture, the version directory
    "signatures"  every SignatureDef of the MetaGraphDef tagged "serve" (what
                  `saved_model_cli show --all` lists): {key: {"method_name",
                  "inputs": {alias: {"name", "dtype", "shape"}}, "outputs":
                  {...}}}
    "inputs"      serving_default's input batch of 3 examples, per alias
                  {"dtype", "shape", "values" (flat, row-major)}: float32
                  normal(0, 1) from np.random.default_rng
    "outputs"     per serving_default output alias, the same three keys: the
                  result of loading the SavedModel back from disk as
                  TensorFlow Serving does (tf.compat.v1.Session +
                  tf.compat.v1.saved_model.loader.load with tags ["serve"])
                  and sess.run on the signature's tensor names; exact float32
    "signature_outputs"
                  the same for every other signature whose inputs are those
                  of serving_default: {key: {alias: tensor}} (only
                  tf1_two_signatures has one, `embed`)
    "ops"         the sorted op types of the top-level GraphDef nodes that
                  serving_default's outputs depend on (inputs walked backward
                  from the output tensor names; control inputs not followed)
    "restore"     the SaverDef's "restore_op_name" and
                  "filename_tensor_name", and "assignments": per variable
                  (sorted by name) the assign node and op, the variable node
                  and op, the assign node's value input as the graph writes
                  it ("value": the RestoreV2 output, "save/RestoreV2" for
                  output 0, or the Identity of it), the RestoreV2
                  output it comes from ("restored": "save/RestoreV2:k") and
                  that output's checkpoint key (tensor_names[k])
    "checkpoint"  every key of variables/variables (tf.train.load_checkpoint)
                  with its dtype (numpy name) and shape
  tests/fixtures/savedmodels_tf1/README.md
        a description of the fixtures, their signatures and op types

The script runs on the CPU only, with oneDNN off and one thread; it checks
that the reloaded SavedModel computes what the session that built it
computed (rtol 1e-6) and that the graph has no function library. It prints
one line per fixture with its size and op types, and the total size. Reruns
with the same package versions give the same files, byte for byte.

Run from the repository root, in a virtualenv with requirements/scripts.txt:

    target/py/scripts/bin/python scripts/build_tf1_savedmodels.py
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


sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
# The saved_model.pb readers the Keras fixtures use (same JSON format).
from build_keras_savedmodels import node_name, serve_meta_graph, signatures  # noqa: E402

tf.get_logger().setLevel("ERROR")
v1 = tf.compat.v1

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "tests" / "fixtures" / "savedmodels_tf1"
README_PATH = OUT_DIR / "README.md"
VERSION = "1"
SIGNATURE = "serving_default"
SERVE_TAG = "serve"
EXPORT = "tf.compat.v1.saved_model.Builder"
BATCH = 3
# A model's weights come from default_rng(WEIGHT_SEED + its index in MODELS),
# its input batch from default_rng(INPUT_SEED + crc32 of its name).
WEIGHT_SEED = 20260301
INPUT_SEED = 4343
RTOL = 1e-6
ATOL = 1e-7


def session_config():
    return v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)


# --- the models -----------------------------------------------------------------
#
# Each builder runs inside a fresh tf.Graph, takes a numpy Generator for the
# weights and returns (signature_def_map, {alias: input tensor} of
# serving_default, {alias: output tensor} of serving_default).


def variable(rng, name, shape, resource, scale=None):
    """get_variable with a seeded random constant initializer.

    Kernels (rank >= 2) are normal(0, 1/sqrt(fan_in)) unless `scale` is given,
    biases normal(0, 0.1)."""
    if scale is None:
        scale = 1.0 / np.sqrt(np.prod(shape[:-1])) if len(shape) >= 2 else 0.1
    value = rng.normal(0.0, scale, shape).astype(np.float32)
    return v1.get_variable(
        name,
        shape=shape,
        dtype=tf.float32,
        initializer=v1.constant_initializer(value),
        use_resource=resource,
    )


def mlp(rng, resource):
    x = v1.placeholder(tf.float32, [None, 6], name="x")
    with v1.variable_scope("dense1"):
        w1 = variable(rng, "kernel", [6, 8], resource)
        b1 = variable(rng, "bias", [8], resource)
    with v1.variable_scope("dense2"):
        w2 = variable(rng, "kernel", [8, 3], resource)
        b2 = variable(rng, "bias", [3], resource)
    hidden = tf.nn.relu(tf.nn.bias_add(tf.matmul(x, w1), b1), name="hidden")
    logits = tf.add(tf.matmul(hidden, w2), b2, name="logits")
    probabilities = tf.nn.softmax(logits, name="probabilities")
    inputs = {"x": x}
    outputs = {"probabilities": probabilities, "logits": logits}
    sigs = {SIGNATURE: v1.saved_model.predict_signature_def(inputs, outputs)}
    return sigs, inputs, outputs


def tf1_mlp_refvars(rng):
    return mlp(rng, resource=False)


def tf1_mlp_resource(rng):
    return mlp(rng, resource=True)


def tf1_cnn(rng):
    x = v1.placeholder(tf.float32, [None, 8, 8, 1], name="x")
    with v1.variable_scope("conv"):
        kernel = variable(rng, "kernel", [3, 3, 1, 4], True)
        bias = variable(rng, "bias", [4], True)
    with v1.variable_scope("dense"):
        w = variable(rng, "kernel", [64, 3], True)
        b = variable(rng, "bias", [3], True)
    conv = tf.nn.conv2d(x, kernel, strides=[1, 1, 1, 1], padding="SAME", name="conv2d")
    relu = tf.nn.relu(tf.nn.bias_add(conv, bias), name="relu")
    pool = tf.nn.max_pool2d(relu, ksize=2, strides=2, padding="VALID", name="pool")
    flat = tf.reshape(pool, [-1, 4 * 4 * 4], name="flatten")
    logits = tf.add(tf.matmul(flat, w), b, name="logits")
    inputs = {"x": x}
    outputs = {"logits": logits}
    sigs = {SIGNATURE: v1.saved_model.predict_signature_def(inputs, outputs)}
    return sigs, inputs, outputs


def tf1_two_signatures(rng):
    x = v1.placeholder(tf.float32, [None, 5], name="x")
    with v1.variable_scope("embed"):
        w1 = variable(rng, "kernel", [5, 4], False)
        b1 = variable(rng, "bias", [4], False)
    with v1.variable_scope("head"):
        w2 = variable(rng, "kernel", [4, 2], False)
        b2 = variable(rng, "bias", [2], False)
    embedding = tf.tanh(tf.nn.bias_add(tf.matmul(x, w1), b1), name="embedding")
    scores = tf.sigmoid(tf.add(tf.matmul(embedding, w2), b2), name="scores")
    inputs = {"x": x}
    outputs = {"scores": scores}
    build_info = v1.saved_model.utils.build_tensor_info
    sigs = {
        SIGNATURE: v1.saved_model.predict_signature_def(inputs, outputs),
        "embed": v1.saved_model.signature_def_utils.build_signature_def(
            inputs={"x": build_info(x)},
            outputs={"embedding": build_info(embedding)},
            method_name=v1.saved_model.signature_constants.PREDICT_METHOD_NAME,
        ),
    }
    return sigs, inputs, outputs


# name -> (builder, {input alias: shape without the batch dimension}, description)
MODELS = {
    "tf1_mlp_refvars": (
        tf1_mlp_refvars,
        {"x": (6,)},
        "x [None,6]: matmul + bias_add + relu (8), matmul + bias (logits, 3), "
        "softmax (probabilities); ref variables (VariableV2)",
    ),
    "tf1_mlp_resource": (
        tf1_mlp_resource,
        {"x": (6,)},
        "the same MLP with resource variables (VarHandleOp, ReadVariableOp)",
    ),
    "tf1_cnn": (
        tf1_cnn,
        {"x": (8, 8, 1)},
        "x [None,8,8,1]: conv2d 3x3x4 SAME + bias_add + relu, max_pool2d 2x2 "
        "stride 2, reshape [-1,64], matmul + bias (logits, 3); resource variables",
    ),
    "tf1_two_signatures": (
        tf1_two_signatures,
        {"x": (5,)},
        "x [None,5]: matmul + bias_add + tanh (embedding, 4), matmul + bias, "
        "sigmoid (scores, 2); ref variables; signatures serving_default "
        "(scores) and embed (embedding)",
    ),
}


def rel(path):
    return pathlib.Path(path).relative_to(ROOT).as_posix()


def example_inputs(name):
    _, specs, _ = MODELS[name]
    rng = np.random.default_rng(INPUT_SEED + zlib.crc32(name.encode()))
    return {
        alias: rng.normal(0.0, 1.0, (BATCH, *shape)).astype(np.float32)
        for alias, shape in specs.items()
    }


# --- reading saved_model.pb -------------------------------------------------------


def reachable_ops(meta_graph, signature_key):
    """Op types of the top-level nodes the signature's outputs depend on
    (data inputs only; control inputs are not followed)."""
    nodes = {n.name: n for n in meta_graph.graph_def.node}
    sig = meta_graph.signature_def[signature_key]
    ops = set()
    seen = set()
    stack = [node_name(info.name) for info in sig.outputs.values()]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        node = nodes[name]
        ops.add(node.op)
        stack.extend(node_name(i) for i in node.input if not i.startswith("^"))
    return sorted(ops)


def restore_structure(meta_graph):
    """The SaverDef's restore op and filename tensor, and per variable the
    assign node that restores it, walked from the restore op."""
    saver = meta_graph.saver_def
    nodes = {n.name: n for n in meta_graph.graph_def.node}

    def const_strings(name):
        return [s.decode() for s in nodes[name].attr["value"].tensor.string_val]

    assignments = []
    seen = set()
    stack = [node_name(saver.restore_op_name)]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        node = nodes[name]
        if node.op in ("Assign", "AssignVariableOp"):
            var = nodes[node_name(node.input[0])]
            value = node.input[1]
            while nodes[node_name(value)].op == "Identity":
                value = nodes[node_name(value)].input[0]
            restore = nodes[node_name(value)]
            if restore.op != "RestoreV2":
                raise RuntimeError(f"{name} assigns {value} ({restore.op}), not a RestoreV2 output")
            index = int(value.split(":")[1]) if ":" in value else 0
            assignments.append(
                {
                    "variable": var.name,
                    "variable_op": var.op,
                    "assign": node.name,
                    "assign_op": node.op,
                    "value": node.input[1],
                    "restored": f"{restore.name}:{index}",
                    "key": const_strings(node_name(restore.input[1]))[index],
                }
            )
            continue
        stack.extend(node_name(i) for i in node.input)
    return {
        "restore_op_name": saver.restore_op_name,
        "filename_tensor_name": saver.filename_tensor_name,
        "assignments": sorted(assignments, key=lambda a: a["variable"]),
    }


def checkpoint_keys(version_dir):
    reader = tf.train.load_checkpoint(str(version_dir / "variables" / "variables"))
    dtypes = reader.get_variable_to_dtype_map()
    shapes = reader.get_variable_to_shape_map()
    return {
        key: {"dtype": dtypes[key].as_numpy_dtype.__name__ if dtypes[key] != tf.string else "string",
              "shape": list(shapes[key])}
        for key in sorted(dtypes)
    }


# --- building, reloading and checking ---------------------------------------------


def build_and_save(name, index, arrays, version_dir):
    """Builds the model in a fresh graph, saves it; returns the session's
    serving_default outputs for `arrays` (before saving)."""
    builder_fn, _, _ = MODELS[name]
    rng = np.random.default_rng(WEIGHT_SEED + index)
    graph = tf.Graph()
    with graph.as_default():
        sigs, inputs, outputs = builder_fn(rng)
        with v1.Session(graph=graph, config=session_config()) as sess:
            sess.run(v1.global_variables_initializer())
            feed = {inputs[a]: arrays[a] for a in inputs}
            reference = sess.run(outputs, feed_dict=feed)
            builder = v1.saved_model.Builder(str(version_dir))
            builder.add_meta_graph_and_variables(
                sess, [v1.saved_model.tag_constants.SERVING], signature_def_map=sigs
            )
            builder.save()
    return reference


def run_loaded(version_dir, arrays):
    """Every signature whose inputs are serving_default's, run on the
    SavedModel loaded back from disk as TensorFlow Serving loads it."""
    graph = tf.Graph()
    with v1.Session(graph=graph, config=session_config()) as sess:
        meta = v1.saved_model.loader.load(sess, [SERVE_TAG], str(version_dir))
        results = {}
        for key in sorted(meta.signature_def):
            sig = meta.signature_def[key]
            if set(sig.inputs) != set(arrays):
                continue
            feed = {sig.inputs[a].name: arrays[a] for a in sig.inputs}
            fetch = {a: sig.outputs[a].name for a in sorted(sig.outputs)}
            results[key] = sess.run(fetch, feed_dict=feed)
    return results


def tensor_json(array):
    array = np.asarray(array)
    if array.dtype != np.float32:
        raise RuntimeError(f"no JSON form for dtype {array.dtype}")
    return {
        "dtype": array.dtype.name,
        "shape": list(array.shape),
        "values": [float(v) for v in array.ravel()],
    }


def dir_size(path):
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_json(path, doc):
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def make_fixture(name, index):
    _, _, description = MODELS[name]
    model_dir = OUT_DIR / name
    version_dir = model_dir / VERSION
    model_dir.mkdir(parents=True)
    arrays = example_inputs(name)
    reference = build_and_save(name, index, arrays, version_dir)

    meta_graph = serve_meta_graph(version_dir)
    if meta_graph.graph_def.library.function:
        sys.exit(f"{name}: the graph has a function library")
    sigs = signatures(meta_graph)
    if set(sigs[SIGNATURE]["inputs"]) != set(arrays):
        sys.exit(f"{name}: {SIGNATURE} inputs {sorted(sigs[SIGNATURE]['inputs'])}")
    results = run_loaded(version_dir, arrays)
    outputs = results.pop(SIGNATURE)
    if sorted(outputs) != sorted(reference):
        sys.exit(f"{name}: outputs {sorted(outputs)}, the session's {sorted(reference)}")
    for alias, want in reference.items():
        np.testing.assert_allclose(outputs[alias], want, rtol=RTOL, atol=ATOL, err_msg=f"{name}: {alias}")
    ops = reachable_ops(meta_graph, SIGNATURE)
    restore = restore_structure(meta_graph)
    checkpoint = checkpoint_keys(version_dir)
    if sorted(a["key"] for a in restore["assignments"]) != sorted(checkpoint):
        sys.exit(f"{name}: restored keys differ from the checkpoint's {sorted(checkpoint)}")

    doc = {
        "tensorflow": tf.__version__,
        "keras": None,
        "model": name,
        "export": EXPORT,
        "description": description,
        "savedmodel": rel(version_dir),
        "signatures": sigs,
        "inputs": {alias: tensor_json(arrays[alias]) for alias in sorted(arrays)},
        "outputs": {alias: tensor_json(outputs[alias]) for alias in sorted(outputs)},
    }
    if results:
        doc["signature_outputs"] = {
            key: {alias: tensor_json(v) for alias, v in sorted(out.items())}
            for key, out in sorted(results.items())
        }
    doc["ops"] = ops
    doc["restore"] = restore
    doc["checkpoint"] = checkpoint
    write_json(OUT_DIR / f"{name}.json", doc)
    size = dir_size(model_dir)
    print(f"{rel(model_dir)}: {size} bytes, signatures {sorted(sigs)}, ops {', '.join(ops)}")
    return {
        "fixture": name,
        "size": size,
        "ops": ops,
        "signatures": sigs,
        "restore": restore,
        "object_graph": meta_graph.HasField("object_graph_def"),
    }


# --- README -----------------------------------------------------------------------


def aliases(infos):
    return ", ".join(
        f"`{a}` {i['dtype'][3:].lower()}{i['shape'] if i['shape'] is not None else '[?]'}"
        for a, i in infos.items()
    )


def write_readme(summaries):
    models = "\n".join(f"- `{name}`: {desc}" for name, (_, _, desc) in MODELS.items())
    rows = []
    for s in summaries:
        for key, sig in s["signatures"].items():
            rows.append(
                f"| `{s['fixture']}` | `{key}` | {aliases(sig['inputs'])} | {aliases(sig['outputs'])} |"
            )
    table = "\n".join(rows)
    op_lines = "\n".join(f"- `{s['fixture']}`: {', '.join(s['ops'])}" for s in summaries)
    restore_lines = []
    for s in summaries:
        restore_lines.append(f"- `{s['fixture']}`:")
        for a in s["restore"]["assignments"]:
            direct = node_name(a["value"]) == node_name(a["restored"])
            via = "" if direct else f" <- `{a['value']}` (Identity)"
            restore_lines.append(
                f"  - `{a['variable']}` ({a['variable_op']}) <- `{a['assign']}` "
                f"({a['assign_op']}){via} <- `{a['restored']}` (key `{a['key']}`)"
            )
    restore_text = "\n".join(restore_lines)
    README_PATH.write_text(f"""# TensorFlow 1 style SavedModel fixtures

Small models with seeded random weights (no training), written the way
TensorFlow 1 programs wrote SavedModels for TensorFlow Serving: in graph mode
through `tf.compat.v1` (a `tf.Graph` and a `tf.compat.v1.Session`),
variables made with `tf.compat.v1.get_variable` (constant initializers
holding numpy `default_rng` values), saved with
`tf.compat.v1.saved_model.Builder.add_meta_graph_and_variables` under the
tag `serve` with `tensorflow/serving/predict` signatures. Made with
tensorflow-cpu {tf.__version__}.

Unlike `tf.saved_model.save` and Keras exports, these SavedModels have:

- one MetaGraphDef, whose top-level GraphDef is the whole model: no function
  library, no `StatefulPartitionedCall`, no `object_graph_def`, no
  `__saved_model_init_op` signature and no `fingerprint.pb`;
- ref variables (`VariableV2`, read through `<variable>/read` Identity nodes)
  or resource variables (`VarHandleOp`, read with `ReadVariableOp`) as
  top-level nodes;
- the restore ops of a sharded V2 `Saver` in the same graph. The SaverDef
  names the restore op `save/restore_all` and the filename tensor
  `save/Const:0` (a `PlaceholderWithDefault`); a loader feeds
  `<version>/variables/variables` to the filename tensor and runs the
  restore op, as TensorFlow Serving does. `save/restore_all` (NoOp) has a
  control input on `save/restore_shard` (NoOp), which has control inputs on
  one assign node per variable. `save/RestoreV2` reads the keys of the string
  Const `save/RestoreV2/tensor_names` (sorted; the variable names, such as
  `dense1/kernel`) and output `k` is the tensor of key `k`. A ref variable's
  `save/Assign_N` (Assign) takes the variable and `save/RestoreV2:k`
  directly; a resource variable's `save/AssignVariableOp_N` takes the
  handle and `save/Identity_M`, an Identity of `save/RestoreV2:k`.

The checkpoint (`variables/variables.index`, `.data-00000-of-00001`) holds one
key per variable, named after it, and nothing else (no object graph).

Next to each directory, `<model>.json` has the format of the Keras fixtures
in `tests/fixtures/savedmodels/` (`keras` is null):

- `signatures`: every SignatureDef of the MetaGraphDef tagged `serve`, as
  `saved_model_cli show --all` lists it;
- `inputs`: a batch of 3 examples for `serving_default` (float32
  normal(0, 1)), per alias its dtype, shape and flat values;
- `outputs`: what the SavedModel computes for that batch when loaded back
  from disk with `tf.compat.v1.saved_model.loader.load(sess, ["serve"],
  dir)` and run with `sess.run` on the signature's tensor names, exact
  float32 values;
- `signature_outputs`: the same for the other signatures that take the same
  inputs (`embed` of `tf1_two_signatures`);
- `ops`: the op types of the top-level nodes `serving_default`'s outputs
  depend on (data inputs only, control inputs not followed);
- `restore`: the SaverDef's `restore_op_name` and `filename_tensor_name`,
  and per variable the assign node and op, the variable node and op, the
  assign node's value input as the graph writes it (`value`;
  `save/RestoreV2` means output 0), the `save/RestoreV2` output it comes
  from (`restored`) and that output's checkpoint key (`key`);
- `checkpoint`: every checkpoint key with its dtype and shape.

## Models

{models}

## Signatures

| fixture | signature | inputs | outputs |
|---|---|---|---|
{table}

All shapes have the batch dimension (-1) first.

## Op types

{op_lines}

## Restore

Variable <- assign node <- RestoreV2 output (checkpoint key), run by
`save/restore_all` through `save/restore_shard`:

{restore_text}

## Rebuilding

From the repository root, in the virtualenv of `requirements/scripts.txt`:

    target/py/scripts/bin/python scripts/build_tf1_savedmodels.py

The script deletes this directory and writes it anew (README included); with
the same package versions every file comes out the same, byte for byte. The
fixture layout is that of `tests/fixtures/savedmodels/`, so
`FERROSERVE_SAVEDMODEL_FIXTURES=tests/fixtures/savedmodels_tf1` points the
server test of those fixtures at this directory.
""")
    print(f"wrote {rel(README_PATH)}")


def main():
    if OUT_DIR.exists():
        shutil.rmtree(OUT_DIR)
    OUT_DIR.mkdir(parents=True)
    summaries = [make_fixture(name, index) for index, name in enumerate(MODELS)]
    for s in summaries:
        if s["object_graph"]:
            sys.exit(f"{s['fixture']}: the MetaGraphDef has an object_graph_def")
    write_readme(summaries)
    total = dir_size(OUT_DIR)
    print(f"total: {total} bytes ({total / 1024:.1f} KiB) in {rel(OUT_DIR)}")


if __name__ == "__main__":
    main()
