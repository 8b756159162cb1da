"""The conversion pipeline: read, run the rules in order with their log, write."""

from __future__ import annotations

import datetime
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from mutate.v1 import configuration_pb2 as cfg
from mutate.v1 import transformer_pb2

from . import _rules
from ._errors import EngineError
from ._formulas import evaluate
from ._limits import Limits
from ._table import Table
from ._text import read_csv, read_json
from ._validation import RULE_TYPE_OF, validate_configuration
from ._values import FormatKind, MissingValue, text_of
from ._writers import check_missing, output_spec, write_table
from ._xlsx import XlsxWorkbook
from ._xlsx_parts import SheetInfo

__all__ = ["ConversionResult", "convert", "preview"]

logger = logging.getLogger(__name__)

#: Limits are frozen, so one shared default is safe.
DEFAULT_LIMITS = Limits()
_XLSX_TYPES = (cfg.XLSX_TO_CSV, cfg.XLSX_TO_JSON)
_CSV_TYPES = (cfg.CSV_TO_CSV, cfg.CSV_TO_JSON)
_KIND_OF_TYPE = {
    datetime.datetime: FormatKind.DATETIME,
    datetime.date: FormatKind.DATE,
    datetime.time: FormatKind.TIME,
    datetime.timedelta: FormatKind.DURATION,
}


@dataclass(frozen=True)
class ConversionResult:
    """What a successful conversion wrote and how it went."""

    rows: int
    columns: int
    execution_log: list[cfg.ExecutionLogEntry]
    warnings: list[str]
    content_type: str
    file_extension: str

    def output_file_name(self, input_name: str) -> str:
        """`report.xlsx` → `report.csv` (or `.json`/`.ndjson`)."""
        stem, _ = os.path.splitext(os.path.basename(input_name) or "output")
        return (stem or "output") + self.file_extension


def convert(
    data: bytes,
    file_name: str,
    configuration: cfg.Configuration,
    output: BinaryIO,
    *,
    limits: Limits = DEFAULT_LIMITS,
    progress: Callable[[int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> ConversionResult:
    """Apply `configuration` to the file and write the result to `output`.

    Raises EngineError, carrying the execution log so far, for anything that
    stops the conversion.
    """
    run = _Run(data, file_name, configuration, limits, progress, should_cancel)
    try:
        table = run.execute()
        run.report(90)
        spec = output_spec(configuration)
        run.check_time()
        written = write_table(table, spec, output, missing_fail=run.missing_fail)
    except EngineError as exc:
        exc.execution_log = list(run.log)
        raise
    finally:
        run.close()
    run.report(100)
    return ConversionResult(
        rows=written.rows,
        columns=written.columns,
        execution_log=list(run.log),
        warnings=run.warnings + written.warnings,
        content_type=spec.content_type,
        file_extension=spec.extension,
    )


def preview(
    data: bytes,
    file_name: str,
    configuration: cfg.Configuration,
    *,
    max_rows: int = 20,
    limits: Limits = DEFAULT_LIMITS,
) -> transformer_pb2.PreviewResponse:
    """The first rows before and after the rules; a failure fills `error`."""
    max_rows = min(max(max_rows or 20, 1), 1000)
    response = transformer_pb2.PreviewResponse()
    run = _Run(data, file_name, configuration, limits, None, None)
    run.snapshot_rows = max_rows
    try:
        table = run.execute()
        height, width = table.used_height(), table.used_width()
        run.warnings += check_missing(table, height, width, fail=run.missing_fail)
        response.after.CopyFrom(_preview_table(table, max_rows, height, width))
    except EngineError as exc:
        response.error.CopyFrom(exc.to_proto())
    finally:
        run.close()
    if run.snapshot is not None:
        response.before.CopyFrom(run.snapshot)
    response.execution_log.extend(run.log)
    response.warnings.extend(run.warnings)
    return response


def _preview_table(
    table: Table, max_rows: int, height: int | None = None, width: int | None = None
) -> transformer_pb2.TablePreview:
    height = table.used_height() if height is None else height
    width = table.used_width() if width is None else width
    preview = transformer_pb2.TablePreview(
        worksheet=table.sheet,
        total_rows=max(height - table.data_start, 0),
        total_columns=width,
    )
    if table.has_header:
        preview.header.extend(table.header_texts()[:width])
    for position in range(table.data_start, min(height, table.data_start + max_rows)):
        row = table.rows[position]
        cells = [text_of(row[i]) if i < len(row) else "" for i in range(width)]
        preview.rows.add(row_number=table.row_numbers[position], cells=cells)
    return preview


@dataclass
class _Run:
    data: bytes
    file_name: str
    configuration: cfg.Configuration
    limits: Limits
    progress: Callable[[int], None] | None
    should_cancel: Callable[[], bool] | None
    log: list[cfg.ExecutionLogEntry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    snapshot_rows: int = 0
    snapshot: transformer_pb2.TablePreview | None = None
    workbook: XlsxWorkbook | None = None
    table: Table | None = None
    deadline: float = 0.0

    @property
    def options(self) -> cfg.ReadOptions:
        return self.configuration.read_options

    @property
    def missing_fail(self) -> bool:
        return self.options.missing_formula_values != cfg.ReadOptions.WARN

    @property
    def header_row(self) -> int:
        return self.options.header_row if self.options.HasField("header_row") else 1

    @property
    def skip_hidden(self) -> bool:
        return self.options.hidden_content == cfg.ReadOptions.SKIP

    def report(self, percent: int) -> None:
        if self.progress is not None:
            self.progress(percent)

    def check_time(self) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise EngineError("CANCELLED", "the conversion was cancelled")
        if time.monotonic() > self.deadline:
            raise EngineError(
                "TIMEOUT",
                f"the conversion ran longer than {self.limits.max_run_seconds:g} s "
                "(limit max_run_seconds)",
                retryable=True,
            )

    def close(self) -> None:
        if self.workbook is not None:
            self.workbook.close()
            self.workbook = None

    # -- reading -------------------------------------------------------------

    def execute(self) -> Table:
        self.deadline = time.monotonic() + self.limits.max_run_seconds
        self.report(0)
        problems = validate_configuration(self.configuration)
        if problems:
            first = problems[0]
            raise EngineError(
                "INVALID_CONFIGURATION",
                "; ".join(f"{p.field}: {p.message}" for p in problems),
                rule_id=first.rule_id or None,
            )
        self._check_input()
        self._open()
        self.report(10)
        self._run_rules()
        return self._current()

    def _check_input(self) -> None:
        if len(self.data) > self.limits.max_input_bytes:
            raise EngineError(
                "LIMIT_EXCEEDED",
                f"{self.file_name} is {len(self.data)} bytes, over the limit "
                f"max_input_bytes={self.limits.max_input_bytes}",
            )
        if not self.data:
            raise EngineError("EMPTY_FILE", f"{self.file_name} is empty (0 bytes)")

    def _input_kind(self) -> str:
        conversion = self.configuration.conversion_type
        if conversion in _XLSX_TYPES:
            return "xlsx"
        if conversion in _CSV_TYPES:
            return "csv"
        if conversion == cfg.JSON_TO_CSV:
            return "json"
        extension = os.path.splitext(self.file_name)[1].lower()
        container = self.data.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0"))
        if extension in (".xlsx", ".xlsm", ".xls") or container:
            return "xlsx"
        if extension in (".json", ".ndjson", ".jsonl"):
            return "json"
        return "csv"

    def _open(self) -> None:
        kind = self._input_kind()
        if kind == "xlsx":
            self.workbook = XlsxWorkbook(self.data, self.file_name, self.limits)
            return
        if kind == "json":
            table = read_json(self.data, self.file_name, self.limits)
        else:
            table = read_csv(
                self.data,
                self.file_name,
                self.limits,
                delimiter=self.options.csv_delimiter,
                encoding=self.options.csv_encoding,
                header_row=self.header_row,
            )
        self._set_table(table)

    def _load(self, sheet: SheetInfo) -> Table:
        assert self.workbook is not None
        return self.workbook.load(
            sheet,
            header_row=self.header_row,
            skip_hidden=self.skip_hidden,
            displayed=self.options.values == cfg.ReadOptions.DISPLAYED,
        )

    def _set_table(self, table: Table) -> None:
        if table.width > self.limits.max_columns:
            raise EngineError(
                "LIMIT_EXCEEDED",
                f"sheet {table.sheet!r} has {table.width} columns, over the limit "
                f"max_columns={self.limits.max_columns}",
            )
        self.table = table
        if self.snapshot_rows and self.snapshot is None:
            self.snapshot = _preview_table(table, self.snapshot_rows)

    def _current(self) -> Table:
        if self.table is None:
            assert self.workbook is not None
            self._set_table(
                self._load(self.workbook.default_sheet(skip_hidden=self.skip_hidden))
            )
        assert self.table is not None
        return self.table

    # -- rules -----------------------------------------------------------------

    # TODO: the whole table is held in memory (about 130 bytes per cell, bounded
    # by max_cells). Rule lists without UNMERGE_AND_FILL (UP), DELETE_COLUMNS
    # (empty) or COMBINE_WORKSHEETS could stream rows from the reader to the
    # writer instead.
    def _run_rules(self) -> None:
        rules = list(self.configuration.rules)
        preprocessing = {
            ref: rule.id
            for rule in rules
            if rule.WhichOneof("params") == "combine_worksheets"
            for ref in rule.combine_worksheets.preprocessing
        }
        for index, rule in enumerate(rules):
            self.check_time()
            if rule.id in preprocessing:
                self._log_skipped(rule, preprocessing[rule.id])
            else:
                self._run_rule(rule)
            self.report(10 + int(80 * (index + 1) / max(len(rules), 1)))

    def _log_skipped(self, rule: cfg.Rule, combine_id: str) -> None:
        self.log.append(
            cfg.ExecutionLogEntry(
                rule_id=rule.id,
                rule_type=RULE_TYPE_OF[str(rule.WhichOneof("params"))],
                outcome=cfg.ExecutionLogEntry.OK,
                message=f"runs on each sheet as preprocessing of rule {combine_id}",
            )
        )

    def _run_rule(self, rule: cfg.Rule) -> None:
        which = rule.WhichOneof("params")
        assert which is not None
        rule_type = RULE_TYPE_OF[which]
        started = time.perf_counter()
        ctx = _rules.RuleContext(rule.id)
        before = self._shape() if which != "select_worksheet" else (0, 0)
        entry = cfg.ExecutionLogEntry(rule_id=rule.id, rule_type=rule_type)
        entry.rows_before, entry.columns_before = before
        try:
            message = self._dispatch(which, getattr(rule, which), ctx)
        except EngineError as exc:
            exc.rule_id = exc.rule_id or rule.id
            entry.outcome = cfg.ExecutionLogEntry.ERROR
            entry.message = exc.message
            entry.duration_ms = (time.perf_counter() - started) * 1000
            self.log.append(entry)
            raise
        except re.error as exc:  # a pattern validation could not see
            entry.outcome = cfg.ExecutionLogEntry.ERROR
            entry.message = str(exc)
            self.log.append(entry)
            raise EngineError(
                "INVALID_CONFIGURATION", f"rule {rule.id}: {exc}", rule_id=rule.id
            ) from exc
        entry.rows_after, entry.columns_after = self._shape()
        entry.outcome = (
            cfg.ExecutionLogEntry.WARNING
            if ctx.outcome_warning
            else cfg.ExecutionLogEntry.OK
        )
        entry.message = message
        entry.duration_ms = (time.perf_counter() - started) * 1000
        self.log.append(entry)
        self.warnings.extend(ctx.warnings)
        logger.debug("rule %s (%s): %s", rule.id, which, message)

    def _shape(self) -> tuple[int, int]:
        table = self._current()
        return table.data_row_count(), table.width

    def _dispatch(self, which: str, params: Any, ctx: _rules.RuleContext) -> str:
        if self.workbook is None and which in _WORKBOOK_RULES:
            # Validation refuses these for CSV/JSON conversion types; an
            # unspecified type finds out from the file.
            raise EngineError(
                "INVALID_CONFIGURATION",
                f"rule {ctx.rule_id}: {_WORKBOOK_RULES[which]} needs a workbook, "
                f"and {self.file_name} is read as CSV or JSON",
                rule_id=ctx.rule_id,
            )
        if which == "select_worksheet":
            return self._select(params)
        if which == "combine_worksheets":
            return self._combine(params, ctx)
        if which == "evaluate_formulas":
            return self._evaluate(params, ctx)
        return _TABLE_RULES[which](self._current(), params, ctx)

    def _select(self, params: cfg.SelectWorksheet) -> str:
        assert self.workbook is not None
        sheet = self._find_sheet(params)
        self._set_table(self._load(sheet))
        return f"selected worksheet {sheet.name!r}"

    def _find_sheet(self, params: cfg.SelectWorksheet) -> SheetInfo:
        assert self.workbook is not None
        every = self.workbook.worksheets(skip_hidden=False)
        candidates = self.workbook.worksheets(skip_hidden=self.skip_hidden)
        which = params.WhichOneof("selector")
        if which == "index":
            if params.index < len(every) and every[params.index] in candidates:
                return every[params.index]
            asked = f"index {params.index}"
        else:
            assert which is not None
            value = str(getattr(params, which))
            matches = _rules.sheet_matcher(**{str(which): value})
            for sheet in candidates:
                if matches(sheet.name):
                    return sheet
            asked = f"{which} {value!r}"
        names = ", ".join(
            repr(s.name) + ("" if s.visible else f" ({s.state})") for s in every
        )
        skipped = " (hidden sheets skipped)" if self.skip_hidden else ""
        raise EngineError(
            "WORKSHEET_NOT_FOUND",
            f"no worksheet matches {asked}{skipped}; worksheets: {names}",
        )

    def _combine(self, params: cfg.CombineWorksheets, ctx: _rules.RuleContext) -> str:
        assert self.workbook is not None
        every = self.workbook.worksheets(skip_hidden=self.skip_hidden)
        target = next((s for s in every if s.name == params.target.worksheet), None)
        if target is None:
            names = ", ".join(repr(s.name) for s in every)
            raise EngineError(
                "WORKSHEET_NOT_FOUND",
                f"target worksheet {params.target.worksheet!r} not found; "
                f"worksheets: {names}",
            )
        source = params.source
        matches = _rules.sheet_matcher(
            pattern=source.worksheet_pattern, regex=source.worksheet_regex
        )
        sheets = [target] + [s for s in every if s is not target and matches(s.name)]
        by_id = {rule.id: rule for rule in self.configuration.rules}
        tables = []
        for sheet in sheets:
            self.check_time()
            table = self._load(sheet)
            for ref in params.preprocessing:
                rule = by_id[ref]
                kind = rule.WhichOneof("params")
                assert kind is not None
                sub = _rules.RuleContext(ref)
                if kind == "evaluate_formulas":
                    self._evaluate_table(table, getattr(rule, kind), sub)
                else:
                    _TABLE_RULES[kind](table, getattr(rule, kind), sub)
                ctx.warnings.extend(sub.warnings)
            tables.append(table)
        combined = _stack(tables)
        self.table = combined
        names = ", ".join(repr(s.name) for s in sheets)
        return f"stacked {len(sheets)} worksheets: {names}"

    def _evaluate(self, params: cfg.EvaluateFormulas, ctx: _rules.RuleContext) -> str:
        return self._evaluate_table(self._current(), params, ctx)

    def _evaluate_table(
        self, table: Table, params: cfg.EvaluateFormulas, ctx: _rules.RuleContext
    ) -> str:
        assert self.workbook is not None
        recalc_all = params.recalculate == cfg.EvaluateFormulas.ALL
        kinds: dict[tuple[int, int], FormatKind | None] = {}
        if recalc_all:
            # A recomputed number keeps the kind its cached value had.
            for position, number in enumerate(table.row_numbers):
                for pos, value in enumerate(table.rows[position]):
                    key = (number, table.columns[pos])
                    if key in table.formula_cells:
                        kinds[key] = _KIND_OF_TYPE.get(type(value))
        computed, failed = evaluate(
            self.data,
            table,
            recalculate_all=recalc_all,
            date1904=self.workbook.date1904,
            kinds=kinds,
        )
        table.missing_count = sum(
            1 for row in table.rows for v in row if isinstance(v, MissingValue)
        )
        if failed:
            shown = ", ".join(failed[:20])
            ctx.warn(f"could not evaluate {len(failed)} formulas: {shown}")
            ctx.outcome_warning = True
            return f"computed {computed} formulas; could not evaluate: {shown}"
        return f"computed {computed} formulas"


def _stack(tables: list[Table]) -> Table:
    target = tables[0]
    columns = sorted({c for t in tables for c in t.columns})
    header = _trimmed(target.header_texts()) if target.has_header else None
    rows: list[list[Any]] = []
    numbers: list[int] = []
    sheets: list[str] = []
    missing = 0
    for index, table in enumerate(tables):
        start = 0
        same_header = header is not None and _trimmed(table.header_texts()) == header
        if index and table.has_header and same_header:
            start = 1
        where = {c: p for p, c in enumerate(table.columns)}
        for position in range(start, len(table.rows)):
            row = table.rows[position]
            rows.append(
                [
                    row[where[c]] if c in where and where[c] < len(row) else ""
                    for c in columns
                ]
            )
            numbers.append(table.row_numbers[position])
            sheets.append(table.sheet)
        missing += table.missing_count
    # TODO: merged ranges of appended sheets are dropped; unmerge them with a
    # preprocessing UNMERGE_AND_FILL rule instead.
    return Table(
        sheet=target.sheet,
        rows=rows,
        row_numbers=numbers,
        columns=columns,
        has_header=target.has_header,
        header_names=dict(target.header_names),
        merges=list(target.merges),
        formula_cells=set(target.formula_cells),
        missing_count=missing,
        row_sheets=sheets,
    )


def _trimmed(texts: list[str]) -> list[str]:
    while texts and not texts[-1]:
        texts = texts[:-1]
    return texts


_WORKBOOK_RULES = {
    "select_worksheet": "SELECT_WORKSHEET",
    "combine_worksheets": "COMBINE_WORKSHEETS",
    "evaluate_formulas": "EVALUATE_FORMULAS",
}
_TABLE_RULES: dict[str, Callable[[Table, Any, _rules.RuleContext], str]] = {
    "validate_columns": _rules.validate_columns,
    "unmerge_and_fill": _rules.unmerge_and_fill,
    "delete_rows": _rules.delete_rows,
    "delete_columns": _rules.delete_columns,
    "replace_characters": _rules.replace_characters,
}
