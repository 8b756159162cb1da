"""XLSX/XLSM reader: python-calamine for values, a targeted scan for the rest,
openpyxl when calamine refuses a file. Macros are never run (nothing executes
them; the VBA part is never read)."""

from __future__ import annotations

import io
import logging
import re
import threading
from collections.abc import Iterable
from typing import Any

import python_calamine

from ._display import display_number, general_text
from ._errors import EngineError
from ._limits import Limits
from ._table import Merge, Table
from ._values import (
    ExcelError,
    FormatKind,
    column_letter,
    is_blank,
    reshape_temporal,
    text_of,
)
from ._xlsx_guard import check_grid, check_prolog
from ._xlsx_parts import SheetInfo, WorkbookIndex, open_container, read_index
from ._xlsx_scan import ScanPlan, SheetScan, scan_sheet, serial_decider

__all__ = ["XlsxWorkbook"]

logger = logging.getLogger(__name__)

_TEMPORAL = (FormatKind.DATE, FormatKind.TIME, FormatKind.DATETIME, FormatKind.DURATION)
# Formats calamine and this engine surely read alike: several date/time tokens
# joined by separators, elapsed time only as a leading bracket.
_COMMON_FORMAT = re.compile(
    r"(\[\$-[0-9A-Fa-f]+\])?(\[[hms]+\]|[ymdhs]+)"
    r"([-/.: ,\\T]+(AM/PM|[ymdhs]+(\.0+)?))+(;@)?",
    re.IGNORECASE,
)


class XlsxWorkbook:
    """One opened workbook; sheets are read on demand into Tables."""

    def __init__(self, data: bytes, file_name: str, limits: Limits) -> None:
        self.file_name = file_name
        self.data = data
        self.limits = limits
        self.archive = open_container(data, file_name, limits)
        self.index: WorkbookIndex = read_index(self.archive, file_name)
        self._calamine: python_calamine.CalamineWorkbook | None = None
        self._calamine_failed = False
        if not self.index.worksheets:
            raise EngineError("EMPTY_FILE", f"{file_name} contains no worksheets")
        for path in self.index.shared_strings:
            check_prolog(self.archive, path, f"{file_name}: part {path}")

    @property
    def date1904(self) -> bool:
        return self.index.date1904

    def worksheets(self, *, skip_hidden: bool) -> list[SheetInfo]:
        sheets = self.index.worksheets
        return [s for s in sheets if s.visible] if skip_hidden else sheets

    def default_sheet(self, *, skip_hidden: bool) -> SheetInfo:
        visible = [s for s in self.index.worksheets if s.visible]
        if visible:
            return visible[0]
        if skip_hidden:
            raise EngineError(
                "WORKSHEET_NOT_FOUND",
                f"{self.file_name} has no visible worksheet and hiddenContent is SKIP",
            )
        return self.index.worksheets[0]

    def load(
        self,
        sheet: SheetInfo,
        *,
        header_row: int,
        skip_hidden: bool,
        displayed: bool,
    ) -> Table:
        """Read one worksheet into a Table, honouring the read options."""
        check_prolog(self.archive, sheet.path, f"sheet {sheet.name!r}")
        check_grid(self.archive, sheet.path, sheet.name, self.limits.max_cells)
        plan = self._plan(sheet.name, displayed)
        scan_box: list[SheetScan | BaseException] = []
        worker = threading.Thread(
            target=self._scan_into, args=(sheet, plan, scan_box), daemon=True
        )
        worker.start()
        try:
            # calamine parses without the GIL while the scan runs; rows are
            # turned into Python objects only once the scan is done, so the
            # two never contend for the GIL.
            source = self._parse(sheet)
        finally:
            worker.join()
        outcome = scan_box[0]
        if isinstance(outcome, BaseException):
            raise outcome
        if source is None and not displayed:
            # The scan's shortcuts assume calamine's typing of dates; openpyxl
            # types them differently, so every dated cell is read exactly.
            outcome = scan_sheet(self.archive, sheet.path, self._exact(plan))
        rows, offset = self._rows(sheet, source)
        if displayed:
            rows = [
                [general_text(v) if type(v) is float else v for v in row]
                for row in rows
            ]
        return _build_table(sheet.name, rows, offset, outcome, header_row, skip_hidden)

    def _plan(self, sheet_name: str, displayed: bool) -> ScanPlan:
        style_kinds: dict[int, FormatKind] = {}
        exact: set[int] = set()
        for style_id in range(len(self.index.styles)):
            kind = self.index.style_kind(style_id)
            if kind not in _TEMPORAL:
                continue
            style_kinds[style_id] = kind
            num_fmt_id, code = self.index.styles[style_id]
            if code is not None and not _COMMON_FORMAT.fullmatch(code.strip()):
                exact.add(style_id)
        if displayed:
            return self._displayed_plan(sheet_name)
        decide = serial_decider(style_kinds, frozenset(exact), self.date1904)
        return ScanPlan(
            sheet=sheet_name,
            style_kinds=style_kinds,
            exact=frozenset(exact),
            decide=decide,
            max_cells=self.limits.max_cells,
        )

    def _exact(self, plan: ScanPlan) -> ScanPlan:
        """`plan` with every dated style converted from the stored number."""
        exact = frozenset(plan.style_kinds)
        return ScanPlan(
            sheet=plan.sheet,
            style_kinds=plan.style_kinds,
            exact=exact,
            decide=serial_decider(plan.style_kinds, exact, self.date1904),
            max_cells=plan.max_cells,
        )

    def _displayed_plan(self, sheet_name: str) -> ScanPlan:
        """Every number with a format other than General is rendered by it."""
        index = self.index
        style_kinds = {
            style_id: index.style_kind(style_id)
            for style_id in range(len(index.styles))
            if index.style_code(style_id).strip().lower() not in ("general", "")
        }
        date1904 = self.date1904

        def decide(style: int, raw: bytes) -> Any:
            try:
                return display_number(float(raw), index.style_code(style), date1904)
            except (ValueError, OverflowError, IndexError, KeyError):
                return None

        return ScanPlan(
            sheet=sheet_name,
            style_kinds=style_kinds,
            exact=frozenset(style_kinds),
            decide=decide,
            max_cells=self.limits.max_cells,
        )

    def _scan_into(
        self, sheet: SheetInfo, plan: ScanPlan, box: list[SheetScan | BaseException]
    ) -> None:
        try:
            box.append(scan_sheet(self.archive, sheet.path, plan))
        except BaseException as exc:  # handed to the calling thread
            box.append(exc)

    def _parse(self, sheet: SheetInfo) -> python_calamine.CalamineSheet | None:
        """The sheet parsed by calamine, or None when calamine refuses it."""
        book = self._open_calamine()
        if book is None:
            return None
        try:
            return book.get_sheet_by_name(sheet.name)
        except BaseException as exc:
            _reraise_fatal(exc)
            logger.info("calamine refused sheet %r: %s", sheet.name, exc)
            return None

    def _rows(
        self, sheet: SheetInfo, source: python_calamine.CalamineSheet | None
    ) -> tuple[list[list[Any]], tuple[int, int]]:
        """Typed rows from calamine, or from openpyxl when calamine refused."""
        if source is not None:
            try:
                start = source.start or (0, 0)
                # iter_rows starts at the first row of the sheet but at the
                # first used column.
                return list(source.iter_rows()), (0, start[1])
            except BaseException as exc:
                _reraise_fatal(exc)
                logger.info("calamine failed on sheet %r: %s", sheet.name, exc)
        return self._openpyxl_values(sheet), (0, 0)

    def _open_calamine(self) -> python_calamine.CalamineWorkbook | None:
        if self._calamine is None and not self._calamine_failed:
            try:
                self._calamine = python_calamine.CalamineWorkbook.from_filelike(
                    io.BytesIO(self.data)
                )
            except python_calamine.PasswordError as exc:
                raise EngineError(
                    "PASSWORD_PROTECTED", f"{self.file_name} is password-protected"
                ) from exc
            except BaseException as exc:
                _reraise_fatal(exc)
                logger.info("calamine refused %s: %s", self.file_name, exc)
                self._calamine_failed = True
        return self._calamine

    def _openpyxl_values(self, sheet: SheetInfo) -> list[list[Any]]:
        # Imported lazily: openpyxl is the fallback, and slow to import.
        import warnings

        import openpyxl  # type: ignore[import-untyped]

        try:
            with warnings.catch_warnings():
                # openpyxl warns about every extension it drops.
                warnings.simplefilter("ignore")
                book = openpyxl.load_workbook(
                    io.BytesIO(self.data), read_only=True, data_only=True
                )
                worksheet = book[sheet.name]
                worksheet.reset_dimensions()
                rows = [
                    [_openpyxl_value(cell) for cell in row]
                    for row in worksheet.iter_rows()
                ]
                book.close()
        except EngineError:
            raise
        except Exception as exc:  # the one translation point for openpyxl
            raise EngineError(
                "INVALID_FILE",
                f"{self.file_name}: sheet {sheet.name!r} cannot be read ({exc})",
            ) from exc
        return rows

    def close(self) -> None:
        if self._calamine is not None:
            self._calamine.close()
            self._calamine = None
        self.archive.close()


_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


def _reraise_fatal(exc: BaseException) -> None:
    """Let interpreter exits through; anything else from calamine means "try
    openpyxl". A Rust panic surfaces as pyo3's PanicException, which derives
    from BaseException, hence the broad catch at this one translation point."""
    if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError)):
        raise exc


def _openpyxl_value(cell: Any) -> Any:
    value = getattr(cell, "value", None)
    if value is None:
        return ""
    if getattr(cell, "data_type", "") == "e":
        return ExcelError(str(value))
    if isinstance(value, str) and "_x" in value:
        # openpyxl keeps the format's _xHHHH_ escapes; calamine decodes them.
        return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value)
    return value


def _build_table(
    name: str,
    rows: Iterable[list[Any]],
    offset: tuple[int, int],
    scan: SheetScan,
    header_row: int,
    skip_hidden: bool,
) -> Table:
    first_row, first_col = offset
    grid: list[list[Any]] = []
    numbers: list[int] = []
    overrides = scan.overrides
    pad = [""] * first_col
    for position, row in enumerate(rows):
        number = first_row + position + 1
        if first_col:
            row = pad + row
        extra = overrides.pop(number, None)
        if extra:
            row = _apply(row, extra)
        grid.append(row)
        numbers.append(number)
    # Cells calamine left out (formulas without a value beyond its range).
    for number in sorted(overrides):
        while (numbers[-1] if numbers else first_row) < number - 1:
            numbers.append((numbers[-1] if numbers else first_row) + 1)
            grid.append([])
        grid.append(_apply([], overrides[number]))
        numbers.append(number)
    return _shape(name, grid, numbers, scan, header_row, skip_hidden)


def _apply(row: list[Any], extra: dict[int, Any]) -> list[Any]:
    width = max(extra) + 1
    if len(row) < width:
        row = row + [""] * (width - len(row))
    for col, value in extra.items():
        old = row[col]
        if isinstance(value, FormatKind):
            row[col] = reshape_temporal(old, value)
        else:
            row[col] = value
    return row


def _shape(
    name: str,
    grid: list[list[Any]],
    numbers: list[int],
    scan: SheetScan,
    header_row: int,
    skip_hidden: bool,
) -> Table:
    # Rows above the header row are not part of the table.
    start = 0
    if header_row > 0:
        while start < len(numbers) and numbers[start] < header_row:
            start += 1
        if start >= len(numbers) or numbers[start] != header_row:
            grid.insert(start, [])
            numbers.insert(start, header_row)
    rows, row_numbers = grid[start:], numbers[start:]
    width = max((len(row) for row in rows), default=0)
    # A merged range whose value spans past the last value still shows it.
    for r1, c1, _r2, c2 in scan.merges:
        if c2 >= width and not is_blank(_value_at(grid, numbers, r1, c1)):
            width = c2 + 1
    columns = list(range(width))
    if skip_hidden and (scan.hidden_rows or scan.hidden_cols):
        keep = [
            i
            for i, n in enumerate(row_numbers)
            if n not in scan.hidden_rows or (header_row and n == header_row)
        ]
        rows = [rows[i] for i in keep]
        row_numbers = [row_numbers[i] for i in keep]
        columns = [c for c in columns if c not in scan.hidden_cols]
        if len(columns) != width:
            rows = [[row[c] if c < len(row) else "" for c in columns] for row in rows]
    merges = [
        Merge(r1, c1, r2, c2, _value_at(grid, numbers, r1, c1))
        for r1, c1, r2, c2 in scan.merges
    ]
    table = Table(
        sheet=name,
        rows=rows,
        row_numbers=row_numbers,
        columns=columns,
        has_header=header_row > 0,
        merges=merges,
        formula_cells=scan.formula_cells,
        missing_count=scan.missing,
    )
    if header_row > 0:
        header = rows[0] if rows else []
        table.header_names = {
            col: text_of(header[pos]).strip()
            for pos, col in enumerate(columns)
            if pos < len(header)
        }
    return table


def _value_at(grid: list[list[Any]], numbers: list[int], row: int, col: int) -> Any:
    # Row numbers ascend, so a bisection finds the row.
    import bisect

    position = bisect.bisect_left(numbers, row)
    if position < len(numbers) and numbers[position] == row:
        cells = grid[position]
        return cells[col] if col < len(cells) else ""
    return ""


def cell_name(col: int, row: int) -> str:
    return f"{column_letter(col)}{row}"
