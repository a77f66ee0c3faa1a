#!/usr/bin/env python3
"""Write the ONNX backend node tests of the installed `onnx` package to disk.

Recent `onnx` wheels no longer ship the node tests as files: they are Python
code under onnx/backend/test/case/node/, turned into models and data sets in
memory by `onnx.backend.test.loader.load_node_model_tests()`. This script
writes each case in the layout the ONNX backend tests have always used, which
`examples/conformance.rs` reads:

    OUT/<case>/model.onnx
    OUT/<case>/test_data_set_<i>/input_<j>.pb     (onnx.TensorProto)
    OUT/<case>/test_data_set_<i>/output_<j>.pb

Cases whose graph inputs or outputs are not plain tensors (sequences, maps,
optionals) are left out and counted.

The node tests use each operator's newest version. To exercise the older
ones too, every case is also converted with onnx's version converter to the
opset just below each version change of its operators (down to opset 7) and
written as `<case>_opset<N>` with the same data sets; a conversion the
converter cannot make is skipped and counted. OUT/ONNX_VERSION records the package
version, so scripts/test.sh rewrites the directory only when the pinned
version changes.

    python scripts/gen_onnx_node_tests.py OUT [--filter REGEX]
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, defs, numpy_helper, version_converter
from onnx.backend.test.loader import load_node_model_tests

# The oldest opset converted to: older ones predate numpy-style broadcasting.
OLDEST_OPSET = 7

# Operators whose conversion below a version changes what the model computes:
# onnx 1.23's adapter takes Softmax, LogSoftmax and Hardmax from opset 13 to
# 12 keeping `axis`, whose meaning changed at 13 (one axis, not the
# flattened trailing dims); onnxruntime agrees with the server on those
# converted models, and both differ from the recorded outputs. Scan's adapter
# from 9 to 8 adds the batch axis opset 8 needs to the model's inputs but not
# to the recorded data, which then no longer fits the model.
UNFAITHFUL = {("Softmax", 13), ("LogSoftmax", 13), ("Hardmax", 13), ("Scan", 9)}


def tensor_proto(value, name: str) -> TensorProto:
    """A data set value as a TensorProto named after its graph input/output."""
    if isinstance(value, TensorProto):
        return value
    return numpy_helper.from_array(np.asarray(value), name)


def is_plain_tensor(value_info) -> bool:
    return value_info.type.HasField("tensor_type")


def op_versions() -> dict[str, set[int]]:
    """The opsets at which each default-domain operator changed."""
    versions: dict[str, set[int]] = {}
    for schema in defs.get_all_schemas_with_history():
        if schema.domain == "":
            versions.setdefault(schema.name, set()).add(schema.since_version)
    return versions


def older_opsets(model, versions) -> list[int]:
    """The opsets just below each version change of the model's operators."""
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    targets = set()
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            return []
        for v in versions.get(node.op_type, ()):
            if OLDEST_OPSET < v <= current:
                targets.add(v - 1)
    for node in model.graph.node:
        for op, version in UNFAITHFUL:
            if node.op_type == op:
                targets = {t for t in targets if t >= version}
    return sorted(targets)


def write_case(case, out: Path, model=None, name=None) -> None:
    model = model or case.model
    case_dir = out / (name or case.name)
    case_dir.mkdir(parents=True)
    (case_dir / "model.onnx").write_bytes(model.SerializeToString())
    for i, (inputs, outputs) in enumerate(case.data_sets):
        data_dir = case_dir / f"test_data_set_{i}"
        data_dir.mkdir()
        for kind, values, infos in (("input", inputs, model.graph.input), ("output", outputs, model.graph.output)):
            for j, value in enumerate(values):
                proto = tensor_proto(value, infos[j].name)
                (data_dir / f"{kind}_{j}.pb").write_bytes(proto.SerializeToString())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="directory to (re)create")
    parser.add_argument("--filter", help="only cases whose name matches this regular expression")
    args = parser.parse_args()

    pattern = re.compile(args.filter) if args.filter else None
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)

    # Some case generators overflow casts on purpose; their warnings are noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = load_node_model_tests()
    versions = op_versions()
    written = non_tensor = converted = unconvertible = 0
    for case in cases:
        if pattern and not pattern.search(case.name):
            continue
        graph = case.model.graph
        if not all(is_plain_tensor(v) for v in [*graph.input, *graph.output]):
            non_tensor += 1
            continue
        write_case(case, args.out)
        written += 1
        for opset in older_opsets(case.model, versions):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    older = version_converter.convert_version(case.model, opset)
                    onnx.checker.check_model(older)
            except Exception:  # noqa: BLE001 - the converter raises many kinds
                unconvertible += 1
                continue
            write_case(case, args.out, older, f"{case.name}_opset{opset}")
            converted += 1
    (args.out / "ONNX_VERSION").write_text(onnx.__version__ + "\n")
    print(
        f"onnx {onnx.__version__}: {len(cases)} node cases; wrote {written}, "
        f"left out {non_tensor} with non-tensor inputs or outputs; "
        f"{converted} older-opset conversions written, {unconvertible} not convertible -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
