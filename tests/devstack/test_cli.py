"""`mutate-dev` commands that need no running platform."""

from __future__ import annotations

from pathlib import Path

import pytest

from mutate.devstack import cli


def test_trace_without_a_trace_file_says_how_to_get_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["trace", "--home", str(tmp_path), "job_x"])

    assert code == 1
    err = capsys.readouterr().err
    assert f"no trace file at {tmp_path / 'traces.jsonl'}" in err
    assert "mutate-dev up --trace" in err


def test_env_with_trace_adds_the_trace_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["env", "gateway", "--home", str(tmp_path)]) == 0
    plain = capsys.readouterr().out
    assert "export MUTATE_GRPC_PORT=" in plain and "MUTATE_TRACE_FILE" not in plain

    assert cli.main(["env", "gateway", "--home", str(tmp_path), "--trace"]) == 0
    traced = capsys.readouterr().out
    assert f"export MUTATE_TRACE_FILE={tmp_path / 'traces.jsonl'}" in traced


@pytest.mark.parametrize(
    ("returncode", "said"),
    [(-9, "was killed by SIGKILL"), (1, "exited with code 1"),
     (-200, "was killed by signal 200")],
)  # fmt: skip
def test_a_dead_service_is_described_for_people(returncode: int, said: str) -> None:
    assert cli.exit_description(returncode) == said
