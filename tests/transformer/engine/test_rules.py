"""Each rule on small workbooks built here, asserting the exact output bytes."""

from __future__ import annotations

from typing import Any

import pytest
from openpyxl import Workbook
from openpyxl.worksheet.worksheet import Worksheet

from mutate.transformer.engine import EngineError

from .conftest import run, sheet_bytes, text, workbook_bytes

TABLE = [
    ["Name", "City", "Notes", "Amount"],
    ["Ann", "Oslo", "first", 10],
    ["Bob", "Rome", "", 20.5],
    [None, None, None, None],
    ["Cid", "oslo", "Line\nbreak", 30],
    ["Dan", "Paris", "@mention", -4],
]


def rules(*items: dict[str, Any]) -> list[dict[str, Any]]:
    return list(items)


def convert_rules(data: bytes, *items: dict[str, Any], **extra: Any) -> str:
    return text(data, rules=list(items), **extra)


@pytest.fixture
def table() -> bytes:
    return sheet_bytes(TABLE)


def test_no_rules_output_exact(table: bytes) -> None:
    assert text(table) == (
        "Name,City,Notes,Amount\n"
        "Ann,Oslo,first,10\n"
        "Bob,Rome,,20.5\n"
        ",,,\n"
        'Cid,oslo,"Line\nbreak",30\n'
        "Dan,Paris,@mention,-4\n"
    )


# -- SELECT_WORKSHEET


def _three_sheets(book: Workbook) -> None:
    first = book.active
    first.title = "Summary"
    first.append(["summary"])
    hidden = book.create_sheet("2024")
    hidden.append(["year sheet"])
    hidden.sheet_state = "hidden"
    book.create_sheet("Sales East").append(["east"])
    book.create_sheet("Sales West").append(["west"])


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({"name": "Sales West"}, "west\n"),
        ({"name": "2024"}, "year sheet\n"),
        ({"index": 1}, "year sheet\n"),
        ({"index": 3}, "west\n"),
        ({"pattern": "Sales *"}, "east\n"),
        ({"regex": "W.st$"}, "west\n"),
    ],
)
def test_select_worksheet(selector: dict[str, Any], expected: str) -> None:
    data = workbook_bytes(_three_sheets)
    assert convert_rules(data, {"id": "s", "selectWorksheet": selector}) == expected


def test_default_sheet_is_first_visible() -> None:
    def build(book: Workbook) -> None:
        book.active.title = "Hidden"
        book.active.append(["hidden"])
        book.active.sheet_state = "hidden"
        book.create_sheet("Shown").append(["shown"])

    assert text(workbook_bytes(build)) == "shown\n"


def test_select_worksheet_missing_names_sheets() -> None:
    data = workbook_bytes(_three_sheets)
    with pytest.raises(EngineError) as caught:
        convert_rules(data, {"id": "pick", "selectWorksheet": {"name": "2025"}})
    assert caught.value.code == "WORKSHEET_NOT_FOUND"
    assert caught.value.rule_id == "pick"
    assert caught.value.message == (
        "no worksheet matches name '2025'; worksheets: 'Summary', '2024' (hidden), "
        "'Sales East', 'Sales West'"
    )
    assert [e.outcome for e in caught.value.execution_log] == [3]


def test_select_hidden_sheet_refused_when_skipping_hidden() -> None:
    data = workbook_bytes(_three_sheets)
    with pytest.raises(EngineError) as caught:
        convert_rules(
            data,
            {"id": "s", "selectWorksheet": {"name": "2024"}},
            readOptions={"hiddenContent": "SKIP"},
        )
    assert caught.value.code == "WORKSHEET_NOT_FOUND"
    assert "(hidden sheets skipped)" in caught.value.message


# -- VALIDATE_COLUMNS


def test_validate_columns_passes(table: bytes) -> None:
    output, result = run(
        table,
        document={
            "rules": [
                {
                    "id": "v",
                    "validateColumns": {
                        "numOfColumns": 4,
                        "requiredHeaders": ["Name", "Amount"],
                    },
                }
            ]
        },
    )
    assert result.execution_log[0].outcome == 1
    assert result.execution_log[0].message == "4 columns, all required headers present"


def test_validate_columns_fails_with_expected_and_found(table: bytes) -> None:
    with pytest.raises(EngineError) as caught:
        convert_rules(
            table,
            {
                "id": "v",
                "validateColumns": {
                    "numOfColumns": 5,
                    "requiredHeaders": ["Name", "Total"],
                },
            },
        )
    assert caught.value.code == "VALIDATION_FAILED"
    assert caught.value.message == (
        "rule v: expected 5 columns, found 4; missing required headers: 'Total'"
    )


def test_validate_columns_warns_and_continues(table: bytes) -> None:
    output, result = run(
        table,
        document={
            "rules": [
                {"id": "v", "validateColumns": {"numOfColumns": 3, "onFailure": "WARN"}}
            ]
        },
    )
    assert result.warnings == ["rule v: expected 3 columns, found 4"]
    assert result.execution_log[0].outcome == 2
    assert output.startswith(b"Name,City")


# -- UNMERGE_AND_FILL


def _merged(sheet: Worksheet) -> None:
    for row in [
        ["Region", "Q1", None, "Total"],
        ["North", 1, 2, 3],
        [None, 4, 5, 9],
        ["South", 6, None, 6],
        [None, None, 7, 7],
    ]:
        sheet.append(row)
    sheet.merge_cells("B1:C1")
    sheet.merge_cells("A2:A3")


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {"columns": ["all"], "fillDirection": "NONE"},
            "Region,Q1,Q1,Total\nNorth,1,2,3\nNorth,4,5,9\nSouth,6,,6\n,,7,7\n",
        ),
        (
            {"columns": ["A"]},
            "Region,Q1,,Total\nNorth,1,2,3\nNorth,4,5,9\nSouth,6,,6\nSouth,,7,7\n",
        ),
        (
            {"columns": ["A", "C"], "fillDirection": "UP"},
            "Region,Q1,Q1,Total\nNorth,1,2,3\nNorth,4,5,9\nSouth,6,7,6\n,,7,7\n",
        ),
    ],
)
def test_unmerge_and_fill(params: dict[str, Any], expected: str) -> None:
    data = workbook_bytes(lambda book: _merged(book.active))
    assert convert_rules(data, {"id": "u", "unmergeAndFill": params}) == expected


# -- DELETE_ROWS


@pytest.mark.parametrize(
    ("params", "kept"),
    [
        ({"condition": "EMPTY"}, ["Ann", "Bob", "Cid", "Dan"]),
        (
            {"condition": "EQUALS", "column": "City", "value": "oslo"},
            ["Bob", "", "Dan"],
        ),
        (
            {
                "condition": "EQUALS",
                "column": "B",
                "value": "oslo",
                "caseSensitive": True,
            },
            ["Ann", "Bob", "", "Dan"],
        ),
        ({"condition": "CONTAINS", "value": "RO"}, ["Ann", "", "Cid", "Dan"]),
        (
            {"condition": "STARTS_WITH", "column": "Name", "value": "c"},
            ["Ann", "Bob", "", "Dan"],
        ),
        (
            {"condition": "REGEX", "column": "Amount", "value": r"^\d+\.\d+$"},
            ["Ann", "", "Cid", "Dan"],
        ),
        ({"rows": ["2", "4-5"]}, ["Bob", "Dan"]),
    ],
)
def test_delete_rows(table: bytes, params: dict[str, Any], kept: list[str]) -> None:
    output = convert_rules(table, {"id": "d", "deleteRows": params})
    names = [
        line.split(",")[0]
        for line in output.replace('"Line\nbreak"', "x").splitlines()[1:]
    ]
    assert names == kept


def test_row_numbers_stay_attached_after_earlier_deletes(table: bytes) -> None:
    output = convert_rules(
        table,
        {"id": "empty", "deleteRows": {"condition": "EMPTY"}},
        {"id": "by-number", "deleteRows": {"rows": ["5"]}},
    )
    assert [line.split(",")[0] for line in output.splitlines()] == [
        "Name",
        "Ann",
        "Bob",
        "Dan",
    ]


def test_delete_rows_unknown_column_fails(table: bytes) -> None:
    with pytest.raises(EngineError) as caught:
        convert_rules(
            table,
            {
                "id": "d",
                "deleteRows": {
                    "condition": "EQUALS",
                    "column": "Country",
                    "value": "x",
                },
            },
        )
    assert caught.value.message == (
        "rule d: column 'Country' does not exist (columns: A (Name), B (City), "
        "C (Notes), D (Amount))"
    )


# -- DELETE_COLUMNS


def test_delete_columns_by_letter_and_header_keeps_original_letters(
    table: bytes,
) -> None:
    output, result = run(
        table,
        document={
            "rules": [
                {"id": "d1", "deleteColumns": {"columns": ["B"]}},
                {"id": "d2", "deleteColumns": {"columns": ["Notes"]}},
                # "D" is still Amount's letter although it is now the second column.
                {"id": "d3", "deleteColumns": {"columns": ["D"]}},
            ]
        },
    )
    # A one-field row that is empty is written "" (an empty line is no row).
    assert output == b'Name\nAnn\nBob\n""\nCid\nDan\n'
    assert [e.message for e in result.execution_log] == [
        "deleted 1 columns: B",
        "deleted 1 columns: C",
        "deleted 1 columns: D",
    ]


def test_delete_empty_columns() -> None:
    data = sheet_bytes([["a", None, "c", None], [1, None, 3, None]])
    assert convert_rules(data, {"id": "d", "deleteColumns": {"empty": True}}) == (
        "a,c\n1,3\n"
    )


def test_leading_empty_columns_are_kept_until_deleted() -> None:
    def build(book: Workbook) -> None:
        book.active["C2"] = "x"
        book.active["D3"] = 1

    data = workbook_bytes(build)
    assert text(data) == ",,,\n,,x,\n,,,1\n"
    assert convert_rules(data, {"id": "d", "deleteColumns": {"empty": True}}) == (
        ",\nx,\n,1\n"
    )


# -- REPLACE_CHARACTERS


def test_replace_literal_line_breaks(table: bytes) -> None:
    output = convert_rules(
        table,
        {
            "id": "r",
            "replaceCharacters": {"find": "\n", "replace": " ", "columns": ["Notes"]},
        },
    )
    assert "Cid,oslo,Line break,30\n" in output


def test_replace_regex_with_groups(table: bytes) -> None:
    output = convert_rules(
        table,
        {
            "id": "r",
            "replaceCharacters": {
                "find": r"^(\w)(\w+)$",
                "replace": r"\2\1",
                "regex": True,
                "columns": ["A"],
            },
        },
    )
    assert output.splitlines()[1:3] == ["nnA,Oslo,first,10", "obB,Rome,,20.5"]


def test_replace_non_breaking_space_everywhere() -> None:
    data = sheet_bytes([["h"], ["a\u00a0b"], [5]])
    output = convert_rules(
        data, {"id": "r", "replaceCharacters": {"find": "\u00a0", "replace": " "}}
    )
    assert output == "h\na b\n5\n"


# -- COMBINE_WORKSHEETS


def _regions(book: Workbook) -> None:
    book.active.title = "All"
    book.active.append(["Region", "Sales"])
    book.active.append(["HQ", 1])
    for name, rows in [
        ("Sales North", [["N1", 2], [None, None], ["N2", 3]]),
        ("Sales South", [["S1", 4]]),
        ("Notes", [["ignore", 0]]),
    ]:
        sheet = book.create_sheet(name)
        sheet.append(["Region", "Sales"])
        for row in rows:
            sheet.append(row)


def test_combine_worksheets_with_preprocessing() -> None:
    data = workbook_bytes(_regions)
    output, result = run(
        data,
        document={
            "rules": [
                {
                    "id": "stack",
                    "combineWorksheets": {
                        "source": {"worksheetPattern": "Sales *"},
                        "target": {"worksheet": "All"},
                        "preprocessing": ["no-empty"],
                    },
                },
                {"id": "no-empty", "deleteRows": {"condition": "EMPTY"}},
            ]
        },
    )
    assert output == b"Region,Sales\nHQ,1\nN1,2\nN2,3\nS1,4\n"
    assert result.execution_log[1].message == (
        "runs on each sheet as preprocessing of rule stack"
    )


def test_combine_rows_keep_their_sheet_numbers() -> None:
    data = workbook_bytes(_regions)
    output = convert_rules(
        data,
        {
            "id": "stack",
            "combineWorksheets": {
                "source": {"worksheetRegex": "^Sales"},
                "target": {"worksheet": "All"},
            },
        },
        {"id": "drop", "deleteRows": {"rows": ["3"]}},
    )
    # Row 3 is HQ's missing neighbour in All, the blank row in North.
    assert output == "Region,Sales\nHQ,1\nN1,2\nN2,3\nS1,4\n"


# -- EVALUATE_FORMULAS


def _formulas(book: Workbook) -> None:
    sheet = book.active
    sheet.append(["a", "b", "sum"])
    sheet.append([2, 3, "=A2+B2"])
    sheet.append([4, 5, "=A3*B3"])


def test_missing_formula_values_fail_by_default() -> None:
    data = workbook_bytes(_formulas)
    with pytest.raises(EngineError) as caught:
        text(data)
    assert caught.value.code == "MISSING_FORMULA_VALUES"
    assert caught.value.message == (
        "sheet 'Sheet': 2 formula cells have no cached value (C2, C3); add an "
        "EVALUATE_FORMULAS rule to compute them, or set "
        "readOptions.missingFormulaValues to WARN to leave them empty"
    )


def test_missing_formula_values_warn_leaves_cells_empty() -> None:
    data = workbook_bytes(_formulas)
    output, result = run(
        data, document={"readOptions": {"missingFormulaValues": "WARN"}}
    )
    assert output == b"a,b,sum\n2,3,\n4,5,\n"
    assert result.warnings == [
        "sheet 'Sheet': formula cells without a value left empty: C2, C3"
    ]


def test_missing_formula_values_only_count_surviving_cells() -> None:
    data = workbook_bytes(_formulas)
    output = convert_rules(data, {"id": "d", "deleteColumns": {"columns": ["sum"]}})
    assert output == "a,b\n2,3\n4,5\n"


def test_evaluate_formulas_computes_missing_values() -> None:
    data = workbook_bytes(_formulas)
    output, result = run(
        data, document={"rules": [{"id": "f", "evaluateFormulas": {}}]}
    )
    assert output == b"a,b,sum\n2,3,5\n4,5,20\n"
    assert result.execution_log[0].message == "computed 2 formulas"
