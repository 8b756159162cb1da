"""The pipeline benchmark runs, tiny, and prints its figures."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mutate.devstack import stack as stk

from .support import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_pipeline_bench_tiny_run(tmp_path: Path) -> None:
    figures_path = tmp_path / "figures.json"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "pipeline_bench.py")]
        + ["--jobs", "6", "--rows", "500", "--json", str(figures_path)],
        env=stk.clean_environment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    report = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    # 0: every job's webhook arrived verified (a missed target is no error).
    assert result.returncode == 0, report
    assert re.search(r"^engine alone \(2 processes\)\s+6\s", result.stdout, re.M)
    assert re.search(r"^pipeline \(2 workers\)\s+6\s", result.stdout, re.M)
    assert re.search(
        r"of the throughput \(target >= 0\.60\): (PASS|FAIL)$", result.stdout, re.M
    )

    figures = json.loads(figures_path.read_text())
    pipeline = figures["pipeline"]
    assert pipeline["jobs"] == 6 and pipeline["failures"] == 0, figures
    assert pipeline["missing_webhooks"] == 0 and pipeline["rejected_webhooks"] == 0
    assert 0 < pipeline["p50_ms"] <= pipeline["p99_ms"], figures
    assert figures["engine"]["jobs_per_second"] > 0
    assert figures["ratio"] == pytest.approx(
        pipeline["jobs_per_second"] / figures["engine"]["jobs_per_second"]
    )
