"""The public surface: exports, Limits from the environment, preview."""

from __future__ import annotations

import pytest

import mutate.transformer.engine as engine
from mutate.transformer.engine import EngineError, Limits, preview
from mutate.v1 import transformer_pb2

from .conftest import configuration, sheet_bytes


def test_public_names() -> None:
    assert sorted(engine.__all__) == [
        "ConversionResult",
        "EngineError",
        "Limits",
        "convert",
        "preview",
        "validate_configuration",
    ]
    for name in engine.__all__:
        assert getattr(engine, name).__module__.startswith("mutate.transformer.engine")


def test_limits_from_env() -> None:
    limits = Limits.from_env(
        {
            "MUTATE_LIMIT_MAX_CELLS": "1000",
            "MUTATE_LIMIT_MAX_COMPRESSION_RATIO": "50.5",
            "MUTATE_LIMIT_MAX_RUN_SECONDS": "",
            "OTHER": "x",
        }
    )
    assert limits.max_cells == 1000
    assert limits.max_compression_ratio == 50.5
    assert limits.max_run_seconds == Limits().max_run_seconds


@pytest.mark.parametrize("value", ["many", "0", "-5"])
def test_limits_from_env_refuses_bad_values(value: str) -> None:
    with pytest.raises(EngineError) as caught:
        Limits.from_env({"MUTATE_LIMIT_MAX_CELLS": value})
    assert caught.value.code == "INVALID_CONFIGURATION"


def test_preview_before_and_after() -> None:
    data = sheet_bytes([["id", "name"], [1, "a"], [None, None], [3, "c"], [4, "d"]])
    response = preview(
        data,
        "b.xlsx",
        configuration({"rules": [{"id": "e", "deleteRows": {"condition": "EMPTY"}}]}),
        max_rows=2,
    )
    assert isinstance(response, transformer_pb2.PreviewResponse)
    assert list(response.before.header) == ["id", "name"]
    assert [(r.row_number, list(r.cells)) for r in response.before.rows] == [
        (2, ["1", "a"]),
        (3, ["", ""]),
    ]
    assert response.before.total_rows == 4
    assert [(r.row_number, list(r.cells)) for r in response.after.rows] == [
        (2, ["1", "a"]),
        (4, ["3", "c"]),
    ]
    assert response.after.total_rows == 3
    assert response.after.worksheet == "Data"
    assert response.execution_log[0].message == "deleted 1 rows"
    assert not response.HasField("error")


def test_preview_fills_error_instead_of_raising() -> None:
    data = sheet_bytes([["id"], [1]])
    response = preview(
        data,
        "b.xlsx",
        configuration({"rules": [{"id": "v", "validateColumns": {"numOfColumns": 3}}]}),
    )
    assert response.error.code == "VALIDATION_FAILED"
    assert response.error.rule_id == "v"
    assert list(response.before.header) == ["id"]
    assert response.execution_log[0].outcome == 3
