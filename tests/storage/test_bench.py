"""The storage benchmark runs end to end (tiny sizes, so it stays quick)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "storage_bench.py"


@pytest.mark.slow
def test_storage_bench_tiny_run_prints_figures() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--sizes", "1000,20000", "--count", "2"],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["size", "rounds", "direct"]
    rows = {line.split()[0]: line.split() for line in lines[1:3]}
    assert set(rows) == {"1000", "20000"}
    assert all(row[-1].endswith("%") for row in rows.values())
    assert "PASS" in lines[-1]
