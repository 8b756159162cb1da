"""Output options: CSV dialect, encodings, injection, JSON and NDJSON; and the
CSV round trip for any table of strings (hypothesis)."""

from __future__ import annotations

import csv
import datetime
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mutate.transformer.engine import EngineError
from mutate.transformer.engine._table import Table
from mutate.transformer.engine._writers import OutputSpec, write_table

from .conftest import run, sheet_bytes, workbook_bytes

ROWS = [
    ["id", "name", "when"],
    [1, 'say "hi"', datetime.date(2024, 1, 31)],
    [2.5, "a,b", None],
    [3, "-5", True],
]


@pytest.fixture
def data() -> bytes:
    return sheet_bytes(ROWS, C2="yyyy-mm-dd")


@pytest.mark.parametrize(
    ("output_format", "expected"),
    [
        ({}, b'id,name,when\n1,"say ""hi""",2024-01-31\n2.5,"a,b",\n3,-5,TRUE\n'),
        (
            {"delimiter": ";", "lineTerminator": "\r\n"},
            b'id;name;when\r\n1;"say ""hi""";2024-01-31\r\n2.5;a,b;\r\n3;-5;TRUE\r\n',
        ),
        (
            {"quoting": "ALL"},
            b'"id","name","when"\n"1","say ""hi""","2024-01-31"\n"2.5","a,b",""\n'
            b'"3","-5","TRUE"\n',
        ),
        (
            {"quoting": "NON_NUMERIC"},
            b'"id","name","when"\n1,"say ""hi""","2024-01-31"\n2.5,"a,b",""\n'
            b'3,"-5","TRUE"\n',
        ),
        (
            {"includeHeaders": False},
            b'1,"say ""hi""",2024-01-31\n2.5,"a,b",\n3,-5,TRUE\n',
        ),
        (
            {"neutralizeFormulas": True},
            b'id,name,when\n1,"say ""hi""",2024-01-31\n2.5,"a,b",\n3,\'-5,TRUE\n',
        ),
        (
            {"encoding": "utf-8-sig"},
            b"\xef\xbb\xbf"
            b'id,name,when\n1,"say ""hi""",2024-01-31\n2.5,"a,b",\n3,-5,TRUE\n',
        ),
    ],
)
def test_csv_options(
    data: bytes, output_format: dict[str, object], expected: bytes
) -> None:
    output, result = run(data, document={"outputFormat": output_format})
    assert output == expected
    assert (result.rows, result.columns) == (3, 3)


def test_quoting_none_fails_naming_the_cell(data: bytes) -> None:
    with pytest.raises(EngineError) as caught:
        run(data, document={"outputFormat": {"quoting": "NONE"}})
    assert caught.value.message == (
        "cell B2 needs quoting (it holds the delimiter, a quote or a line break) "
        "but outputFormat.quoting is NONE"
    )


def test_encoding_that_cannot_represent_a_cell_fails_naming_it() -> None:
    output, _ = run(
        sheet_bytes([["name"], ["café"]]),
        document={"outputFormat": {"encoding": "latin-1"}},
    )
    assert output == "name\ncafé\n".encode("latin-1")
    with pytest.raises(EngineError) as caught:
        run(
            sheet_bytes([["name"], ["東京"]]),
            document={"outputFormat": {"encoding": "latin-1"}},
        )
    assert caught.value.code == "ENCODING_ERROR"
    assert caught.value.message == (
        "cell A2 holds '東京', which encoding latin-1 cannot represent; choose utf-8"
    )


def test_json_array_of_objects(data: bytes) -> None:
    output, result = run(data, document={"outputFormat": {"type": "JSON"}})
    assert json.loads(output) == [
        {"id": 1, "name": 'say "hi"', "when": "2024-01-31"},
        {"id": 2.5, "name": "a,b", "when": None},
        {"id": 3, "name": "-5", "when": True},
    ]
    assert result.content_type == "application/json; charset=utf-8"
    assert result.output_file_name("in/report.xlsx") == "report.json"


def test_ndjson_lines(data: bytes) -> None:
    output, result = run(
        data,
        document={"conversionType": "XLSX_TO_JSON", "outputFormat": {"type": "NDJSON"}},
    )
    assert (
        output.decode().splitlines()[0]
        == '{"id":1,"name":"say \\"hi\\"","when":"2024-01-31"}'
    )
    assert result.file_extension == ".ndjson"


def test_json_headers_made_unique() -> None:
    data = sheet_bytes([["a", "a", None, "b"], [1, 2, 3, 4]])
    output, result = run(data, document={"outputFormat": {"type": "JSON"}})
    assert output == b'[\n{"a":1,"a_2":2,"C":3,"b":4}\n]\n'
    assert result.warnings == [
        "JSON keys made unique: column B header 'a' → 'a_2'; column C header '' → 'C'"
    ]


def test_csv_input_to_json() -> None:
    output, _ = run(b"a;b\n1;x\n", "in.csv", {"conversionType": "CSV_TO_JSON"})
    assert output == b'[\n{"a":"1","b":"x"}\n]\n'


def test_json_input_nested_and_ndjson() -> None:
    source = b'{"a": 1, "n": {"x": true}}\n{"b": "y", "a": 2.5}\n'
    output, _ = run(source, "in.ndjson", {"conversionType": "JSON_TO_CSV"})
    assert output == b"a,n.x,b\n1,TRUE,\n2.5,,y\n"


def test_empty_sheet_writes_nothing() -> None:
    assert run(workbook_bytes(lambda book: None))[0] == b""
    output, _ = run(
        workbook_bytes(lambda book: None), document={"outputFormat": {"type": "JSON"}}
    )
    assert output == b"[]\n"


# -- property: any table of strings round-trips through Python's csv reader


def _table(rows: list[list[str]]) -> Table:
    width = max((len(r) for r in rows), default=0)
    return Table(
        sheet="",
        rows=[list(r) for r in rows],
        row_numbers=list(range(1, len(rows) + 1)),
        columns=list(range(width)),
        has_header=False,
    )


def _expected(rows: list[list[str]]) -> list[list[str]]:
    # The writer pads rows to the used width and drops trailing empty rows
    # and columns, as the contract says.
    width = max((i + 1 for r in rows for i, v in enumerate(r) if v), default=0)
    grid = [(r + [""] * width)[:width] for r in rows]
    while grid and not any(grid[-1]):
        grid.pop()
    return grid if width else []


cells = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
tables = st.lists(st.lists(cells, min_size=1, max_size=5), max_size=6)


@pytest.mark.parametrize("quoting", ["MINIMAL", "ALL", "NON_NUMERIC"])
@pytest.mark.parametrize("terminator", ["\n", "\r\n", "\r"])
@settings(max_examples=150, deadline=None)
@given(rows=tables, delimiter=st.sampled_from([",", ";", "\t", "|"]))
def test_csv_round_trip_any_strings(
    rows: list[list[str]], delimiter: str, quoting: str, terminator: str
) -> None:
    spec = OutputSpec(
        kind="csv",
        delimiter=delimiter,
        quoting={
            "MINIMAL": csv.QUOTE_MINIMAL,
            "ALL": csv.QUOTE_ALL,
            "NON_NUMERIC": csv.QUOTE_NONNUMERIC,
        }[quoting],
        line_terminator=terminator,
    )
    buffer = io.BytesIO()
    write_table(_table(rows), spec, buffer, missing_fail=True)
    text = buffer.getvalue().decode("utf-8")
    parsed = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    expected = _expected(rows)
    # A one-column row of "" reads back as [""]; an empty table as nothing.
    assert parsed == expected
