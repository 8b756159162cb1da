"""A tiny run of benchmarks/queue_bench.py, so the benchmark keeps working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mutate.devstack import stack as stk

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "queue_bench.py"


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", [[], ["--input-by-key"]], ids=["inline", "by-key"])
def test_queue_bench_tiny_run_reports_throughput(mode: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--jobs", "12", "--workers", "1,2", *mode],
        env=stk.clean_environment(),
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-4000:]
    rows = [line.split() for line in result.stdout.splitlines()]
    figures = [row for row in rows if row and row[0] in ("1", "2") and len(row) > 3]
    assert [row[:2] for row in figures] == [["1", "12"], ["2", "12"]]
    for row in figures:
        assert float(row[2]) > 0  # jobs/s
        assert row[3].endswith("ms")
