"""Every file in examples/configurations/ parses (unknown fields refused),
validates, and converts the corpus file it was written for."""

from __future__ import annotations

import io
import json

import pytest
from google.protobuf import json_format

from mutate.transformer.engine import (
    ConversionResult,
    convert,
    validate_configuration,
)
from mutate.v1 import configuration_pb2 as cfg

from .conftest import REPO_ROOT, corpus_dir

EXAMPLES = REPO_ROOT / "examples" / "configurations"
# Which corpus file each example is written for, and what it must produce.
TARGETS = {
    "equipment-report-to-json.json": ("csvkit_ne_1033_data.xlsx", 259, 11),
    "merged-schedule-to-csv.json": ("calamine_merged_range.xlsx", 2, 7),
    "kansas-csv-cleanup.json": ("csvkit_ks_1033_data.csv", 1557, 12),
}
# The README Quickstart `cat`s this one: the two-row header merged into one
# line and the C:D merges into one column, for Excel (BOM, CRLF).
MERGED_SCHEDULE_CSV = (
    b"\xef\xbb\xbfA1,B1,C1,E1,F1,G1,H1\r\n"
    b"A3,B3,C3,E3,F3,G3,H3\r\n"
    b"A4,B4,C4,E4,F4,G4,H4\r\n"
)


def _run_example(name: str) -> tuple[cfg.Configuration, ConversionResult, bytes]:
    """The example parsed (unknown fields refused) and run on its corpus
    file: the configuration, the result and the output."""
    configuration = cfg.Configuration()
    json_format.Parse(
        (EXAMPLES / name).read_text(encoding="utf-8"),
        configuration,
        ignore_unknown_fields=False,
    )
    file_name = TARGETS[name][0]
    data = (corpus_dir() / "files" / file_name).read_bytes()
    output = io.BytesIO()
    result = convert(data, file_name, configuration, output)
    return configuration, result, output.getvalue()


def test_every_example_has_a_target() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.json")) == sorted(TARGETS)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_example_configuration_runs(name: str) -> None:
    configuration, result, output = _run_example(name)
    assert list(validate_configuration(configuration)) == []
    _, rows, columns = TARGETS[name]
    assert (result.rows, result.columns) == (rows, columns)
    assert [e.outcome for e in result.execution_log] == [1] * len(configuration.rules)
    if result.file_extension == ".json":
        records = json.loads(output)
        assert len(records) == rows and all(len(r) == columns for r in records)


def test_kansas_cleanup_drops_the_two_cost_columns() -> None:
    """Its description says it drops the cost columns: those, not others."""
    _, _, output = _run_example("kansas-csv-cleanup.json")
    header = output.decode("utf-8-sig").splitlines()[0].split(";")
    assert "acquisition_cost" not in header and "total_cost" not in header
    assert "ship_date" in header


def test_merged_schedule_does_what_it_says() -> None:
    """Each rule of the Quickstart's example does the work its description
    claims, and the CSV is the clean 7-column table."""
    _, result, output = _run_example("merged-schedule-to-csv.json")
    assert output == MERGED_SCHEDULE_CSV
    assert [(e.rule_id, e.message) for e in result.execution_log] == [
        ("first-sheet", "selected worksheet 'Sheet1'"),
        ("unmerge", "unmerged 9 ranges, filled 0 blank cells"),
        ("drop-header-copy", "deleted 1 rows"),
        ("drop-merge-copy", "deleted 1 columns: D"),
    ]
    assert list(result.warnings) == []
