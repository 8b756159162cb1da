"""Why a JSON body does not fit its request message, said for a person.

protobuf's ParseError text is written for programmers: it names internal types
(`mutate.v1.Configuration`), repeats "Failed to parse X field:" at every level
and lists the known fields as a Python list. When parsing fails, `explain`
walks the body along the message descriptor and describes the first problem
it finds: the field's JSON path as the client wrote it, what was wrong, and,
for an unknown name close to a known one, "did you mean". Values are checked
the way json_format reads them (integers in range, base64 bytes, durations and
timestamps in their JSON forms), so its exceptions (`invalid literal for
int()`, `Value out of range`) do not reach the client. Problems the walk does
not look for keep protobuf's words, without its nesting.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import json
import re
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor, duration_pb2, timestamp_pb2

from mutate.gateway.rest import _fields

FD = descriptor.FieldDescriptor

# The values each integer type holds (protobuf's "Value out of range").
_INTEGER_RANGES = {
    FD.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FD.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FD.CPPTYPE_UINT32: (0, 2**32 - 1),
    FD.CPPTYPE_UINT64: (0, 2**64 - 1),
}
# Well-known types written as a JSON string: what to say is expected.
_STRING_FORMS: dict[
    str, tuple[type[duration_pb2.Duration] | type[timestamp_pb2.Timestamp], str]
] = {
    "google.protobuf.Duration": (
        duration_pb2.Duration,
        'a duration in seconds like "3600s" or "1.5s"',
    ),
    "google.protobuf.Timestamp": (
        timestamp_pb2.Timestamp,
        'an RFC 3339 timestamp like "2024-01-31T09:30:00Z"',
    ),
}
_DURATION_SHAPE = re.compile(r"-?\d+(\.\d+)?s")
_MAX_DURATION_SECONDS = 315_576_000_000  # ±10,000 years, as protobuf allows
_FLOATS = frozenset({FD.CPPTYPE_DOUBLE, FD.CPPTYPE_FLOAT})
_SHOWN_VALUE_CHARS = 40
_LISTED_NAMES = 20
_PROTOBUF_NESTING = re.compile(r"Failed to parse \w+ field: ")


@dataclass(frozen=True)
class BodyProblem:
    """The first thing wrong with a body: where (a JSON path) and what."""

    field: str
    message: str


def explain(message: descriptor.Descriptor, data: Any) -> BodyProblem | None:
    """The first problem of `data` as the JSON of `message`; None if none found."""
    return _object(message, data, "")


def explain_field(field: FD, data: Any) -> BodyProblem | None:
    """The same for a body that is one field of the request (`body: "x"`)."""
    return _field(field, data, "")


def protobuf_text(exc: Exception) -> str:
    """protobuf's message without its "Failed to parse X field:" nesting."""
    return _PROTOBUF_NESTING.sub("", str(exc)).rstrip(".") or type(exc).__name__


def _object(message: descriptor.Descriptor, data: Any, path: str) -> BodyProblem | None:
    if not isinstance(data, dict):
        return _wrong_type(path, "a JSON object", data)
    oneofs: dict[str, str] = {}
    for key, value in data.items():
        field = _fields.lookup_field(message, key)
        if field is None:
            return _unknown(message, key, path)
        child = f"{path}.{key}" if path else key
        oneof = field.containing_oneof
        if oneof is not None and value is not None:
            other = oneofs.get(oneof.name)
            if other is not None:
                return BodyProblem(
                    child,
                    f"{_named(child)} and {other!r} cannot both be set: "
                    "give only one of them",
                )
            oneofs[oneof.name] = key
        problem = _field(field, value, child)
        if problem is not None:
            return problem
    return None


def _field(field: FD, value: Any, path: str) -> BodyProblem | None:
    if value is None:
        return None  # proto3 JSON: null is the field's default
    if _fields.is_map(field):
        if not isinstance(value, dict):
            return _wrong_type(path, "a JSON object", value)
        value_field = _fields.message_type(field).fields_by_name["value"]
        for key, item in value.items():
            problem = _single(value_field, item, f"{path}.{key}")
            if problem is not None:
                return problem
        return None
    if _fields.is_repeated(field):
        if not isinstance(value, list):
            return _wrong_type(path, "a list", value)
        for index, item in enumerate(value):
            problem = _single(field, item, f"{path}[{index}]")
            if problem is not None:
                return problem
        return None
    return _single(field, value, path)


def _single(field: FD, value: Any, path: str) -> BodyProblem | None:
    cpp = field.cpp_type
    if value is None:
        return BodyProblem(path, f"{_named(path)} must not be null")
    if cpp == FD.CPPTYPE_MESSAGE:
        return _message(_fields.message_type(field), value, path)
    if cpp == FD.CPPTYPE_ENUM:
        return _enum(_fields.enum_type(field), value, path)
    if cpp == FD.CPPTYPE_BOOL and not isinstance(value, bool):
        return _wrong_type(path, "true or false", value)
    if cpp == FD.CPPTYPE_STRING:
        if field.type == FD.TYPE_BYTES:
            return _bytes(value, path)
        if not isinstance(value, str):
            return _wrong_type(path, "a string", value)
    if cpp in _INTEGER_RANGES:
        return _integer(_INTEGER_RANGES[cpp], value, path)
    if cpp in _FLOATS and _as_float(value) is None:
        too_big = isinstance(value, int) and not isinstance(value, bool)
        return _wrong_type(path, "a finite number" if too_big else "a number", value)
    return None


def _message(
    nested: descriptor.Descriptor, value: Any, path: str
) -> BodyProblem | None:
    name = nested.full_name
    if name in _STRING_FORMS:
        return _string_form(name, value, path)
    if name.startswith("google.protobuf."):
        # Wrappers (Int32Value, StringValue…) are written as their one value.
        wrapped = nested.fields_by_name.get("value")
        if name.endswith("Value") and wrapped is not None:
            return _single(wrapped, value, path)
        return None  # Struct, Value, FieldMask, Any: protobuf's words
    return _object(nested, value, path)


def _string_form(name: str, value: Any, path: str) -> BodyProblem | None:
    message_class, expected = _STRING_FORMS[name]
    if not isinstance(value, str):
        return _wrong_type(path, expected, value)
    try:
        message_class().FromJsonString(value)
    except ValueError:
        if name == "google.protobuf.Duration" and _DURATION_SHAPE.fullmatch(value):
            limit = _MAX_DURATION_SECONDS
            expected = f"a duration within -{limit}s..{limit}s"
        return _wrong_type(path, expected, value)
    return None


def _integer(bounds: tuple[int, int], value: Any, path: str) -> BodyProblem | None:
    number = _as_integer(value)
    if number is None:
        return _wrong_type(path, "a whole number", value)
    low, high = bounds
    if not low <= number <= high:
        return _wrong_type(path, f"a whole number within range {low}..{high}", value)
    return None


def _as_integer(value: Any) -> int | None:
    """`value` as json_format reads an integer (3, 3.0, "3", "3e2"), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if " " in value:
            return None
        try:
            return int(value)
        except ValueError:
            pass
    number = _as_float(value)
    if number is None or not number.is_integer():
        return None  # also NaN and the infinities
    return int(number)


def _as_float(value: Any) -> float | None:
    """`value` as json_format reads a float, or None."""
    if isinstance(value, bool):
        return None
    if not isinstance(value, int | float | str):
        return None
    try:
        return float(value)  # strings too: "1.5", "NaN", "Infinity"
    except (ValueError, OverflowError):  # OverflowError: a 400-digit integer
        return None


def _bytes(value: Any, path: str) -> BodyProblem | None:
    expected = "base64 data (standard or URL-safe alphabet)"
    if not isinstance(value, str):
        return _wrong_type(path, expected, value)
    # Decoded the way json_format does: padding added, then lenient decoding.
    encoded = value.encode("utf-8")
    try:
        base64.urlsafe_b64decode(encoded + b"=" * (4 - len(encoded) % 4))
    except (binascii.Error, ValueError):
        return _wrong_type(path, expected, value)
    return None


def _enum(enum: descriptor.EnumDescriptor, value: Any, path: str) -> BodyProblem | None:
    names = [v.name for v in enum.values]
    if isinstance(value, int) and not isinstance(value, bool):
        return None  # a number; protobuf knows which ones are open
    if isinstance(value, str) and value in enum.values_by_name:
        return None
    listed = ", ".join(names)
    if not isinstance(value, str):
        return _wrong_type(path, f"one of {listed}", value)
    guess = _closest(value, names)
    hint = f'; did you mean "{guess}"?' if guess else f"; expected one of {listed}"
    return BodyProblem(path, f'{_named(path)} has no value "{value}"{hint}')


def _unknown(message: descriptor.Descriptor, key: Any, path: str) -> BodyProblem:
    where = f"in {_named(path)}" if path else "in the request body"
    by_name = {f.json_name: f.json_name for f in message.fields}
    by_name.update({f.name: f.json_name for f in message.fields})
    match = _closest(str(key), list(by_name))
    child = f"{path}.{key}" if path else str(key)
    if match:
        hint = f'did you mean "{by_name[match]}"?'
    else:
        known = [f.json_name for f in message.fields]
        more = ", …" if len(known) > _LISTED_NAMES else ""
        hint = "known fields: " + ", ".join(known[:_LISTED_NAMES]) + more
    return BodyProblem(child, f'unknown field "{key}" {where}; {hint}')


def _closest(word: str, candidates: list[str]) -> str | None:
    # Case is the commonest slip (`conversiontype`); compare without it.
    lowered = {c.lower(): c for c in candidates}
    found = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[found[0]] if found else None


def _wrong_type(path: str, expected: str, value: Any) -> BodyProblem:
    subject = _named(path) if path else "the request body"
    return BodyProblem(
        path or "body", f"{subject} must be {expected}, not {_shown(value)}"
    )


def _named(path: str) -> str:
    return f'field "{path}"'


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    text = json.dumps(value, ensure_ascii=False)
    if len(text) > _SHOWN_VALUE_CHARS:
        text = text[: _SHOWN_VALUE_CHARS - 1] + "…"
    if isinstance(value, bool):
        return text
    kind = "a string" if isinstance(value, str) else "a number"
    return f"{kind} ({text})"
