"""EVALUATE_FORMULAS: compute formula values with the `formulas` library.

The library needs a workbook on disk and evaluates the whole book, so it only
runs when the rule is present and there is something to compute.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import logging
import os
import tempfile
from typing import Any

from ._table import Table
from ._values import (
    ExcelError,
    FormatKind,
    MissingValue,
    column_letter,
    serial_to_value,
)

__all__ = ["evaluate"]

logger = logging.getLogger(__name__)


def evaluate(
    data: bytes,
    table: Table,
    *,
    recalculate_all: bool,
    date1904: bool,
    kinds: dict[tuple[int, int], FormatKind | None],
) -> tuple[int, list[str]]:
    """Fill computed values into `table`; return (cells computed, cells failed)."""
    targets = _targets(table, recalculate_all)
    if not targets:
        return 0, []
    try:
        solution = _solve(data)
    except Exception as exc:  # the one translation point for `formulas`
        logger.info("formula evaluation failed: %s", exc)
        return 0, [f"{name} ({exc.__class__.__name__})" for name, *_ in targets]
    computed = 0
    failed: list[str] = []
    for name, row_pos, col_pos, sheet in targets:
        key = f"'[{_BOOK}]{sheet.upper()}'!{name.split('!')[-1]}"
        found = solution.get(key)
        if found is None:
            failed.append(name)
            continue
        value = _plain(found)
        if value is _FAILED:
            failed.append(name)
            continue
        original = table.rows[row_pos][col_pos]
        kind = (
            original.kind
            if isinstance(original, MissingValue)
            else kinds.get((table.row_numbers[row_pos], table.columns[col_pos]))
        )
        if kind is not None and isinstance(value, float):
            value = serial_to_value(value, kind, date1904)
        table.rows[row_pos][col_pos] = value
        computed += 1
    return computed, failed


_BOOK = "book.xlsx"
_FAILED = object()


def _targets(table: Table, recalculate_all: bool) -> list[tuple[str, int, int, str]]:
    found = []
    for row_pos, row in enumerate(table.rows):
        number = table.row_numbers[row_pos]
        sheet = table.row_sheets[row_pos] if table.row_sheets else table.sheet
        for col_pos, value in enumerate(row):
            is_formula = isinstance(value, MissingValue) or (
                recalculate_all
                and (number, table.columns[col_pos]) in table.formula_cells
            )
            if is_formula:
                name = f"{column_letter(table.columns[col_pos])}{number}"
                found.append((name, row_pos, col_pos, sheet))
    return found


# TODO: `formulas` loads and evaluates the whole workbook (slow and memory
# hungry beyond a few thousand formulas); a dependency graph restricted to the
# cells asked for would scale. Its results for functions it lacks are reported
# as cells it could not evaluate.
def _solve(data: bytes) -> dict[str, Any]:
    import formulas  # type: ignore[import-untyped]  # slow to import

    directory = tempfile.mkdtemp(prefix="mutate-formulas-")
    path = os.path.join(directory, _BOOK)
    try:
        with open(path, "wb") as handle:
            handle.write(data)
        # The library draws progress bars on stderr; keep the CLI's one line.
        with contextlib.redirect_stderr(io.StringIO()):
            model = formulas.ExcelModel().loads(path).finish()
            solution = model.calculate()
        return {
            str(key).upper().replace(_BOOK.upper(), _BOOK): v
            for key, v in solution.items()
        }
    finally:
        try:
            os.remove(path)
            os.rmdir(directory)
        except OSError:
            pass


def _plain(found: Any) -> Any:
    value = getattr(found, "value", found)
    try:
        # Numpy scalars have a shape too, but `ndim` 0: unwrapping stops there.
        while isinstance(value, list) or int(getattr(value, "ndim", 0)):
            value = value[0] if isinstance(value, list) else value.ravel()[0]
    except (IndexError, TypeError):
        return _FAILED
    if hasattr(value, "item"):
        value = value.item()  # numpy scalar to its Python twin
    text = str(value)
    if text.startswith("#"):
        return ExcelError(text)
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (str, datetime.date)):
        return value
    if text in ("", "empty"):
        return ""
    try:
        return float(value)
    except (TypeError, ValueError):
        return text
