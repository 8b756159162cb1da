"""Configuration validation: problems name the rule id and the JSON field path."""

from __future__ import annotations

import io
from typing import Any

import pytest

from mutate.transformer.engine import EngineError, convert, validate_configuration
from mutate.transformer.engine._validation import MAX_RULES

from .conftest import configuration


def problems(document: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (p.rule_id, p.field, p.message)
        for p in validate_configuration(configuration(document))
    ]


def test_valid_configuration_has_no_problems() -> None:
    assert (
        problems(
            {
                "conversionType": "XLSX_TO_CSV",
                "rules": [
                    {
                        "id": "s",
                        "type": "SELECT_WORKSHEET",
                        "selectWorksheet": {"index": 0},
                    },
                    {"id": "d", "deleteRows": {"rows": ["1-3", "7"]}},
                    {
                        "id": "r",
                        "replaceCharacters": {
                            "find": "(a)",
                            "replace": r"\1",
                            "regex": True,
                        },
                    },
                ],
            }
        )
        == []
    )


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            {"id": "x"},
            ("x", "rules[0]", "the rule has no parameter block (e.g. deleteRows)"),
        ),
        (
            {"id": "d", "deleteRows": {"condition": "CONTAINS"}},
            ("d", "rules[0].deleteRows.value", "CONTAINS needs a value"),
        ),
        (
            {"id": "d", "deleteRows": {"condition": "REGEX", "value": "("}},
            (
                "d",
                "rules[0].deleteRows.value",
                "invalid regular expression: missing ), unterminated subpattern at "
                "position 0",
            ),
        ),
        (
            {"id": "d", "deleteRows": {"rows": ["3-1"]}},
            (
                "d",
                "rules[0].deleteRows.rows[0]",
                "'3-1' is not a valid 1-based row range",
            ),
        ),
        (
            {"id": "d", "deleteRows": {}},
            (
                "d",
                "rules[0].deleteRows.condition",
                "give a condition (CONTAINS, EQUALS, STARTS_WITH, REGEX, EMPTY) "
                "or rows",
            ),
        ),
        (
            {"id": "s", "selectWorksheet": {}},
            (
                "s",
                "rules[0].selectWorksheet",
                "choose the sheet by name, index, pattern or regex",
            ),
        ),
        (
            {"id": "s", "selectWorksheet": {"index": -1}},
            ("s", "rules[0].selectWorksheet.index", "must be 0 or more"),
        ),
        (
            {"id": "v", "validateColumns": {}},
            (
                "v",
                "rules[0].validateColumns",
                "give numOfColumns and/or requiredHeaders",
            ),
        ),
        (
            {"id": "u", "unmergeAndFill": {"columns": ["A1"]}},
            (
                "u",
                "rules[0].unmergeAndFill.columns[0]",
                "'A1' is not a column letter or \"all\"",
            ),
        ),
        (
            {"id": "c", "deleteColumns": {}},
            (
                "c",
                "rules[0].deleteColumns.columns",
                "list columns (letters or header names) or set empty",
            ),
        ),
        (
            {"id": "r", "replaceCharacters": {"find": ""}},
            ("r", "rules[0].replaceCharacters.find", "must not be empty"),
        ),
        (
            {
                "id": "r",
                "replaceCharacters": {"find": "a", "replace": r"\2", "regex": True},
            },
            (
                "r",
                "rules[0].replaceCharacters.replace",
                "invalid replacement: invalid group reference 2 at position 1",
            ),
        ),
        (
            {"id": "m", "type": "DELETE_ROWS", "deleteColumns": {"empty": True}},
            (
                "m",
                "rules[0].type",
                "type DELETE_ROWS does not match the deleteColumns parameters",
            ),
        ),
        (
            {"id": "k", "combineWorksheets": {"target": {"worksheet": "All"}}},
            (
                "k",
                "rules[0].combineWorksheets.source",
                "give exactly one of worksheetPattern and worksheetRegex",
            ),
        ),
    ],
)
def test_rule_problems(rule: dict[str, Any], expected: tuple[str, str, str]) -> None:
    assert problems({"rules": [rule]}) == [expected]


def test_duplicate_and_missing_ids() -> None:
    assert problems(
        {
            "rules": [
                {"id": "a", "deleteRows": {"condition": "EMPTY"}},
                {"id": "a", "deleteRows": {"condition": "EMPTY"}},
                {"deleteRows": {"condition": "EMPTY"}},
            ]
        }
    ) == [
        ("a", "rules[1].id", "id 'a' is already used by rules[0]"),
        ("", "rules[2].id", "every rule needs an id"),
    ]


def _rules(count: int) -> list[dict[str, Any]]:
    return [{"id": f"r{i}", "deleteRows": {"condition": "EMPTY"}} for i in range(count)]


def test_rules_up_to_the_limit_are_valid() -> None:
    assert problems({"conversionType": "CSV_TO_CSV", "rules": _rules(MAX_RULES)}) == []


def test_more_rules_than_the_limit_is_one_problem() -> None:
    # Duplicate ids and an undefined enum as well: past the limit nothing else
    # is walked, so the answer stays one line whatever the list holds.
    rules = [*_rules(MAX_RULES), {"id": "r0", "deleteRows": {"condition": 99}}]
    assert problems({"rules": rules}) == [
        (
            "",
            "rules",
            f"a configuration may hold at most {MAX_RULES} rules; "
            f"this one has {MAX_RULES + 1}",
        )
    ]


def test_preprocessing_references() -> None:
    assert problems(
        {
            "rules": [
                {"id": "s", "selectWorksheet": {"name": "x"}},
                {
                    "id": "c",
                    "combineWorksheets": {
                        "source": {"worksheetPattern": "*"},
                        "target": {"worksheet": "All"},
                        "preprocessing": ["nope", "c", "s"],
                    },
                },
            ]
        }
    ) == [
        ("c", "rules[1].combineWorksheets.preprocessing[0]", "no rule has id 'nope'"),
        (
            "c",
            "rules[1].combineWorksheets.preprocessing[1]",
            "a rule cannot preprocess for itself",
        ),
        (
            "c",
            "rules[1].combineWorksheets.preprocessing[2]",
            "rule 's' (selectWorksheet) cannot run per sheet",
        ),
    ]


def test_workbook_rules_refused_for_text_inputs() -> None:
    assert problems(
        {
            "conversionType": "CSV_TO_CSV",
            "rules": [
                {"id": "u", "unmergeAndFill": {"columns": ["A"]}},
                {"id": "f", "evaluateFormulas": {}},
            ],
        }
    ) == [
        (
            "u",
            "rules[0].unmergeAndFill",
            "UNMERGE_AND_FILL has nothing to act on for CSV_TO_CSV input",
        ),
        (
            "f",
            "rules[1].evaluateFormulas",
            "EVALUATE_FORMULAS has nothing to act on for CSV_TO_CSV input",
        ),
    ]


def test_output_and_read_options() -> None:
    assert problems(
        {
            "conversionType": "XLSX_TO_CSV",
            "readOptions": {"headerRow": -1, "csvEncoding": "klingon"},
            "outputFormat": {
                "type": "JSON",
                "delimiter": "ab",
                "encoding": "nope",
                "lineTerminator": "\t",
            },
            "webhookUrl": "ftp://example.invalid/x",
        }
    ) == [
        ("", "readOptions.headerRow", "must be 0 (no header) or a row number"),
        ("", "readOptions.csvEncoding", "unknown encoding 'klingon'"),
        (
            "",
            "outputFormat.delimiter",
            "must be one character other than a quote or a line break",
        ),
        ("", "outputFormat.encoding", "unknown encoding 'nope'"),
        ("", "outputFormat.lineTerminator", 'must be "\\n", "\\r\\n" or "\\r"'),
        ("", "outputFormat.type", "JSON output contradicts conversionType XLSX_TO_CSV"),
        ("", "webhookUrl", "must be an http or https URL"),
    ]


def test_convert_refuses_invalid_configuration_before_reading() -> None:
    with pytest.raises(EngineError) as caught:
        convert(
            b"not even a file",
            "x.xlsx",
            configuration({"rules": [{"id": "d", "deleteRows": {}}]}),
            io.BytesIO(),
        )
    assert caught.value.code == "INVALID_CONFIGURATION"
    assert caught.value.rule_id == "d"
    assert caught.value.message.startswith("rules[0].deleteRows.condition:")


_RULE_TYPES = (
    "SELECT_WORKSHEET, VALIDATE_COLUMNS, UNMERGE_AND_FILL, DELETE_ROWS, "
    "DELETE_COLUMNS, COMBINE_WORKSHEETS, EVALUATE_FORMULAS, REPLACE_CHARACTERS"
)
_CONVERSIONS = "XLSX_TO_CSV, XLSX_TO_JSON, CSV_TO_CSV, CSV_TO_JSON, JSON_TO_CSV"


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            {
                "conversionType": "CSV_TO_CSV",
                "rules": [{"id": "b", "deleteRows": {"condition": 99}}],
            },
            (
                "b",
                "rules[0].deleteRows.condition",
                "99 is not one of CONTAINS, EQUALS, STARTS_WITH, REGEX, EMPTY",
            ),
        ),
        (
            {
                "conversionType": "CSV_TO_CSV",
                "rules": [
                    {"id": "b", "type": 99, "deleteRows": {"condition": "EMPTY"}}
                ],
            },
            ("b", "rules[0].type", f"99 is not one of {_RULE_TYPES}"),
        ),
        (
            {
                "conversionType": "CSV_TO_CSV",
                "rules": [{"id": "b", "deleteRows": {"condition": 99, "value": "x"}}],
            },
            (
                "b",
                "rules[0].deleteRows.condition",
                "99 is not one of CONTAINS, EQUALS, STARTS_WITH, REGEX, EMPTY",
            ),
        ),
        (
            {"conversionType": 99},
            ("", "conversionType", f"99 is not one of {_CONVERSIONS}"),
        ),
        (
            {"conversionType": -1},
            ("", "conversionType", f"-1 is not one of {_CONVERSIONS}"),
        ),
        (
            {"conversionType": "CSV_TO_CSV", "outputFormat": {"type": 99}},
            ("", "outputFormat.type", "99 is not one of CSV, JSON, NDJSON"),
        ),
        (
            {"conversionType": "CSV_TO_CSV", "outputFormat": {"quoting": 42}},
            (
                "",
                "outputFormat.quoting",
                "42 is not one of MINIMAL, ALL, NON_NUMERIC, NONE",
            ),
        ),
        (
            {"conversionType": "XLSX_TO_CSV", "readOptions": {"values": 7}},
            ("", "readOptions.values", "7 is not one of RAW, DISPLAYED"),
        ),
        (
            {
                "conversionType": "XLSX_TO_CSV",
                "rules": [
                    {
                        "id": "u",
                        "unmergeAndFill": {"columns": ["A"], "fillDirection": 9},
                    }
                ],
            },
            (
                "u",
                "rules[0].unmergeAndFill.fillDirection",
                "9 is not one of DOWN, UP, NONE",
            ),
        ),
        (
            {
                "conversionType": "XLSX_TO_CSV",
                "rules": [
                    {"id": "s", "selectWorksheet": {"index": 0}},
                    {
                        "id": "v",
                        "validateColumns": {"numOfColumns": 2, "onFailure": 9},
                    },
                ],
            },
            ("v", "rules[1].validateColumns.onFailure", "9 is not one of FAIL, WARN"),
        ),
    ],
)
def test_undefined_enum_numbers_are_refused(
    document: dict[str, Any], expected: tuple[str, str, str]
) -> None:
    # proto3 enums are open: JSON numbers parse whether or not a value has them.
    assert problems(document) == [expected]


def test_every_undefined_enum_is_reported() -> None:
    found = problems(
        {
            "conversionType": 9,
            "readOptions": {"missingFormulaValues": 5, "hiddenContent": 4},
            "outputFormat": {"type": 7},
            "rules": [{"id": "c", "combineWorksheets": {"method": 3}}],
        }
    )
    assert sorted(field for _, field, _ in found) == [
        "conversionType",
        "outputFormat.type",
        "readOptions.hiddenContent",
        "readOptions.missingFormulaValues",
        "rules[0].combineWorksheets.method",
    ]


@pytest.mark.parametrize(
    "document",
    [
        {"rules": [{"id": "b", "deleteRows": {"condition": 99, "value": "x"}}]},
        {"rules": [{"id": "b", "type": 99, "deleteRows": {"condition": "EMPTY"}}]},
        {"conversionType": 99},
        {"outputFormat": {"type": 99}},
    ],
)
def test_convert_refuses_undefined_enums(document: dict[str, Any]) -> None:
    # A job's snapshot may predate validation: the engine must not crash on it.
    with pytest.raises(EngineError) as caught:
        convert(b"a,b\n1,2\n", "x.csv", configuration(document), io.BytesIO())
    assert caught.value.code == "INVALID_CONFIGURATION"
    assert " is not one of " in caught.value.message
