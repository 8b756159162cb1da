"""The benchmark runs at a tiny size and prints its figures (the full size is
`make bench`, kept out of the test run)."""

from __future__ import annotations

import subprocess
import sys

from .engine.conftest import REPO_ROOT


def test_benchmark_prints_figures_at_tiny_size() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "engine_bench.py"),
            "--rows",
            "300",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for run in ("floor: calamine + csv", "engine, no rules", "engine, five rules"):
        assert any(line.startswith(run) for line in lines), run
    no_rules = next(line for line in lines if line.startswith("engine, no rules"))
    assert no_rules.rstrip().endswith("exact")
    five = next(line for line in lines if line.startswith("engine, five rules"))
    assert five.rstrip().endswith("ok")
    assert "x floor" in result.stdout and "RSS MB" in result.stdout
