"""Configuration validation: problems name the rule id and the JSON field path."""

from __future__ import annotations

import io
from typing import Any

import pytest

from mutate.transformer.engine import EngineError, convert, validate_configuration

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
