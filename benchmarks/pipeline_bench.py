"""The whole pipeline against the engine alone (issue #10, Speed).

Self-contained: generates a 5,000-row workbook and a four-rule XLSX_TO_CSV
configuration (select a sheet, delete rows, delete a column, replace), then
in one run:

1. engine alone, run before and after the pipeline (the faster of the two
   is the baseline): 2 processes (multiprocessing, started and warmed up before
   the clock starts), each calling `mutate.transformer.engine.convert`
   in-process in a loop over its share of the same inputs, output to memory;
2. the pipeline: the whole platform from `mutate.devstack.harness` (NATS,
   SeaweedFS, PostgreSQL, storage, transformer `serve`, 2 transformer `work`
   processes with one engine process each, notifier, gateway; production
   settings), the configuration saved through the public API, `--jobs` jobs
   submitted as ASYNC (queued) over gRPC by `--concurrency` clients, each
   with a webhook to a receiver on 127.0.0.1 (its own process) that checks
   the signature and notes the arrival time.

It prints jobs/s for both, p50/p99 from submit to webhook for the pipeline
(and per conversion for the engine), the ratio, and PASS or FAIL against
the target: the pipeline reaches at least 60% of the engine-alone throughput.

    .venv/bin/python benchmarks/pipeline_bench.py              # 300 jobs
    .venv/bin/python benchmarks/pipeline_bench.py --jobs 6     # a quick look
    .venv/bin/python benchmarks/pipeline_bench.py --json out.json

Exit status 1 when a job failed or a webhook did not arrive; a missed target
is reported, not an error (unless --strict).

TODO: the receiver, the submitting client and all services share the same
two cores; the figures are for this whole machine, not a service alone.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import io
import json
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

logger = logging.getLogger("pipeline_bench")

TARGET_RATIO = 0.60
ENGINE_PROCESSES = 2
WORKERS = 2
ROWS = 5000
REGIONS = ("North", "South", "East", "West")

CONFIGURATION: dict[str, Any] = {
    "name": "pipeline benchmark: orders to CSV",
    "conversionType": "XLSX_TO_CSV",
    "rules": [
        {"id": "sheet", "selectWorksheet": {"name": "Orders"}},
        {
            "id": "no-north",
            "deleteRows": {"condition": "EQUALS", "column": "region", "value": "North"},
        },
        {"id": "no-notes", "deleteColumns": {"columns": ["notes"]}},
        {
            "id": "product-names",
            "replaceCharacters": {"find": "-", "replace": " ", "columns": ["product"]},
        },
    ],
    "outputFormat": {"type": "CSV"},
}


# --- inputs ---------------------------------------------------------------------


def make_workbook(path: Path, rows: int = ROWS) -> None:
    """An orders sheet of `rows` rows x 8 columns, plus a second sheet."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Orders")
    sheet.append(
        ["id", "date", "region", "product", "quantity", "price", "notes", "status"]
    )
    start = datetime.date(2024, 1, 1)
    for i in range(rows):
        sheet.append(
            [
                i + 1,
                start + datetime.timedelta(days=i % 366),
                REGIONS[i % len(REGIONS)],
                f"widget-{i % 97:03d}-x",
                (i * 7) % 50 + 1,
                round(1.5 + (i % 1000) * 0.37, 2),
                f"order {i} note" if i % 3 else "",
                "shipped" if i % 5 else "open",
            ]
        )
    workbook.create_sheet("Summary").append(["rows", rows])
    workbook.save(path)


def configuration_message() -> Any:
    from google.protobuf import json_format

    from mutate.v1 import configuration_pb2

    return json_format.Parse(
        json.dumps(CONFIGURATION), configuration_pb2.Configuration()
    )


# --- engine alone -----------------------------------------------------------------


def _engine_process(
    data: bytes, count: int, conn: multiprocessing.connection.Connection
) -> None:
    from mutate.transformer.engine import convert

    configuration = configuration_message()
    convert(data, "orders.xlsx", configuration, io.BytesIO())  # warm-up
    conn.send("ready")
    conn.recv()  # the start signal
    durations = []
    for _ in range(count):
        began = time.perf_counter()
        convert(data, "orders.xlsx", configuration, io.BytesIO())
        durations.append(time.perf_counter() - began)
    conn.send(durations)
    conn.close()


@dataclasses.dataclass
class Series:
    name: str
    jobs: int
    wall: float
    latencies: list[float]
    failures: int = 0

    @property
    def rate(self) -> float:
        return self.jobs / self.wall if self.wall > 0 else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
        return ordered[index]


def run_engine_alone(data: bytes, jobs: int) -> Series:
    context = multiprocessing.get_context("spawn")
    shares = [
        jobs // ENGINE_PROCESSES + (i < jobs % ENGINE_PROCESSES) for i in range(2)
    ]
    pipes = []
    processes = []
    for share in shares:
        parent, child = context.Pipe()
        process = context.Process(target=_engine_process, args=(data, share, child))
        process.start()
        pipes.append(parent)
        processes.append(process)
    for pipe in pipes:
        assert pipe.recv() == "ready"
    began = time.perf_counter()
    for pipe in pipes:
        pipe.send("go")
    durations: list[float] = []
    for pipe in pipes:
        durations.extend(pipe.recv())
    wall = time.perf_counter() - began
    for process in processes:
        process.join(30)
    return Series(f"engine alone ({ENGINE_PROCESSES} processes)", jobs, wall, durations)


# --- the webhook receiver (its own process) --------------------------------------


def _receiver_process(
    port: int, secret: str, conn: multiprocessing.connection.Connection
) -> None:
    from mutate.common import webhooks

    arrivals: dict[str, tuple[float, str]] = {}
    lock = threading.Lock()
    rejected = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            now = time.monotonic()
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                payload = webhooks.verify(secret, dict(self.headers), body)
            except webhooks.WebhookVerificationError:
                with lock:
                    rejected[0] += 1
                self.send_response(400)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            with lock:
                arrivals.setdefault(payload["jobId"], (now, payload["status"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    conn.send("ready")
    # "results": a snapshot of what arrived so far; "stop": the end.
    while conn.recv() == "results":
        with lock:
            conn.send((dict(arrivals), rejected[0]))
    server.shutdown()
    conn.close()


# --- the pipeline ----------------------------------------------------------------


async def _submit_all(
    address: str,
    api_key: str,
    data: bytes,
    jobs: int,
    concurrency: int,
    webhook_url: str,
) -> tuple[str, dict[str, float], int]:
    import grpc

    from mutate.v1 import job_pb2, public_api_pb2, public_api_pb2_grpc

    metadata = (("authorization", f"Bearer {api_key}"),)
    async with grpc.aio.insecure_channel(address) as channel:
        configurations = public_api_pb2_grpc.ConfigurationServiceStub(channel)
        job_stub = public_api_pb2_grpc.JobServiceStub(channel)
        saved = await configurations.CreateConfiguration(
            public_api_pb2.CreateConfigurationRequest(
                configuration=configuration_message()
            ),
            metadata=metadata,
        )
        submitted: dict[str, float] = {}
        failures = 0
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(jobs):
            queue.put_nowait(index)

        async def client() -> None:
            nonlocal failures
            while not queue.empty():
                index = queue.get_nowait()
                began = time.monotonic()
                try:
                    job = await job_stub.CreateJob(
                        public_api_pb2.CreateJobRequest(
                            configuration_id=saved.id,
                            file_content=data,
                            file_name="orders.xlsx",
                            mode=job_pb2.Job.ASYNC,
                            webhook_url=webhook_url,
                            client_reference=f"bench-{index}",
                        ),
                        metadata=metadata,
                        timeout=60,
                    )
                except grpc.aio.AioRpcError as exc:
                    failures += 1
                    logger.error("CreateJob failed: %s", exc.details())
                    continue
                submitted[job.id] = began

        await asyncio.gather(*(client() for _ in range(concurrency)))
        return saved.id, submitted, failures


def run_pipeline(
    data: bytes, jobs: int, concurrency: int, timeout: float, keep: bool
) -> tuple[Series, dict[str, Any]]:
    from mutate.devstack import _proc
    from mutate.devstack.harness import start_platform

    home = Path(tempfile.mkdtemp(prefix="mutate-bench-pipeline-"))
    platform = start_platform(
        home,
        workers=WORKERS,
        test_defaults=False,
        env={"MUTATE_SHUTDOWN_GRACE_MS": "3000", "MUTATE_LOG_LEVEL": "WARNING"},
        per_service_env={"transformer": {"MUTATE_ENGINE_PROCESSES": "1"}},
    )
    context = multiprocessing.get_context("spawn")
    receiver: multiprocessing.process.BaseProcess | None = None
    try:
        tenant = platform.create_tenant("bench")
        assert tenant.webhook_secret, "the notifier gave no signing secret"
        port = _proc.free_port()
        parent, child = context.Pipe()
        receiver = context.Process(
            target=_receiver_process, args=(port, tenant.webhook_secret, child)
        )
        receiver.start()
        assert parent.recv() == "ready"

        began = time.monotonic()
        _, submitted, failures = asyncio.run(
            _submit_all(
                platform.gateway_address,
                tenant.api_key,
                data,
                jobs,
                concurrency,
                f"http://127.0.0.1:{port}/",
            )
        )
        submit_wall = time.monotonic() - began
        deadline = time.monotonic() + timeout
        while True:
            parent.send("results")
            arrivals, rejected = parent.recv()
            if len(arrivals) >= len(submitted) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        parent.send("stop")
        latencies = [
            arrivals[job][0] - start
            for job, start in submitted.items()
            if job in arrivals
        ]
        missing = [job for job in submitted if job not in arrivals]
        not_completed = [job for job, (_, s) in arrivals.items() if s != "completed"]
        last = max((t for t, _ in arrivals.values()), default=began)
        series = Series(
            f"pipeline ({WORKERS} workers)",
            len(latencies),
            last - began,
            latencies,
            failures=failures + len(missing) + len(not_completed) + rejected,
        )
        extra = {
            "submit_seconds": submit_wall,
            "missing_webhooks": len(missing),
            "not_completed": len(not_completed),
            "rejected_webhooks": rejected,
            "create_job_failures": failures,
        }
        return series, extra
    finally:
        if receiver is not None and receiver.is_alive():
            receiver.kill()
            receiver.join(5)
        platform.stop()
        if not keep:
            shutil.rmtree(home, ignore_errors=True)


# --- report ----------------------------------------------------------------------


def report(engine: Series, pipeline: Series, extra: dict[str, Any]) -> dict[str, Any]:
    ratio = pipeline.rate / engine.rate if engine.rate else 0.0
    verdict = "PASS" if ratio >= TARGET_RATIO and pipeline.failures == 0 else "FAIL"
    print()
    header = ("jobs", "wall s", "jobs/s", "p50 ms", "p99 ms")
    widths = (5, 8, 8, 9, 9)
    print(
        f"{'series':<28}", *(f"{h:>{w}}" for h, w in zip(header, widths, strict=True))
    )
    for series, what in ((engine, "per conversion"), (pipeline, "submit→webhook")):
        print(
            f"{series.name:<28} {series.jobs:>5} {series.wall:>8.2f} "
            f"{series.rate:>8.2f} {series.percentile(0.5) * 1000:>9.1f} "
            f"{series.percentile(0.99) * 1000:>9.1f}  ({what})"
        )
    print()
    print(
        f"pipeline / engine alone: {ratio:.2f} of the throughput "
        f"(target >= {TARGET_RATIO:.2f}): {verdict}"
    )
    if pipeline.failures:
        print(f"failures: {extra}")
    return {
        "engine": {
            "jobs": engine.jobs,
            "wall_seconds": engine.wall,
            "jobs_per_second": engine.rate,
            "p50_ms": engine.percentile(0.5) * 1000,
            "p99_ms": engine.percentile(0.99) * 1000,
        },
        "pipeline": {
            "jobs": pipeline.jobs,
            "wall_seconds": pipeline.wall,
            "jobs_per_second": pipeline.rate,
            "p50_ms": pipeline.percentile(0.5) * 1000,
            "p99_ms": pipeline.percentile(0.99) * 1000,
            "failures": pipeline.failures,
            **extra,
        },
        "ratio": ratio,
        "target": TARGET_RATIO,
        "verdict": verdict,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300, help="jobs per series")
    parser.add_argument("--rows", type=int, default=ROWS, help="rows of the workbook")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="CreateJob calls in flight"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for the jobs"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the data folder")
    parser.add_argument(
        "--strict", action="store_true", help="exit 2 when the target is missed"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    scratch = Path(tempfile.mkdtemp(prefix="mutate-bench-input-"))
    try:
        source = scratch / "orders.xlsx"
        make_workbook(source, args.rows)
        data = source.read_bytes()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"workbook: {args.rows} rows x 8 columns, {len(data) / 1024:.0f} KiB; "
        f"{len(CONFIGURATION['rules'])} rules; {args.jobs} jobs per series; "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    print("engine alone, before the pipeline ...", flush=True)
    before = run_engine_alone(data, args.jobs)
    print(f"  {before.rate:.2f} jobs/s", flush=True)
    print("pipeline: starting the platform ...", flush=True)
    pipeline, extra = run_pipeline(
        data, args.jobs, args.concurrency, args.timeout, args.keep
    )
    print(f"  {pipeline.rate:.2f} jobs/s", flush=True)
    print("engine alone, after the pipeline ...", flush=True)
    after = run_engine_alone(data, args.jobs)
    print(f"  {after.rate:.2f} jobs/s", flush=True)
    # The faster of the two engine series is the baseline: load that drifts
    # in from outside then counts against the pipeline, never for it.
    engine = max(before, after, key=lambda series: series.rate)
    extra["engine_jobs_per_second_before_after"] = [before.rate, after.rate]
    figures = report(engine, pipeline, extra)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if pipeline.failures:
        return 1
    if args.strict and figures["verdict"] != "PASS":
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
