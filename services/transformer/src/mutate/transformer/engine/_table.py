"""The table the rules work on: rows and columns that remember their sheet positions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._values import column_letter, is_blank, text_of

__all__ = ["Merge", "Table"]


@dataclass(frozen=True, slots=True)
class Merge:
    """A merged range in sheet coordinates (1-based rows, 0-based columns)."""

    first_row: int
    first_col: int
    last_row: int
    last_col: int
    value: Any


@dataclass
class Table:
    """One sheet's table after the read options; rules mutate it in place.

    `rows[i]` may be shorter than the table width (missing cells are blank).
    When `has_header` is true, `rows[0]` is the header row.
    """

    sheet: str
    rows: list[list[Any]]
    row_numbers: list[int]
    columns: list[int]
    has_header: bool
    header_names: dict[int, str] = field(default_factory=dict)
    merges: list[Merge] = field(default_factory=list)
    formula_cells: set[tuple[int, int]] = field(default_factory=set)
    missing_count: int = 0
    row_sheets: list[str] | None = None

    @property
    def width(self) -> int:
        return len(self.columns)

    @property
    def data_start(self) -> int:
        return 1 if self.has_header else 0

    def data_row_count(self) -> int:
        return len(self.rows) - self.data_start

    def cell_name(self, row_position: int, col_position: int) -> str:
        """The A1 name of a cell, with its sheet when rows come from several."""
        letter = column_letter(self.columns[col_position])
        name = f"{letter}{self.row_numbers[row_position]}"
        sheets = self.row_sheets
        if sheets is not None and sheets[row_position] != self.sheet:
            return f"{sheets[row_position]}!{name}"
        return name

    def used_width(self) -> int:
        """Columns up to the last one holding a value in any row."""
        width = 0
        for row in self.rows:
            end = len(row)
            while end > width and is_blank(row[end - 1]):
                end -= 1
            if end > width:
                width = end
        return min(width, self.width)

    def used_height(self) -> int:
        """Rows up to the last one holding a value (the header always counts)."""
        for position in range(len(self.rows) - 1, -1, -1):
            if position < self.data_start:
                return position + 1
            if any(not is_blank(value) for value in self.rows[position]):
                return position + 1
        return 0

    def header_texts(self) -> list[str]:
        """The current header row as text, one entry per column."""
        if not self.has_header or not self.rows:
            return [""] * self.width
        row = self.rows[0]
        return [text_of(row[i]) if i < len(row) else "" for i in range(self.width)]
