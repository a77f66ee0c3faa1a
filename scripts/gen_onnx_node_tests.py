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
optionals) are left out and counted. OUT/ONNX_VERSION records the package
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
from onnx import TensorProto, numpy_helper
from onnx.backend.test.loader import load_node_model_tests


def tensor_proto(value, name: str) -> TensorProto:
    """A data set value as a TensorProto named after its graph input/output."""
    if isinstance(value, TensorProto):
        return value
    return numpy_helper.from_array(np.asarray(value), name)


def is_plain_tensor(value_info) -> bool:
    return value_info.type.HasField("tensor_type")


def write_case(case, out: Path) -> None:
    model = case.model
    case_dir = out / case.name
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
    written = non_tensor = 0
    for case in cases:
        if pattern and not pattern.search(case.name):
            continue
        graph = case.model.graph
        if not all(is_plain_tensor(v) for v in [*graph.input, *graph.output]):
            non_tensor += 1
            continue
        write_case(case, args.out)
        written += 1
    (args.out / "ONNX_VERSION").write_text(onnx.__version__ + "\n")
    print(
        f"onnx {onnx.__version__}: {len(cases)} node cases; wrote {written}, "
        f"left out {non_tensor} with non-tensor inputs or outputs -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
