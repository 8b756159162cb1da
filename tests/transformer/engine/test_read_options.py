"""Read options on workbooks built here: dates in both systems, date-times at
midnight, durations, hidden content, header rows, DISPLAYED values, unicode."""

from __future__ import annotations

import datetime
import io
import zipfile

import pytest
from openpyxl import Workbook

from .conftest import run, sheet_bytes, text, workbook_bytes


def _dates(book: Workbook) -> None:
    sheet = book.active
    sheet.append(["date", "datetime", "midnight", "time", "duration", "long"])
    sheet.append(
        [
            datetime.date(2024, 1, 31),
            datetime.datetime(2024, 1, 31, 13, 45),
            datetime.datetime(2024, 1, 31),
            datetime.time(13, 45, 0, 250000),
            datetime.timedelta(hours=1, minutes=2, seconds=3),
            datetime.timedelta(days=10, hours=15, minutes=10, seconds=10),
        ]
    )
    for cell, number_format in zip(
        "ABCDEF",
        [
            "yyyy-mm-dd",
            "yyyy-mm-dd hh:mm",
            "m/d/yyyy h:mm",
            "hh:mm:ss.000",
            "[h]:mm:ss",
            "[h]:mm:ss",
        ],
        strict=True,
    ):
        sheet[f"{cell}2"].number_format = number_format


def test_dates_times_and_durations_follow_the_number_format() -> None:
    assert text(workbook_bytes(_dates)) == (
        "date,datetime,midnight,time,duration,long\n"
        "2024-01-31,2024-01-31T13:45:00,2024-01-31T00:00:00,13:45:00.250,"
        "01:02:03,255:10:10\n"
    )


def test_date_only_format_on_a_fraction_prints_the_date() -> None:
    data = sheet_bytes([["d"], [45322.75]], A2="dd/mm/yyyy")
    assert text(data) == "d\n2024-01-31\n"


def test_negative_and_pre_1900_serials_stay_numbers() -> None:
    data = sheet_bytes([["d"], [-3.5], [0.5]], A2="yyyy-mm-dd", A3="yyyy-mm-dd")
    assert text(data) == "d\n-3.5\n0.5\n"


def _date1904(book: Workbook) -> None:
    book.epoch = datetime.datetime(1904, 1, 1)  # type: ignore[assignment]
    sheet = book.active
    sheet.append(["d"])
    sheet.append([datetime.date(2024, 1, 31)])
    sheet["A2"].number_format = "yyyy-mm-dd"


def test_1904_date_system() -> None:
    data = workbook_bytes(_date1904)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert b'date1904="1"' in archive.read("xl/workbook.xml")
    assert text(data) == "d\n2024-01-31\n"


def _hidden(book: Workbook) -> None:
    sheet = book.active
    for row in [["a", "b", "c"], [1, 2, 3], [4, 5, 6], [7, 8, 9]]:
        sheet.append(row)
    sheet.row_dimensions[3].hidden = True
    sheet.column_dimensions["B"].hidden = True


def test_hidden_rows_and_columns_kept_by_default() -> None:
    assert text(workbook_bytes(_hidden)) == "a,b,c\n1,2,3\n4,5,6\n7,8,9\n"


def test_hidden_rows_and_columns_skipped() -> None:
    output = text(workbook_bytes(_hidden), readOptions={"hiddenContent": "SKIP"})
    assert output == "a,c\n1,3\n7,9\n"


def test_very_hidden_sheet_skipped_by_default_selection() -> None:
    def build(book: Workbook) -> None:
        book.active.append(["secret"])
        book.active.sheet_state = "veryHidden"
        book.create_sheet("Visible").append(["public"])

    assert text(workbook_bytes(build)) == "public\n"


def test_header_row_drops_rows_above() -> None:
    data = sheet_bytes([["Report 2024"], [None], ["id", "name"], [1, "x"]])
    output, result = run(
        data,
        document={
            "readOptions": {"headerRow": 3},
            "rules": [{"id": "d", "deleteColumns": {"columns": ["name"]}}],
        },
    )
    assert output == b"id\n1\n"
    assert result.rows == 1


def test_header_row_zero_means_letters_and_arrays() -> None:
    data = sheet_bytes([["id", "name"], [1, "x"]])
    output, _ = run(
        data,
        document={
            "readOptions": {"headerRow": 0},
            "outputFormat": {"type": "JSON"},
            "rules": [
                {
                    "id": "d",
                    "deleteRows": {"condition": "EQUALS", "column": "A", "value": "id"},
                }
            ],
        },
    )
    assert output == b'[\n[1,"x"]\n]\n'


def test_displayed_values_apply_number_formats() -> None:
    data = sheet_bytes(
        [["n", "pct", "date", "money"], [1234.5, 0.256, 45322.573, -5]],
        A2="#,##0.00",
        B2="0.0%",
        C2="d mmm yyyy h:mm AM/PM",
        D2="$#,##0.00;($#,##0.00)",
    )
    output = text(data, readOptions={"values": "DISPLAYED"})
    assert output == 'n,pct,date,money\n"1,234.50",25.6%,31 Jan 2024 1:45 PM,($5.00)\n'


def test_unicode_wide_and_empty_rows() -> None:
    wide = [f"c{i}" for i in range(60)]
    data = sheet_bytes([wide, ["🍣", "東京", "Ω"], [], [None] * 5, ["x"]])
    lines = text(data).split("\n")
    assert lines[0] == ",".join(wide)
    assert lines[1] == "🍣,東京,Ω" + "," * 57
    assert lines[2] == "," * 59 and lines[3] == "," * 59
    assert lines[4] == "x" + "," * 59


def test_trailing_empty_rows_and_columns_dropped() -> None:
    def build(book: Workbook) -> None:
        sheet = book.active
        sheet.append(["a", "b", None])
        sheet.append([1, None, None])
        sheet["E9"].number_format = "0.00"  # styled but empty
        sheet["F20"] = ""

    assert text(workbook_bytes(build)) == "a,b\n1,\n"


def test_error_cells_print_their_text() -> None:
    def build(book: Workbook) -> None:
        sheet = book.active
        sheet.append(["e"])
        sheet["A2"] = "#N/A"
        sheet["A2"].data_type = "e"
        sheet["A3"] = "#DIV/0!"
        sheet["A3"].data_type = "e"

    assert text(workbook_bytes(build)) == "e\n#N/A\n#DIV/0!\n"


@pytest.mark.parametrize("missing", ["FAIL", "WARN"])
def test_cached_formula_values_are_used(missing: str) -> None:
    from .test_corpus import CORPUS

    data = (CORPUS / "files" / "sheetjs_1904.xlsx").read_bytes()
    output = text(data, readOptions={"missingFormulaValues": missing})
    assert output.splitlines()[0] == "1,1904-01-02,1904-01-02,1904-01-02"


def test_openpyxl_fallback_reads_like_calamine() -> None:
    """A row-only dimension makes python-calamine refuse the sheet; the
    openpyxl fallback must print the same values."""
    data = workbook_bytes(_dates)
    source = zipfile.ZipFile(io.BytesIO(data))
    sheet = source.read("xl/worksheets/sheet1.xml")
    broken = sheet.replace(b'<dimension ref="A1:F2"', b'<dimension ref="1:2"')
    assert broken != sheet
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                content = broken
            target.writestr(item.filename, content)
    assert text(out.getvalue()) == text(data)
