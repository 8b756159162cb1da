"""Every file in examples/configurations/ parses (unknown fields refused),
validates, and converts the corpus file it was written for."""

from __future__ import annotations

import io
import json

import pytest
from google.protobuf import json_format

from mutate.transformer.engine import convert, validate_configuration
from mutate.v1 import configuration_pb2 as cfg

from .conftest import REPO_ROOT, corpus_dir

EXAMPLES = REPO_ROOT / "examples" / "configurations"
# Which corpus file each example is written for, and what it must produce.
TARGETS = {
    "equipment-report-to-json.json": ("csvkit_ne_1033_data.xlsx", 259, 11),
    "merged-schedule-to-csv.json": ("calamine_merged_range.xlsx", 3, 8),
    "kansas-csv-cleanup.json": ("csvkit_ks_1033_data.csv", 1557, 12),
}


def test_every_example_has_a_target() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.json")) == sorted(TARGETS)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_example_configuration_runs(name: str) -> None:
    configuration = cfg.Configuration()
    json_format.Parse(
        (EXAMPLES / name).read_text(encoding="utf-8"),
        configuration,
        ignore_unknown_fields=False,
    )
    assert list(validate_configuration(configuration)) == []
    file_name, rows, columns = TARGETS[name]
    data = (corpus_dir() / "files" / file_name).read_bytes()
    output = io.BytesIO()
    result = convert(data, file_name, configuration, output)
    assert (result.rows, result.columns) == (rows, columns)
    assert [e.outcome for e in result.execution_log] == [1] * len(configuration.rules)
    if result.file_extension == ".json":
        records = json.loads(output.getvalue())
        assert len(records) == rows and all(len(r) == columns for r in records)
