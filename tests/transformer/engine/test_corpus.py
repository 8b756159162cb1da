"""Every corpus file converts (or fails with a clear reason), and the output agrees
with both reference readers where they agree and with the contract where not."""

from __future__ import annotations

import csv
import datetime
import io
import re
import warnings
import zipfile
from functools import cache
from pathlib import Path

import pytest

from mutate.transformer.engine import EngineError

from .conftest import corpus_dir, run

CORPUS = corpus_dir()
FILES = sorted(p.name for p in (CORPUS / "files").iterdir())


def _index() -> list[dict[str, str]]:
    with (CORPUS / "expected" / "INDEX.tsv").open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


@cache
def _disagreements() -> dict[tuple[str, str], dict[str, str]]:
    path = CORPUS / "expected" / "disagreements.tsv"
    with path.open(encoding="utf-8", newline="") as handle:
        rows = csv.DictReader(handle, delimiter="\t")
        return {(row["stem"], row["cell"]): row for row in rows}


def _grid(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def _config(sheet: str) -> dict[str, object]:
    document: dict[str, object] = {"readOptions": {"missingFormulaValues": "WARN"}}
    if sheet != "(first)":
        document["rules"] = [{"id": "sheet", "selectWorksheet": {"name": sheet}}]
    return document


def _convert_grid(file_name: str, document: dict[str, object]) -> list[list[str]]:
    data = (CORPUS / "files" / file_name).read_bytes()
    output, _ = run(data, file_name, document)
    return list(csv.reader(io.StringIO(output.decode("utf-8"), newline="")))


@pytest.mark.parametrize("name", FILES)
def test_every_corpus_file_converts_or_fails_clearly(name: str) -> None:
    data = (CORPUS / "files" / name).read_bytes()
    try:
        output, result = run(
            data, name, {"readOptions": {"missingFormulaValues": "WARN"}}
        )
    except EngineError as exc:
        assert exc.code and len(exc.message) > 20, exc
        pytest.fail(f"{name} failed: {exc.code}: {exc.message}")
    widths = {
        len(row) for row in csv.reader(io.StringIO(output.decode("utf-8"), newline=""))
    }
    assert len(widths) <= 1, f"ragged output rows: {widths}"
    assert result.content_type == "text/csv; charset=utf-8"


# -- the contract's reading of a number format, written independently of the
# engine so that the comparison is not the engine agreeing with itself.


def _contract_kind(number_format: str) -> str:
    code = re.sub(r'"[^"]*"|\\.', "", number_format.split(";")[0])
    if re.search(r"\[(h+|m+|s+)\]", code, re.IGNORECASE):
        return "duration"
    code = re.sub(r"\[[^\]]*\]", "", code).lower()
    has_time = bool(re.search(r"h|s|am/pm|a/p", code))
    code_without_ampm = re.sub(r"am/pm|a/p", "", code)
    has_date = bool(re.search(r"[yd]", code_without_ampm)) or (
        "m" in code_without_ampm and not has_time
    )
    if has_date and has_time:
        return "datetime"
    return "date" if has_date else "time" if has_time else "number"


def _serial_text(serial_text: str, kind: str, date1904: bool = False) -> str:
    serial = float(serial_text)
    ms = round(serial * 86_400_000)
    if kind == "duration":
        sign = "-" if ms < 0 else ""
        seconds, millis = divmod(abs(ms), 1000)
        hours, rest = divmod(seconds, 3600)
        text = f"{sign}{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
        return text + (f".{millis:03d}" if millis else "")
    if serial < 0 or (kind != "time" and serial < 1 and not date1904):
        return _number_text(serial_text)
    if date1904:
        day = datetime.datetime(1904, 1, 1)
    else:
        day = datetime.datetime(1899, 12, 31 if serial < 60 else 30)
    moment = day + datetime.timedelta(milliseconds=ms)
    if kind == "date":
        return moment.date().isoformat()
    clock = moment.time()
    shown = clock.isoformat("milliseconds" if clock.microsecond else "seconds")
    return shown if kind == "time" else f"{moment.date().isoformat()}T{shown}"


def _number_text(text: str) -> str:
    value = float(text)
    return str(int(value)) if value.is_integer() else repr(value)


def _temporal_cells(file_name: str, sheet: str) -> dict[tuple[int, int], str]:
    """Contract text of every stored number shown through a date, time or
    duration format, from the raw XML and openpyxl's reading of the formats."""
    from xml.etree import ElementTree

    import openpyxl

    path = CORPUS / "files" / file_name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # openpyxl on extensions it drops
        book = openpyxl.load_workbook(path, data_only=True)
    sheet_name = book.sheetnames[0] if sheet == "(first)" else sheet
    worksheet = book[sheet_name]
    date1904 = book.epoch.year == 1904
    index = book.sheetnames.index(sheet_name)
    with zipfile.ZipFile(path) as archive:
        names = sorted(
            (n for n in archive.namelist() if n.startswith("xl/worksheets/sheet")),
            key=lambda n: int(re.sub(r"\D", "", n) or 0),
        )
        # The corpus files with temporal formats number their sheet parts in
        # tab order; checked below against openpyxl's cell values.
        root = ElementTree.fromstring(archive.read(names[index]))
    found: dict[tuple[int, int], str] = {}
    for cell in root.iter():
        if not cell.tag.endswith("}c") or cell.get("t", "n") != "n":
            continue
        value = next((v.text for v in cell if v.tag.endswith("}v")), None)
        if not value:
            continue
        ref = cell.get("r", "")
        kind = _contract_kind(worksheet[ref].number_format)
        if kind == "number":
            continue
        match = re.fullmatch(r"([A-Z]+)(\d+)", ref)
        assert match
        column = 0
        for char in match.group(1):
            column = column * 26 + ord(char) - 64
        found[(int(match.group(2)) - 1, column - 1)] = _serial_text(
            value, kind, date1904
        )
    return found


def _normalized(value: str) -> str:
    """A reader's printed value in the contract's form (T, ms, 2-digit hours)."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(?:\.(\d{6}))?", value)
    if match:
        day, clock, micro = match.groups()
        return f"{day}T{clock}" + (f".{micro[:3]}" if micro else "")
    match = re.fullmatch(r"(-?)(\d+):(\d\d):(\d\d)(?:\.(\d{6}))?", value)
    if match:
        sign, hours, minutes, seconds, micro = match.groups()
        text = f"{sign}{int(hours):02d}:{minutes}:{seconds}"
        return text + (f".{micro[:3]}" if micro else "")
    return value


def _cell(column: int, row: int) -> str:
    letters = ""
    column += 1
    while column:
        column, rest = divmod(column - 1, 26)
        letters = chr(65 + rest) + letters
    return f"{letters}{row}"


def _contract_value(row: dict[str, str], calamine: str, openpyxl: str) -> str:
    """The contract's answer where the readers differ (README's table).

    The printed grids are used rather than the TSV, which lost the CR of CRLF.
    """
    kind = _contract_kind(row["number_format"])
    klass = row["class"]
    if klass.startswith("empty-vs-value"):
        # Error cells print their text; a hyperlink alone is not a value.
        return openpyxl if openpyxl.startswith("#") else ""
    if klass.startswith("string differs"):
        return calamine  # _x000D_ decoded
    if klass.startswith("duration"):
        return _normalized(calamine)
    if kind == "datetime":
        return _normalized(openpyxl)
    if kind == "time":
        return _normalized(openpyxl).partition("T")[2] or "00:00:00"
    return calamine


INDEX = _index()
# openpyxl cannot open this file, so only calamine's opinion exists: it prints
# 0.5 under built-in format 18 (h:mm AM/PM, time parts only) as a date-time.
_KNOWN = {"sheetjs_xlsx-stream-d-date-cell.xlsx": {(6, 1): "12:00:00"}}


@pytest.mark.parametrize("entry", INDEX, ids=[e["stem"] for e in INDEX])
def test_corpus_sheet_matches_readers_and_contract(entry: dict[str, str]) -> None:
    stem = entry["stem"]
    expected_dir = CORPUS / "expected"
    calamine = _grid(expected_dir / f"{stem}.calamine.csv")
    openpyxl_path = expected_dir / f"{stem}.openpyxl.csv"
    openpyxl = _grid(openpyxl_path) if openpyxl_path.exists() else calamine
    got = _convert_grid(entry["file"], _config(entry["sheet"]))
    # Both readers print a date-time for a date-only format holding a fraction
    # and ignore time-only formats on whole days; the format decides.
    temporal = (
        _temporal_cells(entry["file"], entry["sheet"]) if openpyxl_path.exists() else {}
    )
    temporal.update(_KNOWN.get(stem, {}))
    height = max(len(calamine), len(openpyxl))
    expected: list[list[str]] = []
    for r in range(height):
        left = calamine[r] if r < len(calamine) else []
        right = openpyxl[r] if r < len(openpyxl) else []
        cells = []
        for c in range(max(len(left), len(right))):
            a = left[c] if c < len(left) else ""
            b = right[c] if c < len(right) else ""
            found = _disagreements().get((stem, _cell(c, r + 1)))
            if (r, c) in temporal:
                cells.append(temporal[(r, c)])
            elif found is None:
                assert _normalized(a) == _normalized(b), (stem, r, c, a, b)
                cells.append(_normalized(a))
            else:
                cells.append(_contract_value(found, a, b))
        expected.append(cells)
    assert _trim(got) == _trim(expected)


def _trim(grid: list[list[str]]) -> list[list[str]]:
    rows = [list(row) for row in grid]
    while rows and not any(rows[-1]):
        rows.pop()
    width = max(
        (max((i + 1 for i, v in enumerate(r) if v), default=0) for r in rows), default=0
    )
    return [(row + [""] * width)[:width] for row in rows]


MERGEFILL = sorted(
    p.name.removesuffix(".calamine-mergefill.csv")
    for p in (CORPUS / "expected").glob("*.calamine-mergefill.csv")
)


@pytest.mark.parametrize("stem", MERGEFILL)
def test_unmerge_and_fill_matches_mergefill_grids(stem: str) -> None:
    entry = next(e for e in INDEX if e["stem"] == stem)
    document = _config(entry["sheet"])
    rules = list(document.get("rules", []))  # type: ignore[call-overload]
    rules.append(
        {"id": "fill", "unmergeAndFill": {"columns": ["all"], "fillDirection": "NONE"}}
    )
    document["rules"] = rules
    got = _convert_grid(entry["file"], document)
    expected_dir = CORPUS / "expected"
    calamine = _grid(expected_dir / f"{stem}.calamine-mergefill.csv")
    openpyxl = _grid(expected_dir / f"{stem}.openpyxl-mergefill.csv")
    assert calamine == openpyxl
    expected = [[_normalized(v) for v in row] for row in calamine]
    assert _trim(got) == _trim(expected)
