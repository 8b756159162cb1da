"""Setting request fields from strings: path variables, query parameters, form fields.

A dotted name (`configuration.id`, `createdAfter`, `created_after`) resolves,
component by component, by JSON name or proto name, through singular message
fields. The leaf takes its value from text by its type: numbers, booleans,
enums by name (or number), bytes as base64, and the well-known types in their
proto3 JSON forms (Timestamp RFC 3339, Duration "3.5s", FieldMask a comma
list, wrappers as their value). Repeated fields take one value per occurrence.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import (
    descriptor,
    duration_pb2,
    field_mask_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.message import Message

FD = descriptor.FieldDescriptor

_INT_RANGES = {
    FD.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FD.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FD.CPPTYPE_UINT32: (0, 2**32 - 1),
    FD.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_TRUE = frozenset({"true", "1", "t"})
_FALSE = frozenset({"false", "0", "f"})

_WRAPPERS = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        wrappers_pb2.DoubleValue,
        wrappers_pb2.FloatValue,
        wrappers_pb2.Int64Value,
        wrappers_pb2.UInt64Value,
        wrappers_pb2.Int32Value,
        wrappers_pb2.UInt32Value,
        wrappers_pb2.BoolValue,
        wrappers_pb2.StringValue,
        wrappers_pb2.BytesValue,
    )
}
TIMESTAMP = timestamp_pb2.Timestamp.DESCRIPTOR.full_name
DURATION = duration_pb2.Duration.DESCRIPTOR.full_name
FIELD_MASK = field_mask_pb2.FieldMask.DESCRIPTOR.full_name


class FieldError(ValueError):
    """A name names no settable field, or a value does not fit its field."""


@dataclass(frozen=True)
class FieldPath:
    """A resolved dotted name: the fields from the root message to the leaf."""

    fields: tuple[FD, ...]

    @property
    def leaf(self) -> FD:
        return self.fields[-1]

    @property
    def proto_path(self) -> str:
        return ".".join(f.name for f in self.fields)

    @property
    def json_path(self) -> str:
        return ".".join(f.json_name for f in self.fields)


def lookup_field(message: descriptor.Descriptor, name: str) -> FD | None:
    """A field of `message` by proto name or JSON (camelCase) name."""
    field = message.fields_by_name.get(name)
    if field is not None:
        return field
    for candidate in message.fields:
        if candidate.json_name == name:
            return candidate
    return None


def resolve(message: descriptor.Descriptor, dotted: str) -> FieldPath:
    """Resolve `dotted` to a leaf that a string can set; FieldError if none."""
    fields: list[FD] = []
    current = message
    components = dotted.split(".")
    for index, component in enumerate(components):
        field = lookup_field(current, component) if component else None
        if field is None:
            raise FieldError(f"{current.full_name} has no field {component!r}")
        fields.append(field)
        is_last = index == len(components) - 1
        if is_last:
            break
        if not is_plain_message(field) or is_well_known(field):
            raise FieldError(f"{field.name!r} is not a message field to descend")
        current = message_type(field)
    leaf = fields[-1]
    if is_map(leaf) or (is_plain_message(leaf) and not is_well_known(leaf)):
        raise FieldError(f"{leaf.name!r} is a message; name one of its fields")
    return FieldPath(tuple(fields))


def message_type(field: FD) -> descriptor.Descriptor:
    """The message type of a message field (the stubs allow None)."""
    found = field.message_type
    if found is None:
        raise FieldError(f"{field.name!r} is not a message field")
    return found


def enum_type(field: FD) -> descriptor.EnumDescriptor:
    found = field.enum_type
    if found is None:
        raise FieldError(f"{field.name!r} is not an enum field")
    return found


def is_repeated(field: FD) -> bool:
    return bool(field.is_repeated)


def is_map(field: FD) -> bool:
    return (
        is_repeated(field)
        and field.cpp_type == FD.CPPTYPE_MESSAGE
        and message_type(field).GetOptions().map_entry
    )


def is_plain_message(field: FD) -> bool:
    return field.cpp_type == FD.CPPTYPE_MESSAGE and not is_repeated(field)


def is_well_known(field: FD) -> bool:
    if field.cpp_type != FD.CPPTYPE_MESSAGE:
        return False
    name = message_type(field).full_name
    return name in (TIMESTAMP, DURATION, FIELD_MASK) or name in _WRAPPERS


def set_field(root: Message, path: FieldPath, text: str) -> None:
    """Set (or, for a repeated leaf, append) the field at `path` from `text`."""
    target = root
    for field in path.fields[:-1]:
        target = getattr(target, field.name)
    leaf = path.leaf
    value = parse_value(leaf, text)
    if is_repeated(leaf):
        container = getattr(target, leaf.name)
        if leaf.cpp_type == FD.CPPTYPE_MESSAGE:
            container.add().CopyFrom(value)
        else:
            container.append(value)
        return
    if leaf.cpp_type == FD.CPPTYPE_MESSAGE:
        getattr(target, leaf.name).CopyFrom(value)
    else:
        setattr(target, leaf.name, value)


def parse_value(field: FD, text: str) -> Any:
    """The value `text` gives `field` (a scalar, enum or well-known message)."""
    cpp = field.cpp_type
    if cpp == FD.CPPTYPE_MESSAGE:
        return _parse_message(message_type(field).full_name, text)
    parser = _SCALAR_PARSERS.get(cpp)
    if cpp == FD.CPPTYPE_STRING and field.type == FD.TYPE_BYTES:
        parser = _parse_bytes
    if cpp == FD.CPPTYPE_ENUM:
        return _parse_enum(enum_type(field), text)
    if parser is None:
        raise FieldError(f"cannot set a {field.type} field from text")
    if cpp in _INT_RANGES:
        low, high = _INT_RANGES[cpp]
        number = parser(text)
        if not low <= number <= high:
            raise FieldError(f"{text!r} is out of range")
        return number
    return parser(text)


def _parse_int(text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise FieldError(f"{text!r} is not an integer") from None


def _parse_float(text: str) -> float:
    special = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
    if text in special:
        return special[text]
    try:
        value = float(text)
    except ValueError:
        raise FieldError(f"{text!r} is not a number") from None
    if math.isinf(value) or math.isnan(value):
        raise FieldError(f"{text!r} is not a number")
    return value


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise FieldError(f"{text!r} is not true or false")


def _parse_bytes(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise FieldError("not valid base64") from None


def _parse_enum(enum_type: descriptor.EnumDescriptor, text: str) -> int:
    value = enum_type.values_by_name.get(text)
    if value is not None:
        return int(value.number)
    if text.lstrip("-").isdigit() and int(text) in enum_type.values_by_number:
        return int(text)
    names = ", ".join(v.name for v in enum_type.values)
    raise FieldError(f"{text!r} is not one of {names}")


def _parse_message(full_name: str, text: str) -> Message:
    try:
        if full_name == TIMESTAMP:
            timestamp = timestamp_pb2.Timestamp()
            timestamp.FromJsonString(text)
            return timestamp
        if full_name == DURATION:
            duration = duration_pb2.Duration()
            duration.FromJsonString(text)
            return duration
    except ValueError as exc:
        raise FieldError(str(exc)) from None
    if full_name == FIELD_MASK:
        return field_mask_pb2.FieldMask(paths=parse_field_mask(text))
    wrapper = _WRAPPERS.get(full_name)
    if wrapper is None:
        raise FieldError(f"a {full_name} cannot be given as text")
    value_field = wrapper.DESCRIPTOR.fields_by_name["value"]
    return wrapper(value=parse_value(value_field, text))


def parse_field_mask(text: str) -> list[str]:
    """A FieldMask's paths from its JSON form; snake_case parts are kept."""
    paths = []
    for raw in text.split(","):
        path = raw.strip()
        if not path:
            continue
        parts = [p if "_" in p else _camel_to_snake(p) for p in path.split(".")]
        paths.append(".".join(parts))
    return paths


def _camel_to_snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


_SCALAR_PARSERS: dict[int, Callable[[str], Any]] = {
    FD.CPPTYPE_INT32: _parse_int,
    FD.CPPTYPE_INT64: _parse_int,
    FD.CPPTYPE_UINT32: _parse_int,
    FD.CPPTYPE_UINT64: _parse_int,
    FD.CPPTYPE_DOUBLE: _parse_float,
    FD.CPPTYPE_FLOAT: _parse_float,
    FD.CPPTYPE_BOOL: _parse_bool,
    FD.CPPTYPE_STRING: str,
}
