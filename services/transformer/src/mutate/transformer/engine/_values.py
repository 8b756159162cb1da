"""Cell values: number-format kinds, serial dates, and their output text.

The contract's canonical forms live here: ISO dates chosen by the number format,
shortest floats, TRUE/FALSE, error text, durations past 24 hours.
"""

from __future__ import annotations

import datetime
import enum
import functools
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ExcelError",
    "FormatKind",
    "MissingValue",
    "classify_format",
    "column_letter",
    "column_index",
    "is_blank",
    "json_value",
    "serial_to_value",
    "text_of",
]


@dataclass(frozen=True, slots=True)
class ExcelError:
    """An error cell (``#DIV/0!``); printed as its text, never as empty."""

    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class MissingValue:
    """A formula cell whose value is unknown (no cached value, not evaluated)."""

    sheet: str
    cell: str
    formula: str = ""
    kind: FormatKind | None = None

    def __str__(self) -> str:
        return ""


class FormatKind(enum.Enum):
    """What a number format makes of a number."""

    NUMBER = "number"
    DATE = "date"
    TIME = "time"
    DATETIME = "datetime"
    DURATION = "duration"
    TEXT = "text"


# ECMA-376 §18.8.30 implied formats that show dates or times.
_BUILTIN_KINDS: dict[int, FormatKind] = {
    **dict.fromkeys((14, 15, 16, 17), FormatKind.DATE),
    **dict.fromkeys((18, 19, 20, 21, 45, 47), FormatKind.TIME),
    22: FormatKind.DATETIME,
    46: FormatKind.DURATION,
    49: FormatKind.TEXT,
    **dict.fromkeys((27, 28, 29, 30, 31, 34, 35, 36), FormatKind.DATE),
    **dict.fromkeys((50, 51, 52, 53, 54, 57, 58), FormatKind.DATE),
    **dict.fromkeys((32, 33, 55, 56), FormatKind.TIME),
}

BUILTIN_FORMATS: dict[int, str] = {
    0: "General",
    1: "0",
    2: "0.00",
    3: "#,##0",
    4: "#,##0.00",
    9: "0%",
    10: "0.00%",
    11: "0.00E+00",
    12: "# ?/?",
    13: "# ??/??",
    14: "m/d/yyyy",
    15: "d-mmm-yy",
    16: "d-mmm",
    17: "mmm-yy",
    18: "h:mm AM/PM",
    19: "h:mm:ss AM/PM",
    20: "h:mm",
    21: "h:mm:ss",
    22: "m/d/yyyy h:mm",
    37: "#,##0 ;(#,##0)",
    38: "#,##0 ;[Red](#,##0)",
    39: "#,##0.00;(#,##0.00)",
    40: "#,##0.00;[Red](#,##0.00)",
    45: "mm:ss",
    46: "[h]:mm:ss",
    47: "mmss.0",
    48: "##0.0E+0",
    49: "@",
}

_QUOTED = re.compile(r'"[^"]*"|\\.|_.|\*.')
_BRACKET = re.compile(r"\[[^\]]*\]")
_ELAPSED = re.compile(r"\[(?:h+|m+|s+)\]", re.IGNORECASE)
_AMPM = re.compile(r"AM/PM|A/P", re.IGNORECASE)


@functools.lru_cache(maxsize=1024)
def classify_format(num_fmt_id: int, code: str | None) -> FormatKind:
    """The kind of a cell format: builtin id, else the first section's tokens."""
    if code is None:
        return _BUILTIN_KINDS.get(num_fmt_id, FormatKind.NUMBER)
    section = _first_section(code)
    stripped = _QUOTED.sub("", section)
    if _ELAPSED.search(stripped):
        return FormatKind.DURATION
    stripped = _BRACKET.sub("", stripped)
    if stripped.strip() == "@":
        return FormatKind.TEXT
    # "E+" / "E-" is scientific notation, not the era-year token "e".
    lowered = re.sub(r"[eE][+-]", "", _AMPM.sub("h", stripped)).lower()
    if lowered.strip() in ("general", ""):
        return FormatKind.NUMBER
    has_date = any(ch in lowered for ch in "yde") or _has_month(lowered)
    has_time = "h" in lowered or "s" in lowered
    if has_date and has_time:
        return FormatKind.DATETIME
    if has_date:
        return FormatKind.DATE
    if has_time:
        return FormatKind.TIME
    return FormatKind.NUMBER


def _first_section(code: str) -> str:
    in_quote = False
    for index, char in enumerate(code):
        if char == '"':
            in_quote = not in_quote
        elif char == ";" and not in_quote:
            return code[:index]
    return code


def _has_month(lowered: str) -> bool:
    # An "m" is a month unless it follows an hour or precedes seconds.
    letters = [ch for ch in lowered if ch.isalpha()]
    for index, char in enumerate(letters):
        if char != "m":
            continue
        before = next((c for c in reversed(letters[:index]) if c != "m"), "")
        after = next((c for c in letters[index + 1 :] if c != "m"), "")
        if before != "h" and after != "s":
            return True
    return False


_EPOCH_1900 = datetime.datetime(1899, 12, 30)
_EPOCH_1904 = datetime.datetime(1904, 1, 1)
_MS_PER_DAY = 86_400_000


def serial_to_value(serial: float, kind: FormatKind, date1904: bool) -> Any:
    """A stored number shown through a date/time/duration format.

    Negative serials and dates before 1900, which a spreadsheet cannot show,
    stay the raw number (contract: "Values in the output").
    """
    if kind is FormatKind.DURATION:
        return datetime.timedelta(milliseconds=round(serial * _MS_PER_DAY))
    if kind in (FormatKind.NUMBER, FormatKind.TEXT) or serial < 0:
        return serial
    if (
        not date1904
        and kind is not FormatKind.TIME
        and (serial < 1 or 60 <= serial < 61)
    ):
        # Serial 0 is "1900-01-00" and 60 the phantom 1900-02-29.
        return serial
    ms = round(serial * _MS_PER_DAY)
    if kind is FormatKind.TIME:
        return (
            datetime.datetime(2000, 1, 1)
            + datetime.timedelta(milliseconds=ms % _MS_PER_DAY)
        ).time()
    if date1904:
        moment = _EPOCH_1904 + datetime.timedelta(milliseconds=ms)
    elif serial < 60:
        moment = _EPOCH_1900 + datetime.timedelta(milliseconds=ms + _MS_PER_DAY)
    else:
        moment = _EPOCH_1900 + datetime.timedelta(milliseconds=ms)
    if kind is FormatKind.DATE:
        return moment.date()
    return moment


def reshape_temporal(value: Any, kind: FormatKind) -> Any:
    """Make a reader's date/time object agree with the cell's format kind."""
    if kind is FormatKind.DATE and isinstance(value, datetime.datetime):
        return value.date()
    if kind is FormatKind.DATETIME and type(value) is datetime.date:
        return datetime.datetime.combine(value, datetime.time())
    if kind is FormatKind.TIME and isinstance(value, datetime.datetime):
        return value.time()
    if kind is FormatKind.TIME and type(value) is datetime.date:
        return datetime.time()
    return value


def is_blank(value: Any) -> bool:
    return value is None or value == ""


def _float_text(value: float) -> str:
    # repr is the shortest round-trip form; whole numbers below 1e16 end ".0".
    text = repr(value)
    if text[-2:] == ".0":
        text = text[:-2]
        return "0" if text == "-0" else text
    return text


def _time_text(value: datetime.time | datetime.datetime) -> str:
    if value.microsecond:
        return value.isoformat(timespec="milliseconds")
    return value.isoformat()


def duration_text(value: datetime.timedelta) -> str:
    ms = (value.days * 86400 + value.seconds) * 1000 + (
        value.microseconds + 500
    ) // 1000
    sign = "-" if ms < 0 else ""
    seconds, millis = divmod(abs(ms), 1000)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{sign}{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{text}.{millis:03d}" if millis else text


def _date_text(value: datetime.date) -> str:
    return value.isoformat()


_TEXT: dict[type, Any] = {
    str: str,
    float: _float_text,
    int: str,
    bool: lambda value: "TRUE" if value else "FALSE",
    datetime.datetime: _time_text,
    datetime.time: _time_text,
    datetime.date: _date_text,
    datetime.timedelta: duration_text,
    ExcelError: str,
    MissingValue: str,
    type(None): lambda value: "",
}


def text_of(value: Any) -> str:
    """The CSV text of one cell value."""
    if type(value) is str:
        return value
    return str(_TEXT.get(type(value), str)(value))


TEXT_FORMATTERS = _TEXT


def json_value(value: Any) -> Any:
    """The JSON form of one cell value: numbers, booleans and null stay typed."""
    if value is None or value == "":
        return None
    kind = type(value)
    if kind is float:
        return int(value) if value.is_integer() and abs(value) < 1e16 else value
    if kind in (str, int, bool):
        return value
    if isinstance(value, MissingValue):
        return None
    return text_of(value)


def column_letter(index: int) -> str:
    """0-based column index to letters (0 → A, 26 → AA)."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


_LETTERS = re.compile(r"[A-Za-z]{1,3}")


def column_index(letters: str) -> int | None:
    """Column letters to a 0-based index, None when `letters` is not a column."""
    if not _LETTERS.fullmatch(letters):
        return None
    index = 0
    for char in letters.upper():
        index = index * 26 + ord(char) - 64
    return index - 1 if index <= 16384 else None
