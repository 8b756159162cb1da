"""CSV, JSON and NDJSON writers with the contract's value formatting."""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal, TextIO, cast

from mutate.v1 import configuration_pb2 as cfg

from ._errors import EngineError
from ._table import Table
from ._values import (
    TEXT_FORMATTERS,
    MissingValue,
    column_letter,
    json_value,
    text_of,
)

__all__ = ["OutputSpec", "WriteResult", "check_missing", "output_spec", "write_table"]

_QUOTING: dict[int, Literal[0, 1, 2, 3]] = {
    cfg.OutputFormat.QUOTING_UNSPECIFIED: csv.QUOTE_MINIMAL,
    cfg.OutputFormat.MINIMAL: csv.QUOTE_MINIMAL,
    cfg.OutputFormat.ALL: csv.QUOTE_ALL,
    cfg.OutputFormat.NON_NUMERIC: csv.QUOTE_NONNUMERIC,
    cfg.OutputFormat.NONE: csv.QUOTE_NONE,
}
_INJECTION_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_BATCH = 2048


@dataclass(frozen=True)
class OutputSpec:
    kind: str  # "csv", "json", "ndjson"
    delimiter: str = ","
    encoding: str = "utf-8"
    include_headers: bool = True
    quoting: Literal[0, 1, 2, 3] = csv.QUOTE_MINIMAL
    line_terminator: str = "\n"
    neutralize: bool = False

    @property
    def content_type(self) -> str:
        charset = codecs.lookup(self.encoding).name
        charset = "utf-8" if charset.startswith("utf-8") else charset
        media = {"csv": "text/csv", "json": "application/json"}.get(
            self.kind, "application/x-ndjson"
        )
        return f"{media}; charset={charset}"

    @property
    def extension(self) -> str:
        return "." + self.kind


@dataclass(frozen=True)
class WriteResult:
    rows: int
    columns: int
    warnings: list[str]


def output_spec(configuration: cfg.Configuration) -> OutputSpec:
    fmt = configuration.output_format
    kind = {
        cfg.OutputFormat.CSV: "csv",
        cfg.OutputFormat.JSON: "json",
        cfg.OutputFormat.NDJSON: "ndjson",
    }.get(fmt.type)
    if kind is None:
        json_types = (cfg.XLSX_TO_JSON, cfg.CSV_TO_JSON)
        kind = "json" if configuration.conversion_type in json_types else "csv"
    return OutputSpec(
        kind=kind,
        delimiter=fmt.delimiter or ",",
        encoding=fmt.encoding or "utf-8",
        include_headers=fmt.include_headers
        if fmt.HasField("include_headers")
        else True,
        quoting=_QUOTING.get(fmt.quoting, csv.QUOTE_MINIMAL),
        line_terminator=fmt.line_terminator or "\n",
        neutralize=fmt.neutralize_formulas,
    )


def check_missing(table: Table, height: int, width: int, *, fail: bool) -> list[str]:
    """Formula cells still without a value in what will be written."""
    if not table.missing_count:
        return []
    names = [
        table.cell_name(r, c)
        for r in range(height)
        for c, value in enumerate(table.rows[r][:width])
        if isinstance(value, MissingValue)
    ]
    if not names:
        return []
    shown = ", ".join(names[:20]) + (
        f" and {len(names) - 20} more" if len(names) > 20 else ""
    )
    where = f"sheet {table.sheet!r}: " if table.sheet else ""
    if fail:
        raise EngineError(
            "MISSING_FORMULA_VALUES",
            f"{where}{len(names)} formula cells have no cached value ({shown}); "
            "add an EVALUATE_FORMULAS rule to compute them, or set "
            "readOptions.missingFormulaValues to WARN to leave them empty",
        )
    return [f"{where}formula cells without a value left empty: {shown}"]


def write_table(
    table: Table, spec: OutputSpec, output: BinaryIO, *, missing_fail: bool
) -> WriteResult:
    height = table.used_height()
    width = table.used_width()
    warnings = check_missing(table, height, width, fail=missing_fail)
    skip_header = table.has_header and not spec.include_headers
    first = 1 if skip_header else 0
    data_rows = max(height - table.data_start, 0)
    raw = cast(BinaryIO, _Unclosable(output))
    text = io.TextIOWrapper(raw, encoding=spec.encoding, errors="strict", newline="")
    try:
        if spec.kind == "csv":
            _write_csv(table, spec, text, first, height, width)
        else:
            warnings += _write_json(table, spec, text, height, width)
        text.flush()
    finally:
        text.detach()
    return WriteResult(rows=data_rows, columns=width, warnings=warnings)


class _Unclosable(io.RawIOBase):
    """Lets TextIOWrapper write into the caller's stream without owning it."""

    def __init__(self, target: BinaryIO) -> None:
        self._target = target

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._target.write(bytes(data))
        return len(data)


def _row_texts(
    table: Table, spec: OutputSpec, start: int, stop: int, width: int
) -> Iterator[list[Any]]:
    formatters = TEXT_FORMATTERS
    numeric = spec.quoting == csv.QUOTE_NONNUMERIC
    blank = [""] * width
    for row in table.rows[start:stop]:
        if numeric:
            cells = [_numeric_cell(v) for v in row[:width]]
        else:
            cells = [
                v if type(v) is str else formatters.get(type(v), str)(v)
                for v in row[:width]
            ]
        if len(cells) < width:
            cells.extend(blank[: width - len(cells)])
        if spec.neutralize:
            cells = [_neutralized(v, row, i) for i, v in enumerate(cells)]
        yield cells


def _numeric_cell(value: Any) -> Any:
    if type(value) is float:
        return int(value) if value.is_integer() and abs(value) < 1e16 else value
    if type(value) is int:
        return value
    return text_of(value)


def _neutralized(text: Any, row: list[Any], index: int) -> Any:
    # Only text cells: a negative number is data, not a formula.
    if (
        type(text) is str
        and text.startswith(_INJECTION_PREFIXES)
        and (index >= len(row) or type(row[index]) is str)
    ):
        return "'" + text
    return text


def _write_csv(
    table: Table,
    spec: OutputSpec,
    text: TextIO,
    start: int,
    height: int,
    width: int,
) -> None:
    if width == 0:
        return
    buffer = io.StringIO()
    writer = csv.writer(
        buffer,
        delimiter=spec.delimiter,
        quoting=spec.quoting,
        lineterminator=spec.line_terminator,
        quotechar='"',
        escapechar=None,
        doublequote=True,
    )
    # The csv module only quotes line-break characters that occur in the line
    # terminator: with "\n", a lone "\r" inside a cell would go out unquoted.
    stray = "".join(c for c in "\r\n" if c not in spec.line_terminator)
    rows = _row_texts(table, spec, start, height, width)
    position = start
    while True:
        batch = list(itertools.islice(rows, _BATCH))
        if not batch:
            return
        buffer.seek(0)
        buffer.truncate()
        for offset, cells in enumerate(batch):
            try:
                writer.writerow(cells)
            except csv.Error as exc:
                raise _unquotable(table, spec, position + offset, cells) from exc
        chunk = buffer.getvalue()
        if stray and any(char in chunk for char in stray):
            chunk = "".join(
                _careful_line(table, spec, position + offset, cells)
                for offset, cells in enumerate(batch)
            )
        try:
            text.write(chunk)
        except UnicodeEncodeError:
            _raise_encoding_error(table, spec, position, batch)
        position += len(batch)


def _careful_line(
    table: Table, spec: OutputSpec, position: int, cells: list[Any]
) -> str:
    """One CSV line quoting every field that holds any line-break character."""
    specials = (spec.delimiter, '"', "\r", "\n")
    fields = []
    for cell in cells:
        is_number = type(cell) in (int, float)
        field = str(cell)
        quote = spec.quoting == csv.QUOTE_ALL or (
            spec.quoting == csv.QUOTE_NONNUMERIC and not is_number
        )
        if not quote and any(char in field for char in specials):
            if spec.quoting == csv.QUOTE_NONE:
                raise _unquotable(table, spec, position, cells)
            quote = True
        fields.append('"' + field.replace('"', '""') + '"' if quote else field)
    return spec.delimiter.join(fields) + spec.line_terminator


def _raise_encoding_error(
    table: Table, spec: OutputSpec, position: int, batch: list[list[Any]]
) -> None:
    for offset, cells in enumerate(batch):
        try:
            spec.delimiter.join(str(c) for c in cells).encode(spec.encoding)
        except UnicodeEncodeError as exc:
            raise _encoding_error(table, spec, position + offset, cells) from exc
    raise EngineError("ENCODING_ERROR", "the output cannot be encoded")


def _encoding_error(
    table: Table, spec: OutputSpec, position: int, cells: list[Any]
) -> EngineError:
    for index, cell in enumerate(cells):
        try:
            str(cell).encode(spec.encoding)
        except UnicodeEncodeError as exc:
            bad = str(cell)[exc.start : exc.end]
            return EngineError(
                "ENCODING_ERROR",
                f"cell {table.cell_name(position, index)} holds {bad!r}, which "
                f"encoding {spec.encoding} cannot represent; choose utf-8",
            )
    return EngineError(
        "ENCODING_ERROR", f"row {table.row_numbers[position]} cannot be encoded"
    )


def _unquotable(
    table: Table, spec: OutputSpec, position: int, cells: list[Any]
) -> EngineError:
    specials = (spec.delimiter, '"', "\n", "\r")
    for index, cell in enumerate(cells):
        if any(char in str(cell) for char in specials):
            return EngineError(
                "VALIDATION_FAILED",
                f"cell {table.cell_name(position, index)} needs quoting "
                "(it holds the delimiter, a quote or a line break) but "
                "outputFormat.quoting is NONE",
            )
    return EngineError(
        "VALIDATION_FAILED", f"row {table.row_numbers[position]} cannot be written"
    )


def unique_keys(names: list[str]) -> tuple[list[str], list[str]]:
    """Header names made unique and non-empty, with what was renamed."""
    keys: list[str] = []
    seen: set[str] = set()
    notes: list[str] = []
    for index, name in enumerate(names):
        base = name if name else column_letter(index)
        key = base
        suffix = 2
        while key in seen:
            key = f"{base}_{suffix}"
            suffix += 1
        if key != name:
            notes.append(f"column {column_letter(index)} header {name!r} → {key!r}")
        seen.add(key)
        keys.append(key)
    return keys, notes


def _write_json(
    table: Table, spec: OutputSpec, text: TextIO, height: int, width: int
) -> list[str]:
    warnings: list[str] = []
    as_objects = table.has_header and spec.include_headers
    keys: list[str] = []
    if as_objects:
        names = [
            text_of(v).strip() for v in (table.rows[0][:width] if table.rows else [])
        ]
        names += [""] * (width - len(names))
        keys, renamed = unique_keys(names)
        if renamed:
            warnings.append("JSON keys made unique: " + "; ".join(renamed))
    start = table.data_start
    array = spec.kind == "json"
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    if array:
        text.write("[")
    first = True
    for position in range(start, height):
        row = table.rows[position]
        values = [json_value(v) for v in row[:width]]
        values += [None] * (width - len(values))
        item: Any = dict(zip(keys, values, strict=True)) if as_objects else values
        try:
            line = dumps(item)
            if array:
                text.write(("\n" if first else ",\n") + line)
            else:
                text.write(line + "\n")
        except UnicodeEncodeError as exc:
            raise _encoding_error(
                table, spec, position, [str(v) for v in values]
            ) from exc
        first = False
    if array:
        text.write("\n]\n" if not first else "]\n")
    return warnings
