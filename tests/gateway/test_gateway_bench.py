"""A tiny run of benchmarks/gateway_bench.py, so the benchmark keeps working.

Timing is not asserted (the machine is shared): only that every series ran
without a failed request and the figures and target lines were printed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mutate.devstack import stack as stk

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "gateway_bench.py"
SERIES = [
    ("grpc Transform direct", "1"),
    ("grpc CreateJob", "1"),
    ("rest POST /v1/jobs", "1"),
    ("grpc CreateJob", "3"),
    ("rest POST /v1/jobs", "3"),
]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_gateway_bench_tiny_run_prints_figures_and_targets(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--requests",
            "6",
            "--warmup",
            "1",
            "--concurrency",
            "3",
            "--rounds",
            "2",
            "--json",
            str(out),
        ],
        env=stk.clean_environment(),
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-4000:]
    lines = result.stdout.splitlines()
    for label, clients in SERIES:
        row = next(
            (line for line in lines if re.match(rf"{label}\s+{clients}\s", line)),
            None,
        )
        assert row is not None, f"no row for {label} x{clients}:\n{result.stdout}"
        requests, failures, rate, p50 = row[len(label) :].split()[1:5]
        assert (requests, failures) == ("6", "0")
        assert float(rate) > 0 and float(p50) > 0
    targets = [line for line in lines if line.startswith("target ")]
    assert len(targets) == 3, result.stdout
    assert all(line.endswith(("PASS", "FAIL")) for line in targets)
    assert any("gateway" in line and "CPU ms per job" in line for line in lines)

    figures = json.loads(out.read_text())
    assert figures["failures"] == 0
    assert [s["requests"] for s in figures["series"]] == [6] * 5
    assert figures["series"][1]["cpu_ms_per_job"]["gateway"] >= 0
    assert [t["limit"] for t in figures["targets"]] == [10.0, 10.0, 0.7]
