"""The table rules: each takes the current Table and its parameter block, changes
the table in place, and returns the execution-log message."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mutate.v1 import configuration_pb2 as cfg

from ._errors import EngineError
from ._table import Table
from ._values import column_index, column_letter, is_blank, text_of

__all__ = [
    "RuleContext",
    "delete_columns",
    "delete_rows",
    "parse_row_ranges",
    "replace_characters",
    "resolve_column",
    "sheet_matcher",
    "unmerge_and_fill",
    "validate_columns",
]


@dataclass
class RuleContext:
    rule_id: str
    warnings: list[str] = field(default_factory=list)
    outcome_warning: bool = False

    def warn(self, message: str) -> None:
        self.outcome_warning = True
        self.warnings.append(f"rule {self.rule_id}: {message}")


def resolve_column(table: Table, ref: str) -> int | None:
    """Position of a column named by header (preferred) or original letters."""
    wanted = ref.strip()
    for original, name in table.header_names.items():
        if name == wanted and original in table.columns:
            return table.columns.index(original)
    lowered = wanted.casefold()
    for original, name in table.header_names.items():
        if name.casefold() == lowered and original in table.columns:
            return table.columns.index(original)
    index = column_index(wanted)
    if index is None:
        return None
    if index in table.columns:
        return table.columns.index(index)
    if table.columns and index > max(table.columns):
        # Past the used range: an empty column the table does not hold yet.
        table.columns.append(index)
        table.columns.sort()
        return table.columns.index(index)
    return None


def _positions(table: Table, refs: Sequence[str], ctx: RuleContext) -> list[int]:
    found: list[int] = []
    for ref in refs:
        position = resolve_column(table, ref)
        if position is None:
            raise EngineError(
                "VALIDATION_FAILED",
                f"rule {ctx.rule_id}: column {ref!r} does not exist "
                f"(columns: {_describe_columns(table)})",
                rule_id=ctx.rule_id,
            )
        found.append(position)
    return found


def _describe_columns(table: Table) -> str:
    names = []
    for original in table.columns[:30]:
        header = table.header_names.get(original)
        letter = column_letter(original)
        names.append(f"{letter} ({header})" if header else letter)
    more = "…" if len(table.columns) > 30 else ""
    return ", ".join(names) + more


def sheet_matcher(
    *, name: str = "", pattern: str = "", regex: str = ""
) -> Callable[[str], bool]:
    if name:
        return lambda candidate: candidate == name
    if pattern:
        return lambda candidate: fnmatch.fnmatchcase(candidate, pattern)
    compiled = re.compile(regex)
    return lambda candidate: compiled.search(candidate) is not None


def validate_columns(
    table: Table, params: cfg.ValidateColumns, ctx: RuleContext
) -> str:
    problems: list[str] = []
    width = table.used_width()
    if params.HasField("num_of_columns") and width != params.num_of_columns:
        problems.append(f"expected {params.num_of_columns} columns, found {width}")
    if params.required_headers:
        present = set(table.header_texts())
        present.update(table.header_names.values())
        missing = [h for h in params.required_headers if h.strip() not in present]
        if missing:
            problems.append(
                "missing required headers: " + ", ".join(repr(h) for h in missing)
            )
    if not problems:
        return f"{width} columns, all required headers present"
    message = "; ".join(problems)
    if params.on_failure == cfg.ValidateColumns.WARN:
        ctx.warn(message)
        return message
    raise EngineError(
        "VALIDATION_FAILED", f"rule {ctx.rule_id}: {message}", rule_id=ctx.rule_id
    )


def unmerge_and_fill(table: Table, params: cfg.UnmergeAndFill, ctx: RuleContext) -> str:
    every = any(c.strip().lower() == "all" for c in params.columns)
    if every:
        targets = set(table.columns)
    else:
        targets = {table.columns[p] for p in _positions(table, params.columns, ctx)}
    position_of_row = {n: i for i, n in enumerate(table.row_numbers)}
    position_of_col = {c: i for i, c in enumerate(table.columns)}
    unmerged = 0
    for merge in table.merges:
        if not any(merge.first_col <= c <= merge.last_col for c in targets):
            continue
        unmerged += 1
        for number in range(merge.first_row, merge.last_row + 1):
            row_pos = position_of_row.get(number)
            if row_pos is None:
                continue
            for col in range(merge.first_col, merge.last_col + 1):
                col_pos = position_of_col.get(col)
                if col_pos is not None:
                    _set(table.rows[row_pos], col_pos, merge.value)
    table.merges = [
        m
        for m in table.merges
        if not any(m.first_col <= c <= m.last_col for c in targets)
    ]
    filled = _fill(
        table,
        [position_of_col[c] for c in sorted(targets) if c in position_of_col],
        params.fill_direction,
    )
    return f"unmerged {unmerged} ranges, filled {filled} blank cells"


def _set(row: list[Any], position: int, value: Any) -> None:
    if position >= len(row):
        row.extend([""] * (position + 1 - len(row)))
    row[position] = value


def _fill(table: Table, positions: list[int], direction: int) -> int:
    if direction == cfg.UnmergeAndFill.NONE:
        return 0
    rows = table.rows[table.data_start :]
    if direction == cfg.UnmergeAndFill.UP:
        rows = rows[::-1]
    filled = 0
    for position in positions:
        last: Any = None
        for row in rows:
            value = row[position] if position < len(row) else ""
            if is_blank(value):
                if last is not None:
                    _set(row, position, last)
                    filled += 1
            else:
                last = value
    return filled


def parse_row_ranges(specs: Sequence[str]) -> list[tuple[int, int]]:
    """ "4" and "1-3" to inclusive ranges; ValueError names the bad entry."""
    ranges: list[tuple[int, int]] = []
    for spec in specs:
        text = spec.strip()
        low, dash, high = text.partition("-")
        try:
            first = int(low)
            last = int(high) if dash else first
        except ValueError:
            raise ValueError(
                f"{spec!r} is not a row number or range like 1-3"
            ) from None
        if first < 1 or last < first:
            raise ValueError(f"{spec!r} is not a valid 1-based row range")
        ranges.append((first, last))
    return ranges


def delete_rows(table: Table, params: cfg.DeleteRows, ctx: RuleContext) -> str:
    start = table.data_start
    before = len(table.rows)
    doomed: Callable[[int], bool]
    if params.rows:
        ranges = parse_row_ranges(params.rows)

        def in_ranges(position: int) -> bool:
            number = table.row_numbers[position]
            return any(low <= number <= high for low, high in ranges)

        doomed = in_ranges
    else:
        doomed = _condition(table, params, ctx)
    keep = list(range(start)) + [
        i for i in range(start, len(table.rows)) if not doomed(i)
    ]
    if len(keep) != len(table.rows):
        table.rows = [table.rows[i] for i in keep]
        table.row_numbers = [table.row_numbers[i] for i in keep]
        if table.row_sheets is not None:
            table.row_sheets = [table.row_sheets[i] for i in keep]
    return f"deleted {before - len(table.rows)} rows"


def _condition(
    table: Table, params: cfg.DeleteRows, ctx: RuleContext
) -> Callable[[int], bool]:
    column = params.column.strip()
    position = None
    if column and column.lower() != "any":
        position = _positions(table, [column], ctx)[0]
    rows = table.rows
    if params.condition == cfg.DeleteRows.EMPTY:
        if position is None:
            return lambda i: all(is_blank(v) for v in rows[i])
        return lambda i: position >= len(rows[i]) or is_blank(rows[i][position])
    test = _text_test(params)
    if position is None:
        return lambda i: any(test(text_of(v)) for v in rows[i] if not is_blank(v))
    return lambda i: position < len(rows[i]) and test(text_of(rows[i][position]))


def _text_test(params: cfg.DeleteRows) -> Callable[[str], bool]:
    value = params.value
    kind = params.condition
    if kind == cfg.DeleteRows.REGEX:
        flags = 0 if params.case_sensitive else re.IGNORECASE
        compiled = re.compile(value, flags)
        return lambda text: compiled.search(text) is not None
    if not params.case_sensitive:
        value = value.casefold()
    fold: Callable[[str], str] = (
        (lambda t: t) if params.case_sensitive else str.casefold
    )
    if kind == cfg.DeleteRows.CONTAINS:
        return lambda text: value in fold(text)
    if kind == cfg.DeleteRows.EQUALS:
        return lambda text: fold(text) == value
    return lambda text: fold(text).startswith(value)


def delete_columns(table: Table, params: cfg.DeleteColumns, ctx: RuleContext) -> str:
    doomed: set[int] = set()
    for ref in params.columns:
        position = resolve_column(table, ref)
        if position is None:
            ctx.warn(f"column {ref!r} not found, nothing deleted for it")
            continue
        doomed.add(position)
    if params.empty:
        for position in range(table.width):
            if all(
                position >= len(row) or is_blank(row[position]) for row in table.rows
            ):
                doomed.add(position)
    if not doomed:
        return "deleted no columns"
    keep = [p for p in range(table.width) if p not in doomed]
    names = [column_letter(table.columns[p]) for p in sorted(doomed)]
    table.rows = [[row[p] if p < len(row) else "" for p in keep] for row in table.rows]
    table.columns = [table.columns[p] for p in keep]
    return f"deleted {len(doomed)} columns: {', '.join(names)}"


def replace_characters(
    table: Table, params: cfg.ReplaceCharacters, ctx: RuleContext
) -> str:
    if params.regex:
        compiled = re.compile(params.find)

        def change(text: str) -> str:
            return compiled.sub(params.replace, text)
    else:
        find, replace = params.find, params.replace

        def change(text: str) -> str:
            return text.replace(find, replace)

    if params.columns:
        positions = _positions(table, params.columns, ctx)
    else:
        positions = list(range(table.width))
    changed = 0
    try:
        for row in table.rows:
            for position in positions:
                if position < len(row):
                    value = row[position]
                    if type(value) is str and value:
                        new = change(value)
                        if new != value:
                            row[position] = new
                            changed += 1
    except (re.error, IndexError) as exc:
        raise EngineError(
            "INVALID_CONFIGURATION",
            f"rule {ctx.rule_id}: replacement {params.replace!r} is invalid ({exc})",
            rule_id=ctx.rule_id,
        ) from exc
    return f"changed {changed} cells"
