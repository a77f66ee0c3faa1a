#!/usr/bin/env python3
"""Write ferroserve's .proto sources from upstream's compiled descriptors.

ferroserve compiles its gRPC/protobuf types from the ``.proto`` files under
``proto/``. Those files are not copied from upstream source trees: they are
printed from descriptors, so that every name, number, type, label, oneof,
map, option and reserved range is exactly what the official packages ship,
and nothing else (no upstream comments) is carried over.

Inputs:
  * the reference FileDescriptorSet made by
    ``scripts/extract_reference_descriptors.py`` from the PyPI packages
    tensorflow-serving-api and tensorflow-cpu (TensorFlow Serving's API);
  * the descriptor embedded in the installed ``onnx`` package
    (``onnx/onnx_ml_pb2.py``, read without importing it), written out as
    ``proto/onnx/onnx.proto``.

``google/protobuf/*.proto`` files are not written: protox (and protoc) bundle
the well-known types.

``scripts/check_protos.py`` compiles the output and compares it with the
descriptors field by field.

Usage:
    python scripts/gen_protos.py [--descriptor-set FILE] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2, unknown_fields

from extract_reference_descriptors import (
    DEFAULT_OUTPUT as DEFAULT_DESCRIPTOR_SET,
    PACKAGES as TF_PACKAGES,
    REPO,
    parse_file_descriptor,
    serialized_files_in_source,
)

DEFAULT_OUT_DIR = REPO / "proto"

ONNX_VERSION = "1.23.2"
ONNX_MODULE = "onnx_ml_pb2.py"
ONNX_UPSTREAM_NAME = "onnx/onnx-ml.proto"
ONNX_NAME = "onnx/onnx.proto"

FDP = descriptor_pb2.FieldDescriptorProto
SCALAR_TYPES = {
    FDP.TYPE_DOUBLE: "double",
    FDP.TYPE_FLOAT: "float",
    FDP.TYPE_INT64: "int64",
    FDP.TYPE_UINT64: "uint64",
    FDP.TYPE_INT32: "int32",
    FDP.TYPE_FIXED64: "fixed64",
    FDP.TYPE_FIXED32: "fixed32",
    FDP.TYPE_BOOL: "bool",
    FDP.TYPE_STRING: "string",
    FDP.TYPE_BYTES: "bytes",
    FDP.TYPE_UINT32: "uint32",
    FDP.TYPE_SFIXED32: "sfixed32",
    FDP.TYPE_SFIXED64: "sfixed64",
    FDP.TYPE_SINT32: "sint32",
    FDP.TYPE_SINT64: "sint64",
}
PROTO2_LABELS = {
    FDP.LABEL_OPTIONAL: "optional ",
    FDP.LABEL_REQUIRED: "required ",
    FDP.LABEL_REPEATED: "repeated ",
}
# One past the largest field number; message reserved ranges use exclusive ends.
FIELD_NUMBER_END = 536870912
ENUM_NUMBER_MAX = 2147483647


def default_json_name(name: str) -> str:
    """protoc's lowerCamelCase JSON name for a field."""
    out, upper_next = [], False
    for ch in name:
        if ch == "_":
            upper_next = True
        elif upper_next:
            out.append(ch.upper())
            upper_next = False
        else:
            out.append(ch)
    return "".join(out)


def quote(text: str) -> str:
    """A .proto string literal whose parsed bytes are text's UTF-8 bytes."""
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= byte < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def read_descriptor_set(path: Path) -> list[descriptor_pb2.FileDescriptorProto]:
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(path.read_bytes())
    return list(fds.file)


def load_onnx_file() -> descriptor_pb2.FileDescriptorProto:
    """The onnx package's ML descriptor, renamed to ONNX_NAME."""
    installed = importlib.metadata.version("onnx")
    if installed != ONNX_VERSION:
        raise SystemExit(f"error: onnx {installed} is installed; pip install onnx=={ONNX_VERSION}")
    spec = importlib.util.find_spec("onnx")
    module = Path(next(iter(spec.submodule_search_locations))) / ONNX_MODULE
    (data,) = serialized_files_in_source(module.read_text(encoding="utf-8"), str(module))
    proto = parse_file_descriptor(data)
    if proto.name != ONNX_UPSTREAM_NAME or proto.package != "onnx" or proto.dependency:
        raise SystemExit(f"error: unexpected onnx descriptor {proto.name} (package {proto.package})")
    proto.name = ONNX_NAME
    return proto


def generated_files(descriptor_set: Path) -> list[tuple[descriptor_pb2.FileDescriptorProto, str]]:
    """Every reference file (well-known types included) with the packages it came from."""
    tf_origin = "the official PyPI packages " + " and ".join(p.replace("==", " ") for p in TF_PACKAGES)
    files = [(f, tf_origin) for f in read_descriptor_set(descriptor_set)]
    files.append((load_onnx_file(), f"the official PyPI package onnx {ONNX_VERSION}"))
    return files


def is_well_known(proto: descriptor_pb2.FileDescriptorProto) -> bool:
    return proto.name.startswith("google/protobuf/")


class SymbolTable:
    """Every fully-qualified symbol, used to print the shortest type names that still resolve correctly.

    The lookup follows protoc's scoping (innermost scope outwards, first name
    component first) but treats the first hit as final and ignores which file
    defines a symbol; that can only reject a short name, never accept a wrong one.
    """

    def __init__(self, files: list[descriptor_pb2.FileDescriptorProto]):
        self.names: set[str] = set()
        for proto in files:
            package = proto.package
            parts = package.split(".") if package else []
            for i in range(1, len(parts) + 1):
                self.names.add(".".join(parts[:i]))
            for message in proto.message_type:
                self._add_message(package, message)
            for enum in proto.enum_type:
                self._add_enum(package, enum)
            for service in proto.service:
                service_name = join(package, service.name)
                self.names.add(service_name)
                self.names.update(join(service_name, m.name) for m in service.method)

    def _add_message(self, scope: str, message: descriptor_pb2.DescriptorProto) -> None:
        name = join(scope, message.name)
        self.names.add(name)
        self.names.update(join(name, f.name) for f in message.field)
        self.names.update(join(name, o.name) for o in message.oneof_decl)
        for nested in message.nested_type:
            self._add_message(name, nested)
        for enum in message.enum_type:
            self._add_enum(name, enum)

    def _add_enum(self, scope: str, enum: descriptor_pb2.EnumDescriptorProto) -> None:
        self.names.add(join(scope, enum.name))
        # Enum values are siblings of their enum, as in C++.
        self.names.update(join(scope, v.name) for v in enum.value)

    def _lookup(self, name: str, scope: str) -> str | None:
        first, _, rest = name.partition(".")
        parts = scope.split(".") if scope else []
        for i in range(len(parts), -1, -1):
            found = join(".".join(parts[:i]), first)
            if found in self.names:
                return join(found, rest)
        return None

    def relative_name(self, type_name: str, scope: str) -> str:
        """Shortest suffix of type_name ('.pkg.Type') that resolves to it from scope."""
        target = type_name.removeprefix(".")
        parts = target.split(".")
        for i in range(len(parts) - 1, -1, -1):
            candidate = ".".join(parts[i:])
            if self._lookup(candidate, scope) == target:
                return candidate
        return type_name


def join(scope: str, name: str) -> str:
    return f"{scope}.{name}" if scope and name else scope or name


def option_value(field, value) -> str:
    if field.type == field.TYPE_BOOL:
        return "true" if value else "false"
    if field.type == field.TYPE_STRING:
        return quote(value)
    if field.type == field.TYPE_ENUM:
        return field.enum_type.values_by_number[value].name
    if (
        field.type in (field.TYPE_MESSAGE, field.TYPE_GROUP, field.TYPE_BYTES)
        or field.label == field.LABEL_REPEATED
    ):
        raise ValueError(f"unsupported option {field.full_name}")
    return str(value)


def option_pairs(options) -> list[tuple[str, str]]:
    """(name, printed value) of every option set; custom options are not supported."""
    if len(unknown_fields.UnknownFieldSet(options)):
        raise ValueError(f"custom or unknown options in {options.DESCRIPTOR.name}: not supported")
    return [(f.name, option_value(f, v)) for f, v in options.ListFields()]


class Printer:
    """Renders one FileDescriptorProto as .proto source text."""

    def __init__(self, proto: descriptor_pb2.FileDescriptorProto, symbols: SymbolTable):
        self.proto = proto
        self.symbols = symbols
        self.proto3 = proto.syntax == "proto3"
        self.lines: list[str] = []

    def emit(self, depth: int, text: str = "") -> None:
        self.lines.append("  " * depth + text if text else "")

    def emit_options(self, depth: int, options) -> None:
        for name, value in option_pairs(options):
            self.emit(depth, f"option {name} = {value};")

    def file(self, provenance: str, upstream_name: str) -> str:
        proto = self.proto
        if proto.syntax not in ("", "proto2", "proto3"):
            raise ValueError(f"{proto.name}: syntax {proto.syntax!r} is not supported")
        if proto.extension:
            raise ValueError(f"{proto.name}: extensions are not supported")
        self.lines += [
            f"// ferroserve's copy of the wire contract defined upstream in {upstream_name}.",
            "// Generated by scripts/gen_protos.py from the descriptors embedded in",
            f"// {provenance}.",
            "// Names, numbers and types must not be edited by hand: regenerate instead.",
            "",
            f'syntax = "{proto.syntax or "proto2"}";',
            "",
        ]
        if proto.package:
            self.emit(0, f"package {proto.package};")
            self.emit(0)
        if proto.dependency:
            for i, dep in enumerate(proto.dependency):
                kind = ""
                if i in proto.public_dependency:
                    kind = "public "
                elif i in proto.weak_dependency:
                    kind = "weak "
                self.emit(0, f"import {kind}{quote(dep)};")
            self.emit(0)
        if proto.HasField("options"):
            self.emit_options(0, proto.options)
            self.emit(0)
        for enum in proto.enum_type:
            self.enum(0, proto.package, enum)
            self.emit(0)
        for message in proto.message_type:
            self.message(0, proto.package, message)
            self.emit(0)
        for service in proto.service:
            self.service(service)
            self.emit(0)
        while self.lines[-1] == "":
            self.lines.pop()
        return "\n".join(self.lines) + "\n"

    def enum(self, depth: int, scope: str, enum: descriptor_pb2.EnumDescriptorProto) -> None:
        self.emit(depth, f"// Enum {join(scope, enum.name)}.")
        self.emit(depth, f"enum {enum.name} {{")
        self.emit_options(depth + 1, enum.options)
        ranges = [
            str(r.start)
            if r.start == r.end
            else f"{r.start} to {'max' if r.end == ENUM_NUMBER_MAX else r.end}"
            for r in enum.reserved_range
        ]
        self.reserved(depth + 1, ranges, enum.reserved_name)
        for value in enum.value:
            options = "".join(
                f"{', ' if i else ' ['}{n} = {v}" for i, (n, v) in enumerate(option_pairs(value.options))
            )
            self.emit(depth + 1, f"{value.name} = {value.number}{options + ']' if options else ''};")
        self.emit(depth, "}")

    def reserved(self, depth: int, ranges: list[str], names) -> None:
        if ranges:
            self.emit(depth, f"reserved {', '.join(ranges)};")
        if names:
            self.emit(depth, f"reserved {', '.join(quote(n) for n in names)};")

    def message(self, depth: int, scope: str, message: descriptor_pb2.DescriptorProto) -> None:
        name = join(scope, message.name)
        if message.extension or message.extension_range:
            raise ValueError(f"{name}: extensions are not supported")
        self.emit(depth, f"// Message {name}.")
        self.emit(depth, f"message {message.name} {{")
        inner = depth + 1
        self.emit_options(inner, message.options)
        ranges = [
            str(r.start)
            if r.end == r.start + 1
            else f"{r.start} to {'max' if r.end == FIELD_NUMBER_END else r.end - 1}"
            for r in message.reserved_range
        ]
        self.reserved(inner, ranges, message.reserved_name)
        for enum in message.enum_type:
            self.enum(inner, name, enum)

        map_entries = {join(name, n.name): n for n in message.nested_type if n.options.map_entry}
        synthetic = {f.oneof_index for f in message.field if f.proto3_optional}
        fields = list(message.field)
        printed_oneofs: set[int] = set()
        position = 0

        def emit_fields_through(stop: int) -> None:
            # Print fields[position:stop]; a real oneof is printed as one block at its first member.
            nonlocal position
            while position < stop:
                field = fields[position]
                if field.HasField("oneof_index") and field.oneof_index not in synthetic:
                    index = field.oneof_index
                    if index in printed_oneofs:
                        raise ValueError(
                            f"{name}: members of oneof {message.oneof_decl[index].name} are not contiguous"
                        )
                    printed_oneofs.add(index)
                    decl = message.oneof_decl[index]
                    self.emit(inner, f"oneof {decl.name} {{")
                    self.emit_options(inner + 1, decl.options)
                    while (
                        position < len(fields)
                        and fields[position].HasField("oneof_index")
                        and fields[position].oneof_index == index
                    ):
                        self.field(inner + 1, name, fields[position], map_entries, in_oneof=True)
                        position += 1
                    self.emit(inner, "}")
                else:
                    self.field(inner, name, field, map_entries, in_oneof=False)
                    position += 1

        # Keep nested_type order: a map entry sits where its map field is declared.
        for nested in message.nested_type:
            if nested.options.map_entry:
                entry_name = "." + join(name, nested.name)
                stop = next(i for i, f in enumerate(fields) if f.type_name == entry_name) + 1
                emit_fields_through(stop)
            else:
                self.message(inner, name, nested)
        emit_fields_through(len(fields))
        self.emit(depth, "}")

    def type_of(self, field: descriptor_pb2.FieldDescriptorProto, scope: str) -> str:
        if field.type in SCALAR_TYPES:
            return SCALAR_TYPES[field.type]
        if field.type in (FDP.TYPE_MESSAGE, FDP.TYPE_ENUM):
            return self.symbols.relative_name(field.type_name, scope)
        raise ValueError(f"{scope}.{field.name}: field type {field.type} (groups) is not supported")

    def field(self, depth: int, scope: str, field, map_entries, in_oneof: bool) -> None:
        entry = map_entries.get(field.type_name.removeprefix("."))
        if entry is not None:
            key, value = entry.field
            entry_scope = join(scope, entry.name)
            text = f"map<{self.type_of(key, entry_scope)}, {self.type_of(value, entry_scope)}>"
        else:
            if in_oneof:
                label = ""
            elif not self.proto3:
                label = PROTO2_LABELS[field.label]
            elif field.label == FDP.LABEL_REPEATED:
                label = "repeated "
            else:
                label = "optional " if field.proto3_optional else ""
            text = label + self.type_of(field, scope)
        options = []
        if field.HasField("json_name") and field.json_name != default_json_name(field.name):
            options.append(("json_name", quote(field.json_name)))
        if field.HasField("default_value"):
            options.append(("default", self.default_value(field)))
        options += option_pairs(field.options)
        suffix = " [" + ", ".join(f"{n} = {v}" for n, v in options) + "]" if options else ""
        self.emit(depth, f"{text} {field.name} = {field.number}{suffix};")

    @staticmethod
    def default_value(field) -> str:
        if field.type == FDP.TYPE_STRING:
            return quote(field.default_value)
        if field.type == FDP.TYPE_BYTES:
            # Already C-escaped in the descriptor.
            return f'"{field.default_value}"'
        return field.default_value

    def service(self, service: descriptor_pb2.ServiceDescriptorProto) -> None:
        name = join(self.proto.package, service.name)
        self.emit(0, f"// Service {name}.")
        self.emit(0, f"service {service.name} {{")
        self.emit_options(1, service.options)
        for method in service.method:
            request = ("stream " if method.client_streaming else "") + self.symbols.relative_name(
                method.input_type, name
            )
            response = ("stream " if method.server_streaming else "") + self.symbols.relative_name(
                method.output_type, name
            )
            head = f"rpc {method.name}({request}) returns ({response})"
            options = option_pairs(method.options)
            if options:
                self.emit(1, head + " {")
                for option, value in options:
                    self.emit(2, f"option {option} = {value};")
                self.emit(1, "}")
            else:
                self.emit(1, head + ";")
        self.emit(0, "}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--descriptor-set",
        type=Path,
        default=DEFAULT_DESCRIPTOR_SET,
        help=f"default: {DEFAULT_DESCRIPTOR_SET.relative_to(REPO)}",
    )
    parser.add_argument(
        "--out-dir", type=Path, default=DEFAULT_OUT_DIR, help=f"default: {DEFAULT_OUT_DIR.relative_to(REPO)}"
    )
    args = parser.parse_args()

    files = generated_files(args.descriptor_set)
    symbols = SymbolTable([proto for proto, _ in files])
    written = 0
    for proto, provenance in files:
        if is_well_known(proto):
            continue
        upstream_name = ONNX_UPSTREAM_NAME if proto.name == ONNX_NAME else proto.name
        text = Printer(proto, symbols).file(provenance, upstream_name)
        path = args.out_dir / proto.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written += 1
    print(f"wrote {written} files under {args.out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
