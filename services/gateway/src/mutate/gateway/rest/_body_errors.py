"""Why a JSON body does not fit its request message, said for a person.

protobuf's ParseError text is written for programmers: it names internal types
(`mutate.v1.Configuration`), repeats "Failed to parse X field:" at every level
and lists the known fields as a Python list. When parsing fails, `explain`
walks the body along the message descriptor and describes the first problem
it finds: the field's JSON path as the client wrote it, what was wrong, and,
for an unknown name close to a known one, "did you mean". Problems the walk
does not look for (a malformed timestamp, an integer out of range) keep
protobuf's words, without its nesting.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor

from mutate.gateway.rest import _fields

FD = descriptor.FieldDescriptor

_INTEGERS = frozenset(
    {FD.CPPTYPE_INT32, FD.CPPTYPE_INT64, FD.CPPTYPE_UINT32, FD.CPPTYPE_UINT64}
)
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
        nested = _fields.message_type(field)
        if nested.full_name.startswith("google.protobuf."):
            return None  # timestamps, durations, wrappers: protobuf's words
        return _object(nested, value, path)
    if cpp == FD.CPPTYPE_ENUM:
        return _enum(_fields.enum_type(field), value, path)
    if cpp == FD.CPPTYPE_BOOL and not isinstance(value, bool):
        return _wrong_type(path, "true or false", value)
    if cpp == FD.CPPTYPE_STRING and not isinstance(value, str):
        what = "a base64 string" if field.type == FD.TYPE_BYTES else "a string"
        return _wrong_type(path, what, value)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if cpp in _INTEGERS:
        whole = isinstance(value, int) or (is_number and float(value).is_integer())
        if not (whole or isinstance(value, str)):
            return _wrong_type(path, "a whole number", value)
    if cpp in _FLOATS and not (is_number or isinstance(value, str)):
        return _wrong_type(path, "a number", value)
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
