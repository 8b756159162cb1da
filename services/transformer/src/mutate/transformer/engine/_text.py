"""Readers for CSV (encoding and delimiter sniffing, BOM, CR-only lines, ragged
rows) and JSON (array of objects, NDJSON, nested objects flattened)."""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
from typing import Any

from ._errors import EngineError
from ._limits import Limits
from ._table import Table
from ._values import text_of

__all__ = ["decode_text", "read_csv", "read_json"]

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_DELIMITERS = ",;\t|"


def decode_text(data: bytes, file_name: str, encoding: str = "") -> str:
    """Decode a text file: the given encoding, else BOM, UTF-8, then cp1252."""
    if not data.strip():
        raise EngineError("EMPTY_FILE", f"{file_name} is empty")
    if data.startswith(b"PK\x03\x04") or data.startswith(b"\xd0\xcf\x11\xe0"):
        raise EngineError(
            "WRONG_FILE_TYPE",
            f"{file_name} is a spreadsheet workbook, not a text file; "
            "use an XLSX conversion type",
        )
    if encoding:
        try:
            return data.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise EngineError(
                "ENCODING_ERROR", f"{file_name} is not valid {encoding} ({exc})"
            ) from exc
    for bom, name in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(name)
            except UnicodeDecodeError as exc:
                raise EngineError(
                    "ENCODING_ERROR", f"{file_name} is not valid {name} ({exc})"
                ) from exc
    if b"\x00" in data[:8192]:
        raise EngineError(
            "WRONG_FILE_TYPE", f"{file_name} is a binary file, not CSV or JSON text"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        # cp1252 leaves five bytes undefined; latin-1 maps every byte.
        return data.decode("latin-1")


def _sniff_delimiter(text: str) -> str:
    sample = text[:65536]
    try:
        return csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        lines = sample.splitlines()[:20]
        counts = {d: sum(line.count(d) for line in lines) for d in _DELIMITERS}
        best = max(counts, key=lambda d: counts[d])
        return best if counts[best] else ","


# TODO: CSV values stay text, so CSV_TO_JSON writes numbers as strings; type
# inference was left out on purpose (codes such as "00123" must survive) and
# would need an opt-in read option.
def read_csv(
    data: bytes,
    file_name: str,
    limits: Limits,
    *,
    delimiter: str = "",
    encoding: str = "",
    header_row: int = 1,
) -> Table:
    text = decode_text(data, file_name, encoding)
    delimiter = delimiter or _sniff_delimiter(text)
    rows: list[list[Any]] = []
    cells = 0
    try:
        for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
            cells += len(row)
            if cells > limits.max_cells:
                raise EngineError(
                    "LIMIT_EXCEEDED",
                    f"{file_name} holds more than {limits.max_cells} cells "
                    "(limit max_cells)",
                )
            rows.append(row)
    except csv.Error as exc:
        raise EngineError(
            "INVALID_FILE",
            f"{file_name} is not valid CSV (record {len(rows) + 1}: {exc})",
        ) from exc
    return _table(rows, list(range(1, len(rows) + 1)), header_row, limits, file_name)


def read_json(data: bytes, file_name: str, limits: Limits) -> Table:
    text = decode_text(data, file_name)
    records = _records(text, file_name)
    header: dict[str, None] = {}
    cells = 0
    if records and all(isinstance(r, list) for r in records):
        rows = [[_scalar(v) for v in r] for r in records]
        _check_cells(sum(len(row) for row in rows), limits, file_name)
        return _table(rows, list(range(1, len(rows) + 1)), 1, limits, file_name)
    flat: list[dict[str, Any]] = []
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise EngineError(
                "INVALID_FILE",
                f"{file_name}: record {number} is not an object "
                f"(found {type(record).__name__})",
            )
        item: dict[str, Any] = {}
        _flatten("", record, item)
        header.update(dict.fromkeys(item))
        flat.append(item)
        cells += len(item)
        _check_cells(cells, limits, file_name)
    keys = list(header)
    # The table is dense: every record gets every key.
    _check_cells(len(keys) * len(flat), limits, file_name)
    rows = [list(keys)] + [[item.get(key, "") for key in keys] for item in flat]
    return _table(rows, list(range(1, len(rows) + 1)), 1, limits, file_name)


def _check_cells(cells: int, limits: Limits, file_name: str) -> None:
    if cells > limits.max_cells:
        raise EngineError(
            "LIMIT_EXCEEDED",
            f"{file_name} holds more than {limits.max_cells} cells (limit max_cells)",
        )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _number(text: str) -> Any:
    # A number too large for a float keeps its text rather than becoming inf.
    value = float(text)
    return value if math.isfinite(value) else text


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_number)


def _loads(text: str) -> Any:
    value, end = _DECODER.raw_decode(text)
    if text[end:].strip():
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def _records(text: str, file_name: str) -> list[Any]:
    stripped = text.lstrip("\ufeff").strip()
    try:
        if "\n" not in stripped:
            loaded = _loads(stripped)
            return list(loaded) if isinstance(loaded, list) else [loaded]
        if stripped.startswith("["):
            try:
                return list(_loads(stripped))
            except json.JSONDecodeError as exc:
                if exc.msg != "Extra data":
                    raise
                # NDJSON whose lines are arrays.
        return [_loads(line) for line in stripped.splitlines() if line.strip()]
    # ValueError covers JSONDecodeError, NaN and integers too long to convert.
    except (ValueError, RecursionError) as exc:
        raise EngineError(
            "INVALID_FILE", f"{file_name} is not valid JSON or NDJSON ({exc})"
        ) from exc


def _flatten(prefix: str, value: dict[str, Any], into: dict[str, Any]) -> None:
    for key, item in value.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(item, dict) and item:
            _flatten(name, item, into)
        else:
            into[name] = _scalar(item)


def _scalar(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return value


def _table(
    rows: list[list[Any]],
    numbers: list[int],
    header_row: int,
    limits: Limits,
    file_name: str,
) -> Table:
    if header_row > 1:
        rows = rows[header_row - 1 :]
        numbers = numbers[header_row - 1 :]
    width = max((len(row) for row in rows), default=0)
    if width > limits.max_columns:
        raise EngineError(
            "LIMIT_EXCEEDED",
            f"{file_name} has {width} columns, over the limit max_columns="
            f"{limits.max_columns}",
        )
    table = Table(
        sheet="",
        rows=rows,
        row_numbers=numbers,
        columns=list(range(width)),
        has_header=header_row > 0 and bool(rows),
    )
    if table.has_header:
        table.header_names = {
            col: text_of(value).strip() for col, value in enumerate(rows[0])
        }
    return table
