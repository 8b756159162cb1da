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


# What non-text files start with, so that a PDF or a photo sent to a CSV
# configuration is named as such instead of being read as one odd column.
_SIGNATURES = (
    # With the version digits, so a CSV whose first cell is "%PDF-…" text
    # still reads.
    (b"%PDF-1.", "a PDF"),
    (b"%PDF-2.", "a PDF"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\xd0\xcf\x11\xe0", "a legacy Office file (.xls or .doc)"),
)
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
# Text in an 8-bit encoding or UTF-8 never holds NUL; binary data nearly always
# does within its first few KB.
_NUL_WINDOW = 8192


def decode_text(
    data: bytes, file_name: str, encoding: str = "", *, expected: str = "CSV"
) -> str:
    """Decode a text file: the given encoding, else BOM, UTF-8, then cp1252.

    `expected` ("CSV", "JSON") names the format in the refusal of a binary file.
    """
    if not data.strip():
        raise EngineError("EMPTY_FILE", f"{file_name} is empty")
    bom_encoding = _bom_encoding(data)
    _refuse_binary(data, file_name, expected, (encoding, bom_encoding))
    if encoding:
        try:
            return data.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise EngineError(
                "ENCODING_ERROR", f"{file_name} is not valid {encoding} ({exc})"
            ) from exc
    if bom_encoding:
        try:
            return data.decode(bom_encoding)
        except UnicodeDecodeError as exc:
            raise EngineError(
                "ENCODING_ERROR", f"{file_name} is not valid {bom_encoding} ({exc})"
            ) from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        # cp1252 leaves five bytes undefined; latin-1 maps every byte.
        return data.decode("latin-1")


def _bom_encoding(data: bytes) -> str:
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name
    return ""


def _refuse_binary(
    data: bytes, file_name: str, expected: str, encodings: tuple[str, str]
) -> None:
    """WRONG_FILE_TYPE for content that is plainly not text, told from its start.

    `encodings` are the declared one and the BOM's; either being UTF-16 or UTF-32
    makes NUL bytes ordinary text, as they were accepted before this check.
    """
    looks_like, hint = _binary_kind(data, expected, encodings)
    if looks_like:
        raise EngineError(
            "WRONG_FILE_TYPE",
            f"{file_name} looks like {looks_like}, not {expected} text{hint}",
        )


def _binary_kind(
    data: bytes, expected: str, encodings: tuple[str, str]
) -> tuple[str, str]:
    """What the file seems to be and a hint, or ("", "") for text."""
    for signature, looks_like in _SIGNATURES:
        if data.startswith(signature):
            return looks_like, ""
    if data.startswith(_ZIP_SIGNATURES):
        # The central directory at the end names every part of the archive.
        if b"xl/workbook" in data:
            return "an XLSX workbook", "; use an XLSX conversion type"
        return "a ZIP archive", ""
    if any(map(_is_wide, encodings)) or b"\x00" not in data[:_NUL_WINDOW]:
        return "", ""
    order = _bomless_utf16(data[:_NUL_WINDOW])
    if order:
        hint = (
            f"; set readOptions.csvEncoding to utf-16-{order}"
            if expected == "CSV"
            else "; save it as UTF-8"
        )
        return "UTF-16 text without a byte-order mark", hint
    return "binary data (it holds NUL bytes)", ""


def _is_wide(encoding: str) -> bool:
    """True for UTF-16 and UTF-32, where NUL bytes are part of ordinary text."""
    try:
        return codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))
    except LookupError:
        return False


def _bomless_utf16(sample: bytes) -> str:
    """The byte order ("le", "be") of mostly-Latin UTF-16 text, else "".

    Such text has a NUL in nearly every high byte and none in the low ones.
    """
    sample = sample[: len(sample) // 2 * 2]
    if not sample:
        return ""
    for order, low, high in (
        ("le", sample[0::2], sample[1::2]),
        ("be", sample[1::2], sample[0::2]),
    ):
        if low.count(0) == 0 and high.count(0) >= 0.9 * len(high):
            return order
    return ""


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
    text = decode_text(data, file_name, expected="JSON")
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
