"""Hostile input found by using the engine like a new user: each case fails
cleanly with an EngineError (or converts correctly), never hangs or crashes."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from openpyxl import Workbook

from mutate.transformer.engine import EngineError, Limits, validate_configuration

from .conftest import configuration, run, sheet_bytes, workbook_bytes


def _error(
    data: bytes,
    name: str = "book.xlsx",
    document: dict | None = None,
    limits: Limits | None = None,
) -> EngineError:
    with pytest.raises(EngineError) as caught:
        run(data, name, document, limits=limits)
    return caught.value


def _with_sheet_xml(book: bytes, change: bytes) -> bytes:
    """`book` with its first sheet part replaced by `change`."""
    source = zipfile.ZipFile(io.BytesIO(book))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                content = change
            target.writestr(item.filename, content)
    return out.getvalue()


def _sheet_xml(book: bytes) -> bytes:
    return zipfile.ZipFile(io.BytesIO(book)).read("xl/worksheets/sheet1.xml")


@pytest.fixture
def book() -> bytes:
    return sheet_bytes([["a", "b"], [1, 2]])


# -- EVALUATE_FORMULAS


@pytest.mark.timeout(30)
def test_evaluated_aggregate_is_a_number_not_a_hang() -> None:
    # `formulas` returns SUM as a numpy float inside an array; unwrapping it
    # used to loop forever.
    def build(book: Workbook) -> None:
        sheet = book.active
        sheet.append(["a", "b", "sum"])
        sheet.append([2, 3.5, "=SUM(A2:B2)"])

    output, result = run(
        workbook_bytes(build), document={"rules": [{"id": "f", "evaluateFormulas": {}}]}
    )
    assert output == b"a,b,sum\n2,3.5,5.5\n"
    assert result.execution_log[0].message == "computed 1 formulas"


# -- JSON input


def test_json_integer_too_long_for_python_is_invalid_file() -> None:
    error = _error(b'[{"a": ' + b"9" * 5000 + b"}]", "data.json")
    assert error.code == "INVALID_FILE"
    assert error.message.startswith("data.json is not valid JSON or NDJSON (")


def test_json_nan_and_infinity_refused() -> None:
    # Not JSON; accepting them wrote NaN/Infinity into the JSON output.
    error = _error(b'[{"a": NaN, "b": 1}]', "data.json")
    assert (error.code, error.message) == (
        "INVALID_FILE",
        "data.json is not valid JSON or NDJSON (NaN is not a JSON value)",
    )


def test_json_number_overflowing_a_float_keeps_its_text() -> None:
    output, _ = run(
        b'[{"a": 1e400, "b": 0.1}]', "data.json", {"outputFormat": {"type": "JSON"}}
    )
    assert json.loads(output) == [{"a": "1e400", "b": 0.1}]


def test_json_input_counts_cells_against_the_limit() -> None:
    data = json.dumps([{"a": i, "b": i} for i in range(20)]).encode()
    assert run(data, "data.json", limits=Limits(max_cells=40))[1].rows == 20
    error = _error(data, "data.json", limits=Limits(max_cells=39))
    assert (error.code, error.message) == (
        "LIMIT_EXCEEDED",
        "data.json holds more than 39 cells (limit max_cells)",
    )


def test_ndjson_lines_of_arrays_convert() -> None:
    # Each line an array: the whole text once failed as "Extra data".
    output, _ = run(b'["a", "b"]\n[1, 2]\n[3, 4]\n', "data.ndjson")
    assert output == b"a,b\n1,2\n3,4\n"


def test_ndjson_input_counts_cells_against_the_limit() -> None:
    data = b"\n".join(json.dumps([i, i]).encode() for i in range(20))
    error = _error(data, "data.ndjson", limits=Limits(max_cells=39))
    assert error.code == "LIMIT_EXCEEDED"


# -- encodings and delimiters


@pytest.mark.parametrize(
    "name", ["rot13", "base64", "hex", "zlib", "idna", "punycode", "undefined"]
)
def test_output_encoding_must_be_a_character_set(name: str) -> None:
    problems = validate_configuration(
        configuration({"outputFormat": {"encoding": name}})
    )
    assert [(p.field, p.message) for p in problems] == [
        ("outputFormat.encoding", f"{name!r} is not a character encoding")
    ]


def test_csv_encoding_must_be_a_character_set() -> None:
    problems = validate_configuration(
        configuration({"readOptions": {"csvEncoding": "base64"}})
    )
    assert [(p.field, p.message) for p in problems] == [
        ("readOptions.csvEncoding", "'base64' is not a character encoding")
    ]


@pytest.mark.parametrize("name", ["utf-8", "utf-8-sig", "cp1252", "UTF-16", "latin1"])
def test_character_sets_accepted(name: str) -> None:
    assert not validate_configuration(
        configuration(
            {"readOptions": {"csvEncoding": name}, "outputFormat": {"encoding": name}}
        )
    )


@pytest.mark.parametrize("delimiter", ['"', "\n", "\r"])
def test_csv_input_delimiter_cannot_be_a_quote_or_line_break(delimiter: str) -> None:
    problems = validate_configuration(
        configuration({"readOptions": {"csvDelimiter": delimiter}})
    )
    assert [(p.field, p.message) for p in problems] == [
        (
            "readOptions.csvDelimiter",
            "must be one character other than a quote or a line break",
        )
    ]


# -- limits


def test_limits_refuse_nan() -> None:
    with pytest.raises(EngineError) as caught:
        Limits.from_env({"MUTATE_LIMIT_MAX_COMPRESSION_RATIO": "nan"})
    assert caught.value.code == "INVALID_CONFIGURATION"
    assert caught.value.message == "limit max_compression_ratio must be positive"


# -- sparse sheets: a few cells spanning a huge grid


def test_far_apart_cells_refused_before_the_grid_is_built(book: bytes) -> None:
    # Two cells at A1 and XFD1048576 span 17 billion grid cells: calamine used
    # to abort the whole process trying to allocate them.
    sheet = _sheet_xml(book)
    far = sheet.replace(
        b"</sheetData>",
        b'<row r="1048576"><c r="XFD1048576" t="n"><v>9</v></c></row></sheetData>',
    )
    error = _error(_with_sheet_xml(book, far))
    assert (error.code, error.message) == (
        "LIMIT_EXCEEDED",
        "sheet 'Data' spans 1048576 rows x 16384 columns (A1:XFD1048576), "
        "more than 40000000 grid cells (4 x limit max_cells)",
    )


def test_far_reference_with_spaces_around_equals_refused(book: bytes) -> None:
    sheet = _sheet_xml(book)
    far = sheet.replace(
        b"</sheetData>",
        b'<row r="1048576"><c r = "XFD1048576"><v>9</v></c></row></sheetData>',
    )
    assert _error(_with_sheet_xml(book, far)).code == "LIMIT_EXCEEDED"


def test_empty_styled_cells_do_not_widen_the_grid(book: bytes) -> None:
    # gnumeric writes a last row of empty styled cells out to XFD1048576.
    sheet = _sheet_xml(book)
    empty = sheet.replace(
        b"</sheetData>",
        b'<row r="1048576"><c r="A1048576" s="0"/><c r="XFD1048576" s="0"/>'
        b"</row></sheetData>",
    )
    output, _ = run(_with_sheet_xml(book, empty))
    assert output == b"a,b\n1,2\n"


def test_wide_sparse_rows_count_their_grid(book: bytes) -> None:
    sheet = _sheet_xml(book)
    rows = b"".join(
        b'<row r="%d"><c r="ZZ%d" t="n"><v>1</v></c></row>' % (n, n)
        for n in range(3, 20)
    )
    wide = _with_sheet_xml(book, sheet.replace(b"</sheetData>", rows + b"</sheetData>"))
    # The grid may hold four times max_cells: 19 x 702 = 13338 <= 4 x 3335.
    assert run(wide, limits=Limits(max_cells=3335))[1].columns == 702
    error = _error(wide, limits=Limits(max_cells=3334))
    assert error.message == (
        "sheet 'Data' spans 19 rows x 702 columns (A1:ZZ19), "
        "more than 13336 grid cells (4 x limit max_cells)"
    )


def test_far_cell_in_a_dense_sheet_is_measured_exactly(book: bytes) -> None:
    sheet = _sheet_xml(book)
    far = sheet.replace(
        b"</sheetData>",
        b'<row r="5"><c r="C5" t="n"><v>1</v></c><c r="AB5" t="n"><v>2</v></c>'
        b"</row></sheetData>",
    )
    output, result = run(_with_sheet_xml(book, far), limits=Limits(max_cells=35))
    assert result.columns == 28
    assert output.splitlines()[-1] == b",,1" + b"," * 25 + b"2"


# -- XML declarations hidden from a quick look


def test_dtd_after_a_long_comment_in_sheet_refused(book: bytes) -> None:
    sheet = _sheet_xml(book)
    head = b'<?xml version="1.0"?>\n<!--' + b"x" * 8000 + b"-->\n"
    body = sheet.split(b"?>", 1)[1] if sheet.startswith(b"<?xml") else sheet
    evil = head + b'<!DOCTYPE worksheet [<!ENTITY e "EXPANDED">]>\n' + body
    error = _error(_with_sheet_xml(book, evil))
    assert (error.code, error.message) == (
        "INVALID_FILE",
        "sheet 'Data' declares XML entities or a DTD, which are refused",
    )


def test_entities_in_shared_strings_refused() -> None:
    book = sheet_bytes([["a", "b"], [1, 2]])
    source = zipfile.ZipFile(io.BytesIO(book))
    sheet = source.read("xl/worksheets/sheet1.xml")
    sheet = sheet.replace(
        b'<c r="A1" t="inlineStr"><is><t>a</t></is></c>',
        b'<c r="A1" t="s"><v>0</v></c>',
    )
    strings = (
        b'<?xml version="1.0"?>\n<!DOCTYPE sst [<!ENTITY x SYSTEM '
        b'"file:///etc/passwd">]>\n<sst xmlns="http://schemas.openxmlformats.org/'
        b'spreadsheetml/2006/main" count="1" uniqueCount="1"><si><t>&x;</t></si></sst>'
    )
    rels = source.read("xl/_rels/workbook.xml.rels").replace(
        b"</Relationships>",
        b'<Relationship Id="rIdS" Type="http://schemas.openxmlformats.org/'
        b'officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/>'
        b"</Relationships>",
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            content = {
                "xl/worksheets/sheet1.xml": sheet,
                "xl/_rels/workbook.xml.rels": rels,
            }.get(item.filename, source.read(item.filename))
            target.writestr(item.filename, content)
        target.writestr("xl/sharedStrings.xml", strings)
    error = _error(out.getvalue())
    assert (error.code, error.message) == (
        "INVALID_FILE",
        "book.xlsx: part xl/sharedStrings.xml declares XML entities or a DTD, "
        "which are refused",
    )
