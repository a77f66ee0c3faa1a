#!/usr/bin/env python3
"""Build the reference FileDescriptorSet of TensorFlow Serving's API.

ferroserve speaks TensorFlow Serving's gRPC API, so its wire contract must
match the descriptors that upstream actually ships. The most authoritative
copy we can get without TensorFlow's source tree is the generated Python code
inside the official PyPI wheels: every ``*_pb2.py`` module embeds its file's
serialized ``FileDescriptorProto`` in a ``AddSerializedFile(b'...')`` call.

This script downloads (or takes) the ``tensorflow-serving-api`` and
``tensorflow-cpu`` wheels, reads those byte strings straight out of the
modules' syntax trees (the modules are never imported or executed), and
writes a binary ``FileDescriptorSet`` holding exactly the transitive import
closure of the roots listed in ``ROOTS``, dependencies first. The
``google/protobuf/*`` well-known types come from the installed ``protobuf``
package, whose generated modules carry the same serialized descriptors.

The output is the reference that ``scripts/gen_protos.py`` turns into
``proto/`` sources and that ``scripts/check_protos.py`` verifies them against.

Usage:
    python scripts/extract_reference_descriptors.py
    python scripts/extract_reference_descriptors.py --wheel a.whl --wheel b.whl
"""

from __future__ import annotations

import argparse
import ast
import importlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from google.protobuf import descriptor_pb2

TF_VERSION = "2.21.0"
PACKAGES = (f"tensorflow-serving-api=={TF_VERSION}", f"tensorflow-cpu=={TF_VERSION}")
# The generated *_pb2.py modules are pure Python and identical in every
# platform build, so pin one platform to make the download host-independent.
PIP_PLATFORM = ("--platform", "manylinux_2_27_x86_64", "--python-version", "3.11")

# (file name, required). Optional roots are skipped with a note when the
# wheels do not ship them.
ROOTS = (
    ("tensorflow_serving/apis/prediction_service.proto", True),
    ("tensorflow_serving/apis/model_service.proto", True),
    ("tensorflow_serving/apis/prediction_log.proto", True),
    ("tensorflow_serving/config/model_server_config.proto", True),
    ("tensorflow_serving/config/monitoring_config.proto", False),
    ("tensorflow_serving/config/ssl_config.proto", False),
    ("tensorflow_serving/config/platform_config.proto", False),
    ("tensorflow_serving/servables/tensorflow/session_bundle_config.proto", False),
    ("tensorflow/core/protobuf/saved_model.proto", True),
    ("tensorflow/core/protobuf/tensor_bundle.proto", True),
    ("tensorflow/core/protobuf/config.proto", True),
    ("google/protobuf/any.proto", True),
    ("google/protobuf/wrappers.proto", True),
)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO / "tests/data/tensorflow_serving_2.21.fds.binpb"


def serialized_files_in_source(source: str, origin: str) -> list[bytes]:
    """Return the byte-string arguments of every AddSerializedFile call."""
    found = []
    for node in ast.walk(ast.parse(source, filename=origin)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "AddSerializedFile"
        ):
            if (
                len(node.args) != 1
                or not isinstance(node.args[0], ast.Constant)
                or not isinstance(node.args[0].value, bytes)
            ):
                raise ValueError(f"{origin}: AddSerializedFile is not called with a bytes literal")
            found.append(node.args[0].value)
    return found


def parse_file_descriptor(data: bytes) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    proto.ParseFromString(data)
    return proto


def download_wheels(dest: Path) -> list[Path]:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        *PIP_PLATFORM,
        "--dest",
        str(dest),
        *PACKAGES,
    ]
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    return sorted(dest.glob("*.whl"))


def descriptors_from_wheels(wheels: list[Path]) -> dict[str, bytes]:
    """Map each embedded file name to its serialized descriptor."""
    by_name: dict[str, tuple[bytes, str]] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if not member.endswith("_pb2.py"):
                    continue
                source = archive.read(member).decode("utf-8")
                for data in serialized_files_in_source(source, f"{wheel.name}:{member}"):
                    name = parse_file_descriptor(data).name
                    previous = by_name.get(name)
                    if previous is not None and previous[0] != data:
                        raise ValueError(
                            f"{name} is embedded with different contents in {previous[1]} and {member}"
                        )
                    by_name[name] = (data, member)
    return {name: data for name, (data, _) in by_name.items()}


def well_known_descriptor(name: str) -> bytes:
    """Serialized descriptor of a google/protobuf/*.proto from the protobuf package."""
    module = importlib.import_module(name.removesuffix(".proto").replace("/", ".") + "_pb2")
    return module.DESCRIPTOR.serialized_pb


def import_closure(roots: list[str], available: dict[str, bytes]) -> list[descriptor_pb2.FileDescriptorProto]:
    """Depth-first post-order over imports: every file follows its dependencies."""
    ordered: list[descriptor_pb2.FileDescriptorProto] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ValueError("import cycle: " + " -> ".join(chain + (name,)))
        if name not in available:
            if not name.startswith("google/protobuf/"):
                raise KeyError(f"{name} (imported via {' -> '.join(chain)}) is not in the wheels")
            available[name] = well_known_descriptor(name)
        state[name] = "visiting"
        proto = parse_file_descriptor(available[name])
        for dep in proto.dependency:
            visit(dep, chain + (name,))
        state[name] = "done"
        ordered.append(proto)

    for root in roots:
        visit(root, ())
    return ordered


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--wheel",
        action="append",
        type=Path,
        default=[],
        help="use this already-downloaded wheel instead of running pip download (repeatable)",
    )
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help=f"default: {DEFAULT_OUTPUT.relative_to(REPO)}"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        wheels = args.wheel or download_wheels(Path(tmp))
        available = descriptors_from_wheels(wheels)

    roots = []
    for name, required in ROOTS:
        if name in available or name.startswith("google/protobuf/"):
            roots.append(name)
        elif required:
            raise SystemExit(f"error: required root {name} is not in the wheels")
        else:
            print(f"note: {name} is not shipped in the wheels; skipped", file=sys.stderr)

    files = import_closure(roots, available)
    fds = descriptor_pb2.FileDescriptorSet(file=files)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(fds.SerializeToString(deterministic=True))
    print(f"wrote {len(files)} files to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
