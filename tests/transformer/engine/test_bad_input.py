"""Bad input: each case fails with its code and a specific message, never a crash."""

from __future__ import annotations

import io
import zipfile

import pytest
from openpyxl import Workbook

from mutate.transformer.engine import EngineError, Limits

from .conftest import run, sheet_bytes, workbook_bytes


def _error(
    data: bytes,
    name: str = "book.xlsx",
    document: dict | None = None,
    limits: Limits | None = None,
) -> EngineError:
    with pytest.raises(EngineError) as caught:
        run(data, name, document, limits=limits)
    return caught.value


def _rezip(data: bytes, change: dict[str, bytes | None]) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            content = change.get(item.filename, source.read(item.filename))
            if content is not None:
                target.writestr(item.filename, content)
        for name, content in change.items():
            if name not in source.namelist() and content is not None:
                target.writestr(name, content)
    return out.getvalue()


@pytest.fixture
def book() -> bytes:
    return sheet_bytes([["a", "b"], [1, 2]])


def test_empty_file() -> None:
    error = _error(b"")
    assert (error.code, error.message) == ("EMPTY_FILE", "book.xlsx is empty (0 bytes)")


def test_empty_csv() -> None:
    error = _error(b"  \n", "data.csv")
    assert (error.code, error.message) == ("EMPTY_FILE", "data.csv is empty")


def test_truncated_workbook(book: bytes) -> None:
    error = _error(book[: len(book) // 2])
    assert error.code == "INVALID_FILE"
    assert error.message.startswith("book.xlsx is corrupt or truncated")


def test_corrupt_sheet_part(book: bytes) -> None:
    data = bytearray(book)
    # Flip bytes inside the deflated sheet data; the container stays readable.
    info = zipfile.ZipFile(io.BytesIO(book)).getinfo("xl/worksheets/sheet1.xml")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 20
    data[start : start + 8] = b"\x00" * 8
    error = _error(bytes(data))
    assert error.code == "INVALID_FILE"
    assert "corrupt" in error.message


def test_not_a_workbook_by_content() -> None:
    error = _error(b"%PDF-1.4 not a spreadsheet", "report.xlsx")
    assert error.code == "WRONG_FILE_TYPE"
    assert (
        error.message
        == "report.xlsx is not an XLSX workbook (it is not a zip container)"
    )


def test_workbook_named_csv(book: bytes) -> None:
    error = _error(book, "data.csv", {"conversionType": "CSV_TO_CSV"})
    assert error.code == "WRONG_FILE_TYPE"
    assert error.message == (
        "data.csv looks like an XLSX workbook, not CSV text; "
        "use an XLSX conversion type"
    )


def test_zip_that_is_not_a_workbook() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("hello.txt", "hi")
    error = _error(out.getvalue())
    assert (error.code, error.message) == (
        "INVALID_FILE",
        "book.xlsx is a zip file but not a workbook (no xl/workbook.xml)",
    )


def test_password_protected() -> None:
    # An encrypted OOXML file is an OLE2 compound file holding EncryptedPackage.
    data = (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
        + b"\x00" * 100
        + "EncryptedPackage".encode("utf-16-le")
        + b"\x00" * 100
    )
    error = _error(data)
    assert error.code == "PASSWORD_PROTECTED"
    assert error.message.startswith("book.xlsx is password-protected")


def test_legacy_xls() -> None:
    error = _error(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 512, "old.xls")
    assert error.code == "WRONG_FILE_TYPE"
    assert "legacy binary Excel file (.xls)" in error.message


def test_zip_bomb_refused_before_reading(book: bytes) -> None:
    bomb = _rezip(
        book,
        {
            "xl/worksheets/sheet1.xml": None,
            "xl/media/padding.bin": b"\x00" * (20 * 1024 * 1024),
        },
    )
    assert len(bomb) < 100_000
    error = _error(bomb)
    assert error.code == "LIMIT_EXCEEDED"
    assert "over the limit max_compression_ratio=200 (zip bomb?)" in error.message


def test_uncompressed_size_limit(book: bytes) -> None:
    error = _error(book, limits=Limits(max_uncompressed_bytes=1000))
    assert error.code == "LIMIT_EXCEEDED"
    assert error.message == (
        "book.xlsx expands to more than 1000 bytes (limit max_uncompressed_bytes)"
    )


def test_input_size_limit(book: bytes) -> None:
    error = _error(book, limits=Limits(max_input_bytes=100))
    assert error.code == "LIMIT_EXCEEDED"
    assert error.message.endswith("over the limit max_input_bytes=100")


def test_cells_present_limit_counts_real_cells() -> None:
    data = sheet_bytes([[1, 2, 3]] * 10)
    assert run(data, limits=Limits(max_cells=30))[1].rows == 9
    error = _error(data, limits=Limits(max_cells=29))
    assert error.message == "sheet 'Data' holds more than 29 cells (limit max_cells)"


def test_bogus_dimension_reads_what_is_there(book: bytes) -> None:
    sheet = zipfile.ZipFile(io.BytesIO(book)).read("xl/worksheets/sheet1.xml")
    bogus = sheet.replace(b'<dimension ref="A1:B2"', b'<dimension ref="A1:XFD1048576"')
    assert bogus != sheet
    output, result = run(
        _rezip(book, {"xl/worksheets/sheet1.xml": bogus}), limits=Limits(max_cells=10)
    )
    assert output == b"a,b\n1,2\n"


def test_xml_entity_expansion_refused(book: bytes) -> None:
    evil = (
        b'<?xml version="1.0"?><!DOCTYPE lol [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;">]>'
        b'<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        b'<sheets><sheet name="&lol2;" sheetId="1"/></sheets></workbook>'
    )
    error = _error(_rezip(book, {"xl/workbook.xml": evil}))
    assert error.code == "INVALID_FILE"
    assert error.message == (
        "book.xlsx: part xl/workbook.xml declares XML entities or a DTD, which are "
        "refused"
    )


def test_entity_in_sheet_xml_refused(book: bytes) -> None:
    sheet = zipfile.ZipFile(io.BytesIO(book)).read("xl/worksheets/sheet1.xml")
    evil = sheet.replace(b"<worksheet", b'<!DOCTYPE x [<!ENTITY a "b">]><worksheet', 1)
    error = _error(_rezip(book, {"xl/worksheets/sheet1.xml": evil}))
    assert (
        error.message
        == "sheet 'Data' declares XML entities or a DTD, which are refused"
    )


def test_workbook_without_worksheets() -> None:
    def build(book: Workbook) -> None:
        book.create_chartsheet("Chart")
        book.remove(book.active)

    error = _error(workbook_bytes(build))
    assert (error.code, error.message) == (
        "EMPTY_FILE",
        "book.xlsx contains no worksheets",
    )


def test_invalid_json() -> None:
    error = _error(b'[{"a": 1},', "x.json", {"conversionType": "JSON_TO_CSV"})
    assert error.code == "INVALID_FILE"
    assert error.message.startswith("x.json is not valid JSON or NDJSON")


def test_binary_as_csv() -> None:
    error = _error(b"\x00\x01\x02binary", "x.csv")
    assert (error.code, error.message) == (
        "WRONG_FILE_TYPE",
        "x.csv looks like binary data (it holds NUL bytes), not CSV text",
    )


def test_csv_with_wrong_declared_encoding() -> None:
    error = _error(
        "é".encode("latin-1"), "x.csv", {"readOptions": {"csvEncoding": "utf-8"}}
    )
    assert error.code == "ENCODING_ERROR"


def test_cancel_between_rules(book: bytes) -> None:
    from mutate.transformer.engine import convert

    from .conftest import configuration

    with pytest.raises(EngineError) as caught:
        convert(
            book,
            "b.xlsx",
            configuration(
                {"rules": [{"id": "d", "deleteRows": {"condition": "EMPTY"}}]}
            ),
            io.BytesIO(),
            should_cancel=lambda: True,
        )
    assert caught.value.code == "CANCELLED"


def test_progress_reports_from_0_to_100(book: bytes) -> None:
    from mutate.transformer.engine import convert

    from .conftest import configuration

    seen: list[int] = []
    convert(book, "b.xlsx", configuration(), io.BytesIO(), progress=seen.append)
    assert seen[0] == 0 and seen[-1] == 100 and seen == sorted(seen)


def test_errors_pickle_with_their_fields() -> None:
    import pickle

    error = EngineError("LIMIT_EXCEEDED", "too big", rule_id="r1", retryable=True)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.code, copy.message, copy.rule_id, copy.retryable) == (
        "LIMIT_EXCEEDED",
        "too big",
        "r1",
        True,
    )
    assert copy.to_proto().rule_id == "r1"


def test_workbook_rule_on_csv_without_conversion_type() -> None:
    error = _error(
        b"a,b\n1,2\n", "x.csv", {"rules": [{"id": "f", "evaluateFormulas": {}}]}
    )
    assert (error.code, error.rule_id) == ("INVALID_CONFIGURATION", "f")
    assert error.message == (
        "rule f: EVALUATE_FORMULAS needs a workbook, and x.csv is read as CSV or JSON"
    )
