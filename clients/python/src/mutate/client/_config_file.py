"""Reading configuration files: the proto3 JSON form of `Configuration`.

Unknown fields are refused, and the message names the whole path of the
first one (`rules[2].deleteRows.vaule`) with the closest known name, which
`json_format`'s own message does not.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from google.protobuf import descriptor, json_format

from mutate.client._errors import ConfigurationFileError
from mutate.v1 import configuration_pb2

# Output-only fields a file may carry when it came from `configs get --json`;
# the gateway sets them, so they are dropped instead of refused.
OUTPUT_ONLY_FIELDS: tuple[
    Literal["id", "version", "create_time", "update_time"], ...
] = ("id", "version", "create_time", "update_time")


def load_configuration(path: Path | str) -> configuration_pb2.Configuration:
    """Read `path` as a Configuration, refusing unknown fields."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationFileError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigurationFileError(f"{path} is not UTF-8 text: {exc}") from exc
    return parse_configuration(text, source=str(path))


def parse_configuration(
    text: str, *, source: str = "configuration"
) -> configuration_pb2.Configuration:
    """Parse proto3 JSON text into a Configuration, refusing unknown fields."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationFileError(
            f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno}): "
            f"{exc.msg}"
        ) from exc
    if not isinstance(document, dict):
        raise ConfigurationFileError(
            f"{source}: a configuration is a JSON object, not {_kind(document)}"
        )
    message_descriptor = configuration_pb2.Configuration.DESCRIPTOR
    for path, known in unknown_fields(document, message_descriptor):
        hint = difflib.get_close_matches(path.rsplit(".", 1)[-1], known, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigurationFileError(
            f"{source}: unknown field {path!r}{suggestion}; "
            "see docs/configuration.md for the fields a configuration has"
        )
    configuration = configuration_pb2.Configuration()
    try:
        json_format.ParseDict(document, configuration, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise ConfigurationFileError(f"{source}: {exc}") from exc
    for name in OUTPUT_ONLY_FIELDS:
        configuration.ClearField(name)
    return configuration


def unknown_fields(
    value: Any, message: descriptor.Descriptor, path: str = ""
) -> Iterator[tuple[str, list[str]]]:
    """(path, known names there) of each key `message` has no field for."""
    if not isinstance(value, dict) or _is_well_known(message):
        return
    fields: dict[str, descriptor.FieldDescriptor] = {}
    for field in message.fields:
        fields[field.json_name] = field
        fields[field.name] = field
    for key, item in value.items():
        known = fields.get(key)
        where = f"{path}{key}"
        if known is None:
            yield where, [f.json_name for f in message.fields]
        elif known.message_type is not None:
            yield from _unknown_in_field(item, known, where)


def _unknown_in_field(
    item: Any, field: descriptor.FieldDescriptor, where: str
) -> Iterator[tuple[str, list[str]]]:
    message = field.message_type
    assert message is not None  # only called for message fields
    if message.GetOptions().map_entry:
        value_field = message.fields_by_name["value"]
        if value_field.message_type is not None and isinstance(item, dict):
            for key, entry in item.items():
                yield from unknown_fields(
                    entry, value_field.message_type, f"{where}[{key!r}]."
                )
    elif field.is_repeated:
        if isinstance(item, list):
            for index, entry in enumerate(item):
                yield from unknown_fields(entry, message, f"{where}[{index}].")
    else:
        yield from unknown_fields(item, message, f"{where}.")


def _is_well_known(message: descriptor.Descriptor) -> bool:
    # Timestamp, Duration, Struct…: JSON strings or free-form values.
    return message.full_name.startswith("google.protobuf.")


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__
