"""CSV and JSON input that is plainly not text (a PDF, an image, an archive) is
refused as WRONG_FILE_TYPE from its first bytes; real text files never are."""

from __future__ import annotations

import csv
import io
import random
import zipfile
from typing import Any

import pytest

from mutate.transformer.engine import EngineError

from .conftest import corpus_dir, run, sheet_bytes

CORPUS = corpus_dir()

# A small but complete uncompressed PDF: text only, no NUL byte anywhere, so
# only its signature tells it apart from a one-column CSV.
PDF = (
    b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
    b"1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    b"2 0 obj\n<< /Type /Pages /Kids [3 0 R] /Count 1 >>\nendobj\n"
    b"3 0 obj\n<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>\nendobj\n"
    b"xref\n0 4\n0000000000 65535 f \ntrailer\n<< /Root 1 0 R /Size 4 >>\n"
    b"startxref\n0\n%%EOF\n"
)
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01"
    b"\x08\x06\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\x00IEND\xaeB`\x82"
)


def _corpus(kind: str) -> list[str]:
    with (CORPUS / "MANIFEST.tsv").open(encoding="utf-8", newline="") as handle:
        names = [row["file"] for row in csv.DictReader(handle, delimiter="\t")]
    return [name for name in names if name.endswith(kind)]


def _refusal(data: bytes, name: str, document: dict[str, Any] | None = None) -> str:
    with pytest.raises(EngineError) as caught:
        run(data, name, document or {"conversionType": "CSV_TO_CSV"})
    assert caught.value.code == "WRONG_FILE_TYPE", caught.value
    return caught.value.message


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


@pytest.mark.parametrize("name", _corpus(".csv"))
@pytest.mark.parametrize("conversion", ["CSV_TO_CSV", "CSV_TO_JSON"])
def test_no_corpus_csv_is_refused(name: str, conversion: str) -> None:
    data = (CORPUS / "files" / name).read_bytes()
    output, result = run(data, name, {"conversionType": conversion})
    assert output and result.rows > 0


@pytest.mark.parametrize("name", _corpus(".json"))
def test_no_corpus_json_is_refused(name: str) -> None:
    data = (CORPUS / "files" / name).read_bytes()
    output, result = run(data, name, {"conversionType": "JSON_TO_CSV"})
    assert output and result.rows > 0


@pytest.mark.parametrize("name", _corpus(".xlsx")[:3])
def test_corpus_workbook_sent_as_csv_is_named(name: str) -> None:
    data = (CORPUS / "files" / name).read_bytes()
    assert _refusal(data, name) == (
        f"{name} looks like an XLSX workbook, not CSV text; use an XLSX conversion type"
    )


@pytest.mark.parametrize(
    ("data", "looks_like"),
    [
        (PDF, "a PDF"),
        (PNG, "a PNG image"),
        (b"GIF89a\x01\x00\x01\x00\x80\x00\x00", "a GIF image"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01", "a JPEG image"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 512, "a legacy Office file"),
        (_zip({"word/document.xml": b"<w/>"}), "a ZIP archive"),
        (random.Random(7).randbytes(4096), "binary data (it holds NUL bytes)"),
    ],
    ids=["pdf", "png", "gif", "jpeg", "ole2", "zip", "random"],
)
def test_binary_sent_as_csv_is_refused(data: bytes, looks_like: str) -> None:
    message = _refusal(data, "upload.csv")
    assert message.startswith(f"upload.csv looks like {looks_like}")
    assert message.endswith("not CSV text")


def test_pdf_refused_even_with_a_declared_encoding() -> None:
    # A declared encoding used to skip every check: latin-1 decodes any bytes.
    for encoding in ("latin-1", "utf-8"):
        document = {
            "conversionType": "CSV_TO_CSV",
            "readOptions": {"csvEncoding": encoding},
        }
        assert (
            _refusal(PDF, "r.csv", document) == "r.csv looks like a PDF, not CSV text"
        )


def test_png_refused_by_content_whatever_its_name() -> None:
    assert _refusal(PNG, "photo.txt", {}) == (
        "photo.txt looks like a PNG image, not CSV text"
    )


def test_pdf_sent_as_json_says_json() -> None:
    message = _refusal(PDF, "r.json", {"conversionType": "JSON_TO_CSV"})
    assert message == "r.json looks like a PDF, not JSON text"


def test_workbook_sent_as_json_is_named() -> None:
    message = _refusal(
        sheet_bytes([["a"]]), "b.json", {"conversionType": "JSON_TO_CSV"}
    )
    assert message.startswith("b.json looks like an XLSX workbook, not JSON text")


# -- text the engine reads today keeps being read


# Latin-1 can hold it too, so every encoding below has the same text.
TEXT = "name,city\nZoë,Münster\nJosé,Málaga\n"


@pytest.mark.parametrize(
    ("data", "read_options"),
    [
        (TEXT.encode("utf-8"), {}),
        (b"\xef\xbb\xbf" + TEXT.encode("utf-8"), {}),
        (TEXT.encode("utf-16"), {}),
        (TEXT.encode("utf-32"), {}),
        (TEXT.encode("utf-16-le"), {"csvEncoding": "utf-16-le"}),
        (TEXT.encode("utf-16-be"), {"csvEncoding": "UTF_16_BE"}),
        (TEXT.encode("utf-16"), {"csvEncoding": "utf-16"}),
        (TEXT.encode("latin-1"), {}),
        (TEXT.encode("cp1252"), {"csvEncoding": "cp1252"}),
    ],
    ids=[
        "utf-8",
        "utf-8-bom",
        "utf-16-bom",
        "utf-32-bom",
        "utf-16-le-declared",
        "utf-16-be-declared",
        "utf-16-bom-declared",
        "latin-1",
        "cp1252-declared",
    ],
)
def test_text_encodings_still_read(data: bytes, read_options: dict[str, str]) -> None:
    document = {"conversionType": "CSV_TO_CSV", "readOptions": read_options}
    output, _ = run(data, "people.csv", document)
    assert output.decode("utf-8") == TEXT


def test_utf16_without_bom_gets_a_hint() -> None:
    message = _refusal(TEXT.encode("utf-16-le"), "people.csv")
    assert message == (
        "people.csv looks like UTF-16 text without a byte-order mark, not CSV "
        "text; set readOptions.csvEncoding to utf-16-le"
    )


def test_empty_csv_is_still_empty_not_binary() -> None:
    with pytest.raises(EngineError) as caught:
        run(b"", "e.csv", {"conversionType": "CSV_TO_CSV"})
    assert caught.value.code == "EMPTY_FILE"


def test_text_that_merely_mentions_a_signature_is_read() -> None:
    output, _ = run(b"code,kind\n%PDF-,pdf\nPK,zip\n", "s.csv", {})
    assert output == b"code,kind\n%PDF-,pdf\nPK,zip\n"


def test_a_first_cell_that_starts_like_a_pdf_is_read() -> None:
    # Only "%PDF-" with a version (1.x, 2.x) is a PDF's header.
    output, _ = run(b"%PDF-like text,ok\n1,2\n", "p.csv", {})
    assert output == b"%PDF-like text,ok\n1,2\n"
