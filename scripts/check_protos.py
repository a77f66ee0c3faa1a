#!/usr/bin/env python3
"""Check that proto/ compiles back to the reference descriptors.

The files under ``proto/`` are printed by ``scripts/gen_protos.py`` from
upstream's descriptors. This script proves the printing lost nothing: it
compiles every ``proto/**/*.proto`` with protoc (from grpcio-tools, which also
provides the well-known types) and compares the result with the reference
descriptors (``tests/data/tensorflow_serving_2.21.fds.binpb`` plus the
installed onnx package's descriptor) file by file and, for every message and
enum at any nesting depth, element by element:

  * files: syntax, package, imports (public and weak too), file options,
    order of messages, enums and services;
  * messages: options, reserved ranges and names, oneofs, nested order;
  * fields: name, number, type, type_name, label, effective JSON name, oneof
    membership, proto3 ``optional``, default value and field options
    (``packed``, ``deprecated``, ``lazy``, ...);
  * enums: options, reserved ranges and names, values (name, number, options);
  * services: methods with request/response types, streaming flags, options.

Whatever else might differ between the two FileDescriptorProtos is caught by
a final whole-file comparison. A file compiled from proto/ that is not in the
reference set is reported too (except the well-known types protoc pulls in).
Exits non-zero on any difference.

Usage:
    python scripts/check_protos.py [--compiled FILE]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2, text_format
from google.protobuf.message import Message

from gen_protos import (
    DEFAULT_DESCRIPTOR_SET,
    DEFAULT_OUT_DIR,
    REPO,
    default_json_name,
    generated_files,
    is_well_known,
    read_descriptor_set,
)

FDP = descriptor_pb2.FieldDescriptorProto


class Checker:
    def __init__(self) -> None:
        self.differences: list[str] = []
        self.counts = {"files": 0, "messages": 0, "fields": 0, "enums": 0, "enum values": 0, "methods": 0}

    def same(self, where: str, what: str, expected, actual) -> bool:
        if expected != actual:
            self.differences.append(f"{where}: {what}: reference {show(expected)}, compiled {show(actual)}")
            return False
        return True

    def same_names(self, where: str, what: str, expected, actual) -> bool:
        return self.same(where, what + " (in order)", [e.name for e in expected], [a.name for a in actual])

    def file(self, ref: descriptor_pb2.FileDescriptorProto, got: descriptor_pb2.FileDescriptorProto) -> None:
        self.counts["files"] += 1
        before = len(self.differences)
        where = ref.name
        self.same(where, "syntax", ref.syntax or "proto2", got.syntax or "proto2")
        self.same(where, "package", ref.package, got.package)
        self.same(where, "imports", list(ref.dependency), list(got.dependency))
        self.same(where, "public imports", list(ref.public_dependency), list(got.public_dependency))
        self.same(where, "weak imports", list(ref.weak_dependency), list(got.weak_dependency))
        self.same(where, "file options", ref.options, got.options)
        self.same(where, "extensions", len(ref.extension), len(got.extension))
        self.messages(where, ref.package, ref.message_type, got.message_type)
        self.enums(where, ref.package, ref.enum_type, got.enum_type)
        if self.same_names(where, "services", ref.service, got.service):
            for ref_service, got_service in zip(ref.service, got.service, strict=True):
                self.service(f"{where}: service {ref.package}.{ref_service.name}", ref_service, got_service)
        if len(self.differences) == before and with_effective_json_names(ref) != with_effective_json_names(
            got
        ):
            self.differences.append(f"{where}: descriptors differ in a way not itemised above")

    def messages(self, where: str, scope: str, refs, gots) -> None:
        if self.same_names(f"{where}: {scope}", "messages", refs, gots):
            for ref, got in zip(refs, gots, strict=True):
                self.message(where, f"{scope}.{ref.name}", ref, got)

    def enums(self, where: str, scope: str, refs, gots) -> None:
        if self.same_names(f"{where}: {scope}", "enums", refs, gots):
            for ref, got in zip(refs, gots, strict=True):
                self.enum(f"{where}: enum {scope}.{ref.name}", ref, got)

    def message(
        self,
        file_where: str,
        name: str,
        ref: descriptor_pb2.DescriptorProto,
        got: descriptor_pb2.DescriptorProto,
    ) -> None:
        self.counts["messages"] += 1
        where = f"{file_where}: message {name}"
        self.same(where, "options", ref.options, got.options)
        self.same(
            where,
            "reserved ranges",
            [(r.start, r.end) for r in ref.reserved_range],
            [(r.start, r.end) for r in got.reserved_range],
        )
        self.same(where, "reserved names", list(ref.reserved_name), list(got.reserved_name))
        self.same(where, "extension ranges", len(ref.extension_range), len(got.extension_range))
        self.same(where, "extensions", len(ref.extension), len(got.extension))
        if self.same_names(where, "oneofs", ref.oneof_decl, got.oneof_decl):
            for ref_oneof, got_oneof in zip(ref.oneof_decl, got.oneof_decl, strict=True):
                self.same(where, f"oneof {ref_oneof.name} options", ref_oneof.options, got_oneof.options)
        if self.same_names(where, "fields", ref.field, got.field):
            for ref_field, got_field in zip(ref.field, got.field, strict=True):
                self.counts["fields"] += 1
                ref_view, got_view = field_view(ref_field, ref), field_view(got_field, got)
                for key in ref_view:
                    self.same(f"{where}.{ref_field.name}", key, ref_view[key], got_view[key])
        self.messages(file_where, name, ref.nested_type, got.nested_type)
        self.enums(file_where, name, ref.enum_type, got.enum_type)

    def enum(
        self, where: str, ref: descriptor_pb2.EnumDescriptorProto, got: descriptor_pb2.EnumDescriptorProto
    ) -> None:
        self.counts["enums"] += 1
        self.counts["enum values"] += len(ref.value)
        self.same(where, "options", ref.options, got.options)
        self.same(
            where,
            "reserved ranges",
            [(r.start, r.end) for r in ref.reserved_range],
            [(r.start, r.end) for r in got.reserved_range],
        )
        self.same(where, "reserved names", list(ref.reserved_name), list(got.reserved_name))
        self.same(
            where, "values", [(v.name, v.number) for v in ref.value], [(v.name, v.number) for v in got.value]
        )
        self.same(where, "value options", [v.options for v in ref.value], [v.options for v in got.value])

    def service(
        self,
        where: str,
        ref: descriptor_pb2.ServiceDescriptorProto,
        got: descriptor_pb2.ServiceDescriptorProto,
    ) -> None:
        self.same(where, "options", ref.options, got.options)
        if self.same_names(where, "methods", ref.method, got.method):
            for ref_method, got_method in zip(ref.method, got.method, strict=True):
                self.counts["methods"] += 1
                for key in ("input_type", "output_type", "client_streaming", "server_streaming", "options"):
                    self.same(
                        f"{where}.{ref_method.name}", key, getattr(ref_method, key), getattr(got_method, key)
                    )


def show(value) -> str:
    """One-line rendering of a compared value; options messages as text format."""
    if isinstance(value, Message):
        return "{" + text_format.MessageToString(value, as_one_line=True) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return repr(value)


def field_view(field: descriptor_pb2.FieldDescriptorProto, message: descriptor_pb2.DescriptorProto) -> dict:
    """Everything about a field that the generated source must reproduce."""
    return {
        "number": field.number,
        "type": FDP.Type.Name(field.type),
        "type_name": field.type_name,
        "label": FDP.Label.Name(field.label),
        "json_name": field.json_name if field.HasField("json_name") else default_json_name(field.name),
        "oneof": message.oneof_decl[field.oneof_index].name if field.HasField("oneof_index") else None,
        "proto3_optional": field.proto3_optional,
        "default_value": field.default_value if field.HasField("default_value") else None,
        "options": field.options,
    }


def with_effective_json_names(
    proto: descriptor_pb2.FileDescriptorProto,
) -> descriptor_pb2.FileDescriptorProto:
    """A copy in which every field states its JSON name, as protoc's output does."""
    copy = descriptor_pb2.FileDescriptorProto()
    copy.CopyFrom(proto)
    pending = list(copy.message_type)
    while pending:
        message = pending.pop()
        pending.extend(message.nested_type)
        for field in message.field:
            field.json_name = (
                field.json_name if field.HasField("json_name") else default_json_name(field.name)
            )
    return copy


def compile_protos(proto_dir: Path, output: Path) -> None:
    """Compile every .proto under proto_dir, with imports, into one descriptor set."""
    sources = sorted(str(p.relative_to(proto_dir)) for p in proto_dir.rglob("*.proto"))
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        "--include_imports",
        f"--descriptor_set_out={output}",
        *sources,
    ]
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit(f"error: protoc could not compile {proto_dir}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--descriptor-set",
        type=Path,
        default=DEFAULT_DESCRIPTOR_SET,
        help=f"reference set (default: {DEFAULT_DESCRIPTOR_SET.relative_to(REPO)})",
    )
    parser.add_argument(
        "--proto-dir",
        type=Path,
        default=DEFAULT_OUT_DIR,
        help=f"generated sources (default: {DEFAULT_OUT_DIR.relative_to(REPO)})",
    )
    parser.add_argument(
        "--compiled",
        type=Path,
        help="compare this already-compiled FileDescriptorSet instead of running protoc on --proto-dir",
    )
    args = parser.parse_args()

    if args.compiled:
        compiled = read_descriptor_set(args.compiled)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            output = Path(tmp) / "compiled.binpb"
            compile_protos(args.proto_dir, output)
            compiled = read_descriptor_set(output)

    reference = {proto.name: proto for proto, _ in generated_files(args.descriptor_set)}
    by_name = {proto.name: proto for proto in compiled}
    checker = Checker()
    for name, ref in reference.items():
        if name in by_name:
            checker.file(ref, by_name[name])
        else:
            checker.differences.append(f"{name}: missing from the compiled set")
    for name, proto in by_name.items():
        if name not in reference and not is_well_known(proto):
            checker.differences.append(f"{name}: compiled from proto/ but not in the reference set")

    for line in checker.differences:
        print(line)
    summary = ", ".join(f"{count} {what}" for what, count in checker.counts.items())
    print(f"compared {summary}: {len(checker.differences)} differences")
    return 1 if checker.differences else 0


if __name__ == "__main__":
    sys.exit(main())
