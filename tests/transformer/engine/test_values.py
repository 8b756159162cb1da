"""Number-format kinds, serial dates and the canonical text of values."""

from __future__ import annotations

import datetime

import pytest

from mutate.transformer.engine._display import display_number, general_text
from mutate.transformer.engine._values import (
    ExcelError,
    FormatKind,
    classify_format,
    column_index,
    column_letter,
    json_value,
    serial_to_value,
    text_of,
)


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("General", FormatKind.NUMBER),
        ("0.00", FormatKind.NUMBER),
        ("0.00E+00", FormatKind.NUMBER),
        ("#,##0.00 [$€-407]", FormatKind.NUMBER),
        ("@", FormatKind.TEXT),
        ("yyyy-mm-dd", FormatKind.DATE),
        ("yyyy\\-mm\\-dd;@", FormatKind.DATE),
        ("mmm-yy", FormatKind.DATE),
        ("m/d/yyyy h:mm:ss", FormatKind.DATETIME),
        ("[$-409]dd/mm/yyyy hh:mm", FormatKind.DATETIME),
        ("h:mm AM/PM", FormatKind.TIME),
        ("mm:ss", FormatKind.TIME),
        ("A/P", FormatKind.TIME),
        ("[h]:mm:ss", FormatKind.DURATION),
        ("[mm]:ss", FormatKind.DURATION),
        ("HH[MM]", FormatKind.DURATION),
        ('"day" d', FormatKind.DATE),
        ('"hours" 0', FormatKind.NUMBER),
        ("[Red]0.00;[Blue]-0.00", FormatKind.NUMBER),
    ],
)
def test_classify_format_kind(code: str, kind: FormatKind) -> None:
    assert classify_format(164, code) is kind


@pytest.mark.parametrize(
    ("number_format_id", "kind"),
    [
        (14, FormatKind.DATE),
        (20, FormatKind.TIME),
        (22, FormatKind.DATETIME),
        (46, FormatKind.DURATION),
        (4, FormatKind.NUMBER),
    ],
)
def test_classify_builtin_formats(number_format_id: int, kind: FormatKind) -> None:
    assert classify_format(number_format_id, None) is kind


@pytest.mark.parametrize(
    ("serial", "kind", "date1904", "expected"),
    [
        (45322, FormatKind.DATE, False, datetime.date(2024, 1, 31)),
        (45322.5, FormatKind.DATE, False, datetime.date(2024, 1, 31)),
        (45322, FormatKind.DATETIME, False, datetime.datetime(2024, 1, 31)),
        (
            45322.573,
            FormatKind.DATETIME,
            False,
            datetime.datetime(2024, 1, 31, 13, 45, 7, 200000),
        ),
        (0.25, FormatKind.TIME, False, datetime.time(6)),
        (1.25, FormatKind.TIME, False, datetime.time(6)),
        (10.5, FormatKind.DURATION, False, datetime.timedelta(days=10, hours=12)),
        (-1.5, FormatKind.DURATION, False, datetime.timedelta(days=-1.5)),
        (-1.2, FormatKind.DATE, False, -1.2),
        (0.5, FormatKind.DATETIME, False, 0.5),
        (60, FormatKind.DATE, False, 60),
        (59, FormatKind.DATE, False, datetime.date(1900, 2, 28)),
        (61, FormatKind.DATE, False, datetime.date(1900, 3, 1)),
        (0, FormatKind.DATE, True, datetime.date(1904, 1, 1)),
        (1, FormatKind.DATE, True, datetime.date(1904, 1, 2)),
    ],
)
def test_serial_to_value(
    serial: float, kind: FormatKind, date1904: bool, expected: object
) -> None:
    assert serial_to_value(serial, kind, date1904) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.0, "1"),
        (0.1, "0.1"),
        (0.1 + 0.2, "0.30000000000000004"),
        (-0.0, "0"),
        (1e16, "1e+16"),
        (123456789012345.0, "123456789012345"),
        (True, "TRUE"),
        (False, "FALSE"),
        (None, ""),
        ("", ""),
        (ExcelError("#DIV/0!"), "#DIV/0!"),
        (datetime.date(2024, 1, 31), "2024-01-31"),
        (datetime.datetime(2024, 1, 31), "2024-01-31T00:00:00"),
        (datetime.datetime(2024, 1, 31, 13, 45, 0, 250000), "2024-01-31T13:45:00.250"),
        (datetime.time(13, 45), "13:45:00"),
        (datetime.timedelta(days=10, seconds=54610), "255:10:10"),
        (datetime.timedelta(hours=1), "01:00:00"),
        (datetime.timedelta(days=-1.2), "-28:48:00"),
        (datetime.timedelta(seconds=1, milliseconds=500), "00:00:01.500"),
    ],
)
def test_text_of_canonical_forms(value: object, expected: str) -> None:
    assert text_of(value) == expected


def test_json_value_keeps_json_types() -> None:
    assert json_value(3.0) == 3 and isinstance(json_value(3.0), int)
    assert json_value(2.5) == 2.5
    assert json_value(True) is True
    assert json_value("") is None
    assert json_value(datetime.date(2024, 1, 31)) == "2024-01-31"


@pytest.mark.parametrize(
    ("index", "letters"), [(0, "A"), (25, "Z"), (26, "AA"), (16383, "XFD")]
)
def test_column_letters_round_trip(index: int, letters: str) -> None:
    assert column_letter(index) == letters
    assert column_index(letters) == index
    assert column_index(letters.lower()) == index


def test_column_index_refuses_non_columns() -> None:
    assert column_index("XFE") is None
    assert column_index("A1") is None
    assert column_index("Name") is None


@pytest.mark.parametrize(
    ("value", "code", "expected"),
    [
        (1234.5, "#,##0.00", "1,234.50"),
        (0.256, "0.0%", "25.6%"),
        (-5, "0.00;(0.00)", "(5.00)"),
        (0, '0;-0;"zero"', "zero"),
        (12345.6789, "0.00E+00", "1.23E+04"),
        (1.5, "# ?/?", "1 1/2"),
        (1234.5, "[$€-407] #,##0.00", "€ 1,234.50"),
        (45322.573, "yyyy-mm-dd hh:mm", "2024-01-31 13:45"),
        (45322.573, "d mmm yyyy", "31 Jan 2024"),
        (45322.573, "dddd", "Wednesday"),
        (0.573, "h:mm AM/PM", "1:45 PM"),
        (10.63206, "[h]:mm:ss", "255:10:10"),
        (42, "@", "42"),
        (42, "General", "42"),
    ],
)
def test_display_number(value: float, code: str, expected: str) -> None:
    assert display_number(value, code, False) == expected


def test_general_text_switches_to_scientific() -> None:
    assert general_text(1234567890123.0) == "1.23457E+12"
    assert general_text(0.1 + 0.2) == "0.3"
