"""Queue throughput of the transformer worker, on real NATS, S3 and storage.

Self-contained: starts NATS JetStream, SeaweedFS S3 and the storage service
through `mutate.devstack` on 127.0.0.1, stores one small workbook under N
input keys, then for each worker count publishes N job requests at once and
waits for N `completed` events. Prints jobs/s and, from the workers' own
per-job log lines, the time each job spent outside the engine (NATS, storage
and events: the delivery's wall time minus its time in the engine pool) at
p50 and p90, with the pool's own overhead (IPC and waiting for a free
process) apart.

    .venv/bin/python benchmarks/queue_bench.py        # 500 jobs, 1 and 2 workers
    .venv/bin/python benchmarks/queue_bench.py --jobs 50 --workers 1

Target (issue #5): under 20 ms per job at p50 outside the engine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats

from mutate.common import keys, messaging, topology
from mutate.common.settings import load
from mutate.common.storage_client import StorageClient
from mutate.devstack import _proc
from mutate.devstack import stack as stk
from mutate.devstack.processes import ServiceProcess
from mutate.devstack.servers import NatsServer, S3Server
from mutate.v1 import configuration_pb2, events_pb2

ORG = "org_bench"
BUCKET = "bench"

TOPOLOGY_ENV = {"MUTATE_JOB_ACK_WAIT_MS": "30000"}


@dataclass(frozen=True)
class Result:
    workers: int
    jobs: int
    seconds: float
    outside_p50: float
    outside_p90: float
    pool_p50: float
    engine_p50: float
    input_p50: float
    output_p50: float
    events_p50: float
    total_p50: float

    @property
    def jobs_per_second(self) -> float:
        return self.jobs / self.seconds


def small_workbook(rows: int = 20, columns: int = 6) -> bytes:
    """A small XLSX: a header row and `rows` rows of text and numbers."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append([f"column {c}" for c in range(columns)])
    for r in range(rows):
        sheet.append([f"r{r}c{c}" if c % 2 else r * 10 + c for c in range(columns)])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def configuration() -> configuration_pb2.Configuration:
    return configuration_pb2.Configuration(
        id="cfg_bench",
        version=1,
        conversion_type=configuration_pb2.XLSX_TO_CSV,
    )


@contextlib.contextmanager
def platform(data_dir: Path) -> Iterator[stk.StackInfo]:
    """NATS, S3 and the storage service, stopped on the way out."""
    with (
        NatsServer(data_dir / "nats") as nats_server,
        S3Server(data_dir / "s3") as s3_server,
    ):
        s3_server.ensure_bucket(BUCKET)
        stack = stk.StackInfo(
            nats_url=nats_server.url,
            database_url="",
            s3=stk.S3Settings(
                endpoint=s3_server.endpoint,
                access_key=s3_server.access_key,
                secret_key=s3_server.secret_key,
                bucket=BUCKET,
                region=s3_server.region,
            ),
            ports=stk.ServicePorts.free(),
        )
        storage = stk.start_service(
            stack,
            "storage",
            log_dir=data_dir / "logs",
            base_env=stk.clean_environment(),
            extra_env={"MUTATE_LOG_LEVEL": "WARNING"},
        )
        try:
            yield stack
        finally:
            storage.stop()


def start_workers(
    stack: stk.StackInfo, count: int, log_dir: Path, env: dict[str, str]
) -> list[ServiceProcess]:
    command = str(_proc.find_executable("mutate-transformer"))
    workers = []
    for index in range(count):
        port = _proc.free_port()
        worker_env = {
            **stk.clean_environment(),
            **stk.service_environment(stack, "transformer"),
            **TOPOLOGY_ENV,
            "MUTATE_GRPC_PORT": str(port),
            "MUTATE_WORKER_ID": f"bench-{index}",
            "MUTATE_LOG_FORMAT": "json",
            **env,
        }
        workers.append(
            ServiceProcess(
                f"worker-{index}",
                [command, "work"],
                env=worker_env,
                log_path=log_dir / f"worker-{count}-{index}.log",
                health_address=f"127.0.0.1:{port}",
            ).start(wait=False)
        )
    for worker in workers:
        worker.wait_healthy()
    return workers


async def reset_topology(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    for info in await js.streams_info():
        await js.delete_stream(info.config.name)
    await topology.ensure(js, load(topology.TopologySettings, TOPOLOGY_ENV))
    await nc.close()


async def store_inputs(
    stack: stk.StackInfo, job_ids: Sequence[str], workbook: bytes
) -> list[str]:
    async with StorageClient(stack.address("storage")) as storage:
        semaphore = asyncio.Semaphore(16)

        async def put(job_id: str) -> str:
            key = keys.input_key(ORG, job_id, "book.xlsx")
            async with semaphore:
                await storage.put_bytes(key, workbook)
            return key

        return list(await asyncio.gather(*(put(j) for j in job_ids)))


async def run_jobs(
    stack: stk.StackInfo,
    job_ids: Sequence[str],
    input_keys: Sequence[str],
    *,
    inline: bytes | None,
) -> float:
    """Publish every request at once; seconds until the last `completed`.

    `inline`: the input carried in each request as well, as the gateway does
    for inputs up to MUTATE_INLINE_INPUT_MAX_BYTES (the worker then skips the
    storage read); None: by key only, as for larger inputs.
    """
    nc = await nats.connect(stack.nats_url)
    js = nc.jetstream()
    done: set[str] = set()
    failed: list[str] = []
    finished = asyncio.Event()

    async def on_event(msg: Any) -> None:
        event = messaging.decode_event(msg)
        if event.type == events_pb2.JobEvent.COMPLETED:
            done.add(event.job_id)
        elif event.type in messaging.TERMINAL_EVENTS:
            failed.append(f"{event.job_id}: {event.error.message}")
        if len(done) + len(failed) >= len(job_ids):
            finished.set()

    sub = await js.subscribe(
        f"{topology.EVENTS_SUBJECT_PREFIX}.*.*.*",
        ordered_consumer=True,
        cb=on_event,
        deliver_policy=None,
    )
    requests = []
    for job_id, key in zip(job_ids, input_keys, strict=True):
        request = events_pb2.JobRequest(
            job_id=job_id,
            organization_id=ORG,
            attempt=1,
            configuration=configuration(),
            input_key=key,
            input_file_name="book.xlsx",
            output_key=keys.output_key(ORG, job_id, "book.csv"),
        )
        if inline is not None:
            request.input_data = inline
        requests.append(request)
    started = time.perf_counter()
    await asyncio.gather(*(messaging.publish_job_request(js, r) for r in requests))
    await asyncio.wait_for(finished.wait(), timeout=600)
    elapsed = time.perf_counter() - started
    await sub.unsubscribe()
    await nc.close()
    if failed:
        raise RuntimeError(f"{len(failed)} jobs did not complete: {failed[:3]}")
    return elapsed


def job_timings(log_paths: Sequence[Path]) -> list[dict[str, float]]:
    """The `job completed` lines the workers logged (JSON)."""
    found = []
    for path in log_paths:
        for line in path.read_text(errors="replace").splitlines():
            if '"job completed"' not in line:
                continue
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
    return found


def p(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench(
    stack: stk.StackInfo,
    *,
    jobs: int,
    workers: int,
    log_dir: Path,
    env: dict[str, str],
    inline: bool,
) -> Result:
    await reset_topology(stack.nats_url)
    job_ids = [f"job_{uuid.uuid4().hex[:20]}" for _ in range(jobs)]
    workbook = small_workbook()
    input_keys = await store_inputs(stack, job_ids, workbook)
    processes = start_workers(stack, workers, log_dir, env)
    try:
        seconds = await run_jobs(
            stack, job_ids, input_keys, inline=workbook if inline else None
        )
    finally:
        for process in processes:
            process.stop()
    lines = job_timings([w.log_path for w in processes])
    if len(lines) < jobs:
        raise RuntimeError(f"only {len(lines)} of {jobs} jobs logged their timings")

    def median(name: str) -> float:
        return statistics.median(float(x[name]) for x in lines)

    outside = [float(x["outside_engine_ms"]) for x in lines]
    return Result(
        workers=workers,
        jobs=jobs,
        seconds=seconds,
        outside_p50=p(outside, 0.5),
        outside_p90=p(outside, 0.9),
        pool_p50=median("pool_overhead_ms"),
        engine_p50=median("engine_ms"),
        input_p50=median("input_ms"),
        output_p50=median("output_ms"),
        events_p50=median("events_ms"),
        total_p50=median("total_ms"),
    )


def report(results: Sequence[Result]) -> str:
    header = (
        f"{'workers':>7} {'jobs':>5} {'jobs/s':>8} {'outside p50':>11} "
        f"{'p90':>7} {'input':>6} {'output':>6} {'events':>6} "
        f"{'pool':>6} {'engine':>6} {'total':>6}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r.workers:>7} {r.jobs:>5} {r.jobs_per_second:>8.1f} "
            f"{r.outside_p50:>9.1f}ms {r.outside_p90:>5.1f}ms "
            f"{r.input_p50:>6.1f} {r.output_p50:>6.1f} {r.events_p50:>6.1f} "
            f"{r.pool_p50:>6.1f} {r.engine_p50:>6.1f} {r.total_p50:>6.1f}"
        )
    lines.append(
        "(ms at p50 per job; outside = NATS + storage + events = the delivery's "
        "wall time minus its time in the engine pool; pool = IPC and waiting "
        "for a free engine process; target: outside p50 < 20 ms)"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument(
        "--workers", default="1,2", help="comma-separated worker process counts"
    )
    parser.add_argument(
        "--engine-processes", type=int, default=1, help="engine processes a worker"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="jobs in flight a worker; 0 (default) keeps the worker's own "
        "default of two per engine process",
    )
    parser.add_argument(
        "--input-by-key",
        action="store_true",
        help="requests name the stored input only (as for inputs over "
        "MUTATE_INLINE_INPUT_MAX_BYTES); by default they also carry it, as "
        "the gateway publishes a small workbook",
    )
    parser.add_argument("--keep", action="store_true", help="keep data and logs")
    args = parser.parse_args(argv)

    data_dir = Path(tempfile.mkdtemp(prefix="mutate-queue-bench-"))
    in_flight = args.concurrency or 2 * args.engine_processes
    env = {
        "MUTATE_ENGINE_PROCESSES": str(args.engine_processes),
        "MUTATE_WORKER_CONCURRENCY": str(in_flight),
        "MUTATE_WORKER_FETCH_BATCH": str(in_flight),
        # One progress event at most per job: these jobs are short.
        "MUTATE_JOB_PROGRESS_INTERVAL_MS": "1000",
    }
    results = []
    try:
        with platform(data_dir) as stack:
            for workers in (int(w) for w in args.workers.split(",")):
                result = asyncio.run(
                    bench(
                        stack,
                        jobs=args.jobs,
                        workers=workers,
                        log_dir=data_dir / "logs",
                        env=env,
                        inline=not args.input_by_key,
                    )
                )
                results.append(result)
                print(
                    f"{workers} worker(s): {result.jobs_per_second:.1f} jobs/s, "
                    f"outside the engine p50 {result.outside_p50:.1f} ms",
                    file=sys.stderr,
                )
    finally:
        if args.keep:
            print(f"data and logs kept in {data_dir}", file=sys.stderr)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    print(report(results))
    print(
        f"machine: {os.cpu_count()} CPUs; engine processes per worker: "
        f"{args.engine_processes}; jobs in flight per worker: {in_flight}; "
        f"input {'by key (storage read)' if args.input_by_key else 'in the request'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
