"""A targeted streaming pass over one sheet's XML for what calamine does not give.

calamine returns the values; this pass finds, without building a tree: the cells
whose number format changes how a value prints (date-time at midnight, dates
from fractional serials, negative serials…), error cells, formulas and whether
they hold a cached value, hidden rows and columns, merged ranges, and the number
of cells really present. It runs in a thread while calamine (which releases the
GIL) parses the same sheet.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._errors import EngineError
from ._values import (
    ExcelError,
    FormatKind,
    MissingValue,
    column_index,
    column_letter,
    serial_to_value,
)

__all__ = ["SheetScan", "scan_sheet"]

_CHUNK = 4 * 1024 * 1024
_Q = rb"[\"']"
_ROOT_PREFIX = re.compile(rb"<(\w+:)?worksheet\b")


class _Patterns:
    """The scan's regular expressions for one element prefix (``x:`` or none).

    Every pattern starts with a literal so the regex engine can skip ahead
    quickly; that is why the prefix is fixed per sheet rather than optional.
    """

    def __init__(self, prefix: bytes) -> None:
        p = re.escape(prefix)
        self.prefix = prefix
        self.cell = rb"<" + p + rb"c"
        self.formula_skip = (
            rb"\s*(?:<"
            + p
            + rb"f\b[^>]*/>\s*|<"
            + p
            + rb"f\b[^>]*>[^<]*</"
            + p
            + rb"f>\s*)?"
        )
        self.value_after = re.compile(
            self.formula_skip + rb"(?:<" + p + rb"v>([^<]*)</" + p + rb"v>)?"
        )
        # Attribute order varies by writer (r, s, t in any order), so a
        # lookahead tests the attribute and the whole tag is captured.
        self.error_cell = re.compile(
            self.cell + rb"(?=[^>]*?\st=" + _Q + rb"e" + _Q + rb")\s([^>]*?)(/?)>"
        )
        self.formula_cell = re.compile(
            self.cell
            + rb"\s([^>]*?)>\s*<"
            + p
            + rb"f\b([^>]*?)(?:/>|>([^<]*)</"
            + p
            + rb"f>)\s*(<"
            + p
            + rb"v\s*/>|<"
            + p
            + rb"v>\s*</|<"
            + p
            + rb"(?:v|is)\b)?"
        )
        self.row_tag = re.compile(rb"<" + p + rb"row\s([^>]*)>")
        self.col_tag = re.compile(rb"<" + p + rb"col\s([^>]*)>")
        self.merge = re.compile(
            rb"<" + p + rb"mergeCell\s+ref=" + _Q + rb"([A-Z0-9:$]+)" + _Q
        )
        self.sheet_data = re.compile(rb"<(/?)" + p + rb"sheetData\b[^>]*?(/?)>")
        self.cell_open = b"<" + prefix + b"c"
        self.formula_open = b"<" + prefix + b"f"

    def count_cells(self, part: bytes) -> int:
        opener = self.cell_open
        count = part.count(opener + b" ")
        if opener + b">" in part:
            count += part.count(opener + b">")
        return count

    def styled(self, groups: dict[str, list[int]]) -> re.Pattern[bytes] | None:
        """Cells whose stored number calamine may print differently from the
        contract; the value tests keep the matches to those exceptions."""
        if not any(groups.values()):
            return None

        def alt(ids: list[int]) -> bytes:
            return b"|".join(str(i).encode() for i in ids) if ids else rb"(?!)"

        p = re.escape(self.prefix)
        value = (
            rb"(?(x)[^<]*"  # exact: every value
            rb"|(?(d)(?:[^<]*[.Ee-][^<]*|[0-9]{1,2})"  # date: fraction/negative/tiny
            rb"|(?(t)(?:-?[0-9]+(?:\.0+)?|-[^<]*|[0-9]{1,2}\.[^<]*)"  # midnight
            rb"|(?:-[^<]*|[1-9][^<]*|0))))"  # time: a day or more, negative
        )
        # Anchored on the style attribute, a literal the regex engine finds
        # fast; the tag's start is looked up only for the few matches.
        return re.compile(
            rb"\ss="
            + _Q
            + rb"(?:(?P<d>"
            + alt(groups["date"])
            + rb")|(?P<t>"
            + alt(groups["datetime"])
            + rb")|(?P<m>"
            + alt(groups["time"])
            + rb")|(?P<x>"
            + alt(groups["exact"])
            + rb"))"
            + _Q
            + rb"(?P<after>[^>]*)>"
            + self.formula_skip
            + rb"<"
            + p
            + rb"v>(?P<v>"
            + value
            + rb")</"
            + p
            + rb"v>"
        )


_TYPE_ATTR = re.compile(rb"\bt=" + _Q + rb"(\w+)" + _Q)
_STYLE_ATTR = re.compile(rb"\bs=" + _Q + rb"([0-9]+)" + _Q)
_ROW_NUMBER = re.compile(rb"\br=" + _Q + rb"([0-9]+)" + _Q)
_HIDDEN = re.compile(rb"\bhidden=" + _Q + rb"(?:1|true)" + _Q)
_MIN_MAX = re.compile(rb"\b(min|max)=" + _Q + rb"([0-9]+)" + _Q)


@dataclass
class SheetScan:
    """What the pass found, in sheet coordinates (1-based rows, 0-based cols)."""

    cells: int = 0
    overrides: dict[int, dict[int, Any]] = field(default_factory=dict)
    formula_cells: set[tuple[int, int]] = field(default_factory=set)
    missing: int = 0
    hidden_rows: set[int] = field(default_factory=set)
    hidden_cols: set[int] = field(default_factory=set)
    merges: list[tuple[int, int, int, int]] = field(default_factory=list)

    def put(self, row: int, col: int, value: Any) -> None:
        self.overrides.setdefault(row, {})[col] = value


@dataclass(frozen=True)
class ScanPlan:
    """Which style ids matter and how their numbers print.

    `decide(style, raw)` returns None when calamine's typed value is already
    right, else the value to use. Styles in `exact` are always converted here.
    """

    sheet: str
    style_kinds: dict[int, FormatKind]
    exact: frozenset[int]
    decide: Callable[[int, bytes], Any]
    max_cells: int

    def style_groups(self) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {
            "date": [],
            "datetime": [],
            "time": [],
            "exact": [],
        }
        names = {
            FormatKind.DATE: "date",
            FormatKind.DATETIME: "datetime",
            FormatKind.TIME: "time",
        }
        for style, kind in sorted(self.style_kinds.items()):
            if style in self.exact:
                groups["exact"].append(style)
            elif kind in names:
                groups[names[kind]].append(style)
        return groups


def scan_sheet(archive: zipfile.ZipFile, path: str, plan: ScanPlan) -> SheetScan:
    """Stream the sheet part once; raise EngineError on limits or bad XML."""
    result = SheetScan()
    try:
        with archive.open(path) as stream:
            _Scanner(plan, result).run(stream)
    except KeyError as exc:
        raise EngineError(
            "INVALID_FILE", f"sheet {plan.sheet!r}: part {path} is missing"
        ) from exc
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as exc:
        raise EngineError(
            "INVALID_FILE", f"sheet {plan.sheet!r} is corrupt or truncated ({exc})"
        ) from exc
    return result


class _Scanner:
    def __init__(self, plan: ScanPlan, result: SheetScan) -> None:
        self.plan = plan
        self.result = result
        self.patterns = _Patterns(b"")
        self.styled: re.Pattern[bytes] | None = None
        self.in_data = False

    def run(self, stream: Any) -> None:
        tail = b""
        first = True
        while True:
            chunk = stream.read(_CHUNK)
            buffer = tail + chunk
            if first:
                self._start(buffer[:4096])
                first = False
            if not chunk:
                self._scan(buffer)
                return
            cut = self._safe_cut(buffer)
            if cut <= 0:
                tail = buffer
                continue
            tail = buffer[cut:]
            self._scan(buffer[:cut])

    def _start(self, head: bytes) -> None:
        if b"<!DOCTYPE" in head or b"<!ENTITY" in head:
            raise EngineError(
                "INVALID_FILE",
                f"sheet {self.plan.sheet!r} declares XML entities or a DTD, "
                "which are refused",
            )
        root = _ROOT_PREFIX.search(head)
        self.patterns = _Patterns(root.group(1) or b"" if root else b"")
        self.styled = self.patterns.styled(self.plan.style_groups())

    def _safe_cut(self, buffer: bytes) -> int:
        # Cut after a complete row so no cell is split between two parts.
        end = buffer.rfind(b"row>")
        if end >= 0:
            return end + 4
        if self._data_state(buffer, self.in_data):
            return 0
        return buffer.rfind(b">") + 1

    def _data_state(self, part: bytes, in_data: bool) -> bool:
        """Whether the text after `part` is inside <sheetData>."""
        if b"sheetData" not in part:
            return in_data
        for match in self.patterns.sheet_data.finditer(part):
            in_data = not (match.group(1) or match.group(2))
        return in_data

    def _scan(self, part: bytes) -> None:
        was_in_data = self.in_data
        self.in_data = self._data_state(part, was_in_data)
        result, plan, patterns = self.result, self.plan, self.patterns
        result.cells += patterns.count_cells(part)
        if result.cells > plan.max_cells:
            raise EngineError(
                "LIMIT_EXCEEDED",
                f"sheet {plan.sheet!r} holds more than {plan.max_cells} cells "
                "(limit max_cells)",
            )
        # Column and merge lists sit outside sheetData.
        outside = not (was_in_data and self.in_data) or b"sheetData" in part
        if outside and b"<" + patterns.prefix + b"col " in part:
            self._cols(part)
        if b"hidden" in part:
            self._hidden_rows(part)
        if self.styled is not None:
            self._styled(part, self.styled)
        if b't="e"' in part or b"t='e'" in part:
            self._errors(part)
        if patterns.formula_open in part:
            self._formulas(part)
        if outside and b"mergeCell" in part:
            self._merges(part)

    def _cols(self, part: bytes) -> None:
        for match in self.patterns.col_tag.finditer(part):
            attrs = match.group(1)
            if not _HIDDEN.search(attrs):
                continue
            bounds = dict(_MIN_MAX.findall(attrs))
            low = int(bounds.get(b"min", b"0"))
            high = min(int(bounds.get(b"max", low)), 16384)
            self.result.hidden_cols.update(range(low - 1, high))

    def _hidden_rows(self, part: bytes) -> None:
        for match in self.patterns.row_tag.finditer(part):
            attrs = match.group(1)
            if _HIDDEN.search(attrs):
                number = _ROW_NUMBER.search(attrs)
                if number:
                    self.result.hidden_rows.add(int(number.group(1)))

    def _styled(self, part: bytes, styled: re.Pattern[bytes]) -> None:
        decide = self.plan.decide
        put = self.result.put
        cell_open = self.patterns.cell_open
        for match in styled.finditer(part):
            start = part.rfind(b"<", 0, match.start())
            if not part.startswith(cell_open, start):
                continue
            attrs = part[start + len(cell_open) : match.start()] + match.group("after")
            if b"t=" in attrs:
                cell_type = _TYPE_ATTR.search(attrs)
                if cell_type and cell_type.group(1) != b"n":
                    continue
            style = match.group("d") or match.group("t") or match.group("m")
            style = style or match.group("x")
            raw = match.group("v")
            position = _position(attrs)
            if raw and position is not None:
                value = decide(int(style), raw)
                if value is not None:
                    put(position[0], position[1], value)

    def _errors(self, part: bytes) -> None:
        value_after = self.patterns.value_after
        for match in self.patterns.error_cell.finditer(part):
            attrs, closed = match.groups()
            position = _position(attrs)
            if closed or position is None:
                continue
            found = value_after.match(part, match.end())
            raw = found.group(1) if found else None
            if raw:
                self.result.put(position[0], position[1], ExcelError(_unescape(raw)))

    def _formulas(self, part: bytes) -> None:
        result, plan = self.result, self.plan
        for match in self.patterns.formula_cell.finditer(part):
            attrs, _f_attrs, text, cached = match.groups()
            position = _position(attrs)
            if position is None:
                continue
            row, col = position
            result.formula_cells.add(position)
            # An empty <v/> is no value, except for a text result ("str").
            if cached is not None and not _empty_number(cached, attrs):
                continue
            style = _STYLE_ATTR.search(attrs)
            kind = plan.style_kinds.get(int(style.group(1))) if style else None
            formula = _unescape(text) if text else ""
            result.put(
                row, col, MissingValue(plan.sheet, _name(col, row), formula, kind)
            )
            result.missing += 1

    def _merges(self, part: bytes) -> None:
        for match in self.patterns.merge.finditer(part):
            ref = match.group(1).decode().replace("$", "")
            first, _, last = ref.partition(":")
            try:
                r1, c1 = _split_ref(first)
                r2, c2 = _split_ref(last or first)
            except ValueError:
                continue
            self.result.merges.append(
                (min(r1, r2), min(c1, c2), max(r1, r2), max(c1, c2))
            )


_REF_ATTR = re.compile(rb"(?:^|\s)r=" + _Q + rb"\$?([A-Z]{1,3})\$?([0-9]{1,7})" + _Q)


def _position(attrs: bytes) -> tuple[int, int] | None:
    """(row, col) from a cell's attributes.

    TODO: cells without an r attribute (allowed, positional) are not located;
    their number formats, errors and formulas fall back to calamine's reading.
    """
    found = _REF_ATTR.search(attrs)
    if found is None:
        return None
    col = column_index(found.group(1).decode())
    return (int(found.group(2)), col) if col is not None else None


def _empty_number(cached: bytes, attrs: bytes) -> bool:
    if not (cached.endswith(b"/>") or cached.endswith(b"</")):
        return False
    cell_type = _TYPE_ATTR.search(attrs)
    return cell_type is None or cell_type.group(1) not in (b"str", b"inlineStr")


def _name(col: int, row: int) -> str:
    return f"{column_letter(col)}{row}"


_REF = re.compile(r"([A-Z]{1,3})([0-9]{1,7})")


def _split_ref(ref: str) -> tuple[int, int]:
    match = _REF.fullmatch(ref)
    if not match:
        raise ValueError(ref)
    col = column_index(match.group(1))
    if col is None:
        raise ValueError(ref)
    return int(match.group(2)), col


_ENTITIES = {b"&lt;": b"<", b"&gt;": b">", b"&quot;": b'"', b"&apos;": b"'"}


def _unescape(raw: bytes) -> str:
    for entity, char in _ENTITIES.items():
        raw = raw.replace(entity, char)
    return raw.replace(b"&amp;", b"&").decode("utf-8", "replace")


def serial_decider(
    style_kinds: dict[int, FormatKind],
    exact_styles: frozenset[int],
    date1904: bool,
) -> Callable[[int, bytes], Any]:
    """Decide per styled number whether calamine's typed value must be replaced.

    calamine types dates by its own reading of the format: it drops 00:00:00 at
    midnight, returns a datetime for a date-only format holding a fraction, and
    mangles negative serials. Cells in `exact_styles` (formats whose reading by
    calamine may differ from ours) are always converted here.
    """

    def decide(style: int, raw: bytes) -> Any:
        kind = style_kinds[style]
        if kind is FormatKind.DURATION and style not in exact_styles:
            return None
        try:
            serial = float(raw)
        except ValueError:
            return None
        whole = serial.is_integer()
        if style not in exact_styles and not date1904 and serial > 0:
            if kind is FormatKind.DATE and whole and serial >= 61:
                return None
            if kind is FormatKind.DATETIME and not whole and serial >= 61:
                return None
            if kind is FormatKind.TIME and serial < 1:
                return None
        return serial_to_value(serial, kind, date1904)

    return decide
