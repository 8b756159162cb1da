"""Gateway benchmark: sync create-job over gRPC and REST against `Transform`.

Self-contained: starts NATS JetStream, SeaweedFS S3 and PostgreSQL through
`mutate.devstack` on 127.0.0.1, creates the topology, runs the migrations,
starts storage, transformer (`serve`), notifier and gateway as subprocesses
with production defaults (only the rate limit off; no test delays), creates
an organization, an API key and an XLSX_TO_CSV configuration with three
rules, and generates a ~20 KB workbook. Then, side by side in one run:

1. baseline: the transformer's `Transform` called directly over gRPC with
   the same workbook inline and an output key, one call at a time;
2. the gateway's gRPC `CreateJob` (mode SYNC, file inline), one at a time;
3. the gateway's REST `POST /v1/jobs` (JSON, base64 file, mode SYNC), one
   at a time, on a keep-alive HTTP/1.1 connection;
4. gRPC and REST again with `--concurrency` clients (default 8): jobs/s.

The series are interleaved in `--rounds` rounds so that background load
drifts over all of them alike. Besides latencies it prints the CPU time each
process of the platform spent per job (psutil), the gateway's first, and the
benchmark client's own. No idempotency keys are sent: every request is a new
job.

    .venv/bin/python benchmarks/gateway_bench.py               # 200 per series
    .venv/bin/python benchmarks/gateway_bench.py --requests 5 --warmup 2 --json out.json
    .venv/bin/python benchmarks/gateway_bench.py --rest-client httpx  # client cost

The REST series use a minimal keep-alive HTTP/1.1 client on asyncio streams
(httpx costs the client several times more CPU per request; compare with
`--rest-client httpx`). The client runs on the same machine as the whole
platform: with several clients the figures are bounded by the CPU of every
process together (see the CPU table), not by the gateway alone.

Targets (issue #6): the gateway's own overhead at p50, p50(CreateJob) minus
p50(Transform), at most 10 ms over gRPC and over REST; with 8 concurrent
clients REST at most 30% slower than gRPC (REST jobs/s >= 0.7 x gRPC jobs/s).
Exit status 1 when a request failed; a missed target is reported, not an
error.

TODO: CPU time of a process that ends during a series (a PostgreSQL backend
whose pooled connection closes) is not counted; psutil only sees the living.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import io
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import psutil
from google.protobuf import json_format

from mutate.common import keys
from mutate.devstack import stack as stk
from mutate.devstack.processes import ServiceProcess, ServiceProcessError
from mutate.devstack.servers import NatsServer, PostgresServer, S3Server, Server
from mutate.v1 import (
    configuration_pb2,
    job_pb2,
    public_api_pb2,
    public_api_pb2_grpc,
    transformer_pb2,
    transformer_pb2_grpc,
)

BUCKET = "gateway-bench"
DATABASE = "gateway_bench"
ORGANIZATION_NAME = "gateway-bench"
FILE_NAME = "bench.xlsx"
OVERHEAD_TARGET_MS = 10.0
THROUGHPUT_TARGET_RATIO = 0.7

# Production defaults except the per-organization rate limit (one
# organization sends every request here) and JSON logs as in production.
GATEWAY_ENV = {"MUTATE_RATE_LIMIT_PER_SECOND": "0"}
COMMON_ENV = {"MUTATE_LOG_FORMAT": "json"}

CONFIGURATION = {
    "name": "gateway-bench",
    "conversionType": "XLSX_TO_CSV",
    "rules": [
        {"id": "sheet", "selectWorksheet": {"name": "Data"}},
        {
            "id": "drop-cancelled",
            "deleteRows": {
                "condition": "EQUALS",
                "column": "status",
                "value": "cancelled",
            },
        },
        {
            "id": "tidy",
            "replaceCharacters": {"find": "item-", "replace": "#", "columns": ["name"]},
        },
    ],
}


# --- the platform ------------------------------------------------------------------


@dataclasses.dataclass
class Platform:
    """The running stack and every process whose CPU time is counted."""

    info: stk.StackInfo
    log_dir: Path
    servers: dict[str, Server]
    services: dict[str, ServiceProcess]

    def pids(self) -> dict[str, int]:
        found = {name: s.pid for name, s in self.services.items()}
        found.update({name: s.pid for name, s in self.servers.items()})
        return {name: pid for name, pid in found.items() if pid is not None}


@contextlib.contextmanager
def platform(data_dir: Path) -> Iterator[Platform]:
    """NATS, S3, PostgreSQL and the four services; everything stopped after."""
    log_dir = data_dir / "logs"
    base_env = stk.clean_environment()
    with contextlib.ExitStack() as stack:
        nats_server = stack.enter_context(NatsServer(data_dir / "nats"))
        s3_server = stack.enter_context(S3Server(data_dir / "s3"))
        postgres = stack.enter_context(PostgresServer(data_dir / "postgres"))
        s3_server.ensure_bucket(BUCKET)
        info = stk.StackInfo(
            nats_url=nats_server.url,
            database_url=postgres.create_database(DATABASE),
            s3=stk.S3Settings(
                endpoint=s3_server.endpoint,
                access_key=s3_server.access_key,
                secret_key=s3_server.secret_key,
                bucket=BUCKET,
                region=s3_server.region,
            ),
            ports=stk.ServicePorts.free(),
        )
        stk.ensure_topology(info.nats_url, env={})
        stk.run_migrations(info, log_dir=log_dir, base_env=base_env)
        services: dict[str, ServiceProcess] = {}
        try:
            for name, args, extra in (
                ("storage", None, COMMON_ENV),
                ("transformer", ("serve",), COMMON_ENV),
                ("notifier", None, COMMON_ENV),
                ("gateway", None, {**COMMON_ENV, **GATEWAY_ENV}),
            ):
                services[name] = stk.start_service(
                    info,
                    name,  # type: ignore[arg-type]
                    log_dir=log_dir,
                    args=args,
                    base_env=base_env,
                    extra_env=extra,
                    start_timeout=60.0,
                    wait=False,
                )
            for name, process in list(services.items()):
                try:
                    process.wait_healthy()
                except ServiceProcessError:
                    if name != "notifier":
                        raise
                    # Off the sync path (it sends webhooks): measure without.
                    print(
                        f"warning: the notifier did not start; measuring without "
                        f"it (see {process.log_path})",
                        file=sys.stderr,
                    )
                    process.stop()
                    del services[name]
            yield Platform(
                info=info,
                log_dir=log_dir,
                servers={"postgres": postgres, "nats": nats_server, "s3": s3_server},
                services=services,
            )
        finally:
            for process in reversed(list(services.values())):
                with contextlib.suppress(Exception):
                    process.stop()


def create_api_key(platform: Platform) -> tuple[str, str]:
    """A new organization and key, through the gateway's admin command.

    Returns (organization id, API key): the command prints the id on a line
    `organization_id: …` and the key alone on its last line.
    """
    argv = [
        *stk.service_executable("gateway"),
        "admin",
        "create-org",
        "--name",
        ORGANIZATION_NAME,
        "--if-missing",
    ]
    output = stk.run_service_command(
        platform.info,
        "gateway",
        argv,
        log_dir=platform.log_dir,
        base_env=stk.clean_environment(),
        timeout=60.0,
    )
    lines = output.strip().splitlines()
    organization_id = next(
        line.split(":", 1)[1].split()[0]
        for line in lines
        if line.startswith("organization_id:")
    )
    return organization_id, lines[-1].strip()


def workbook(target_bytes: int = 20 * 1024) -> bytes:
    """An XLSX of about `target_bytes`: sheet `Data`, header and mixed rows."""
    from openpyxl import Workbook

    def build(rows: int) -> bytes:
        book = Workbook()
        sheet = book.active
        assert sheet is not None
        sheet.title = "Data"
        sheet.append(["id", "name", "status", "quantity", "price", "day"])
        statuses = ("open", "shipped", "cancelled", "returned")
        for r in range(rows):
            sheet.append(
                [
                    r + 1,
                    f"item-{r * 7919 % 100000:05d}",
                    statuses[r % len(statuses)],
                    r * 37 % 500,
                    round((r * 7.31) % 1000, 2),
                    f"2024-{r % 12 + 1:02d}-{r % 28 + 1:02d}",
                ]
            )
        out = io.BytesIO()
        book.save(out)
        return out.getvalue()

    # Size grows about linearly with rows (plus a fixed part): scale a few times.
    rows = 200
    for _ in range(3):
        rows = max(10, round(rows * target_bytes / len(build(rows))))
    return build(rows)


# --- clients -----------------------------------------------------------------------


class HttpConnection:
    """One keep-alive HTTP/1.1 connection, enough for JSON request/response.

    A minimal client on asyncio streams, so the REST figures measure the
    gateway rather than an HTTP library's CPU (httpx costs the client about
    as much as the server on this path).
    """

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self._host, self._port
            )

    async def post(
        self, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        await self.connect()
        assert self._reader is not None and self._writer is not None
        lines = [f"POST {path} HTTP/1.1", f"host: {self._host}:{self._port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines += ["content-type: application/json", f"content-length: {len(body)}"]
        try:
            self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            head = await self._reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            return status, await self._reader.readexactly(length)
        except BaseException:
            # The connection's state is unknown: start over on the next call.
            await self.close()
            raise

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
            self._writer = None
            self._reader = None


class MinimalRestClient:
    """One `HttpConnection` per concurrent client (slot)."""

    name = "minimal"

    def __init__(self, host: str, port: int, slots: int) -> None:
        self._connections = [HttpConnection(host, port) for _ in range(slots)]

    async def post(
        self, slot: int, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        return await self._connections[slot].post(path, body, headers)

    async def reconnect(self) -> None:
        """Fresh connections, opened now (outside any timing)."""
        for connection in self._connections:
            await connection.close()
            await connection.connect()

    async def close(self) -> None:
        for connection in self._connections:
            await connection.close()


class HttpxRestClient:
    """httpx.AsyncClient (HTTP/1.1 keep-alive pool), to compare client costs."""

    name = "httpx"

    def __init__(self, host: str, port: int, slots: int) -> None:
        import httpx

        self._client = httpx.AsyncClient(
            base_url=f"http://{host}:{port}",
            limits=httpx.Limits(max_connections=slots, max_keepalive_connections=slots),
            timeout=60.0,
        )

    async def post(
        self, slot: int, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        reply = await self._client.post(
            path, content=body, headers={**headers, "content-type": "application/json"}
        )
        return reply.status_code, reply.content

    async def reconnect(self) -> None:
        # The pool replaces connections the server closed by itself.
        return None

    async def close(self) -> None:
        await self._client.aclose()


RestClient = MinimalRestClient | HttpxRestClient
REST_CLIENTS: dict[str, type[RestClient]] = {
    "minimal": MinimalRestClient,
    "httpx": HttpxRestClient,
}

Call = Callable[[int], Awaitable[bool]]


@dataclasses.dataclass
class Series:
    """One measured series, accumulated over the rounds."""

    name: str
    transport: str
    concurrency: int
    latencies_ms: list[float] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    failures: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    client_cpu_s: float = 0.0
    process_cpu_s: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def requests(self) -> int:
        return len(self.latencies_ms)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return math.nan
        ordered = sorted(self.latencies_ms)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else math.nan

    def cpu_ms_per_job(self, process: str) -> float:
        if not self.requests:
            return math.nan
        if process == "client":
            return self.client_cpu_s * 1000 / self.requests
        if process not in self.process_cpu_s:
            return math.nan  # not running
        return self.process_cpu_s[process] * 1000 / self.requests

    def as_dict(self, processes: Sequence[str]) -> dict[str, Any]:
        return {
            "name": self.name,
            "transport": self.transport,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "failures": self.failures,
            "errors": self.errors,
            "seconds": self.seconds,
            "jobs_per_second": self.rate,
            "p50_ms": self.p50,
            "p90_ms": self.percentile(0.9),
            "p99_ms": self.percentile(0.99),
            "mean_ms": (
                statistics.fmean(self.latencies_ms) if self.latencies_ms else math.nan
            ),
            "cpu_ms_per_job": {
                name: self.cpu_ms_per_job(name) for name in [*processes, "client"]
            },
        }


def cpu_snapshot(pids: dict[str, int]) -> dict[str, dict[int, float]]:
    """CPU seconds (user + system) of each process and its descendants."""
    snapshot: dict[str, dict[int, float]] = {}
    for name, pid in pids.items():
        times: dict[int, float] = {}
        try:
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            tree = []
        for process in tree:
            with contextlib.suppress(psutil.Error):
                cpu = process.cpu_times()
                times[process.pid] = cpu.user + cpu.system
        snapshot[name] = times
    return snapshot


def cpu_delta(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]
) -> dict[str, float]:
    """CPU seconds spent between two snapshots (processes that exited in
    between are not counted; those born in between count whole)."""
    return {
        name: sum(t - before.get(name, {}).get(pid, 0.0) for pid, t in times.items())
        for name, times in after.items()
    }


async def measure(series: Series, call: Call, total: int, pids: dict[str, int]) -> None:
    """Run `total` calls with `series.concurrency` workers; add to `series`."""
    counter = iter(range(total))

    async def worker(slot: int) -> None:
        for _ in counter:
            started = time.perf_counter()
            try:
                ok = await call(slot)
            except Exception as exc:  # a failed request is a figure too
                ok = False
                if len(series.errors) < 5:
                    series.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            series.latencies_ms.append((time.perf_counter() - started) * 1000)
            series.failures += 0 if ok else 1

    cpu_before = cpu_snapshot(pids)
    client_before = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(series.concurrency)))
    series.seconds += time.perf_counter() - started
    series.client_cpu_s += time.process_time() - client_before
    for name, seconds in cpu_delta(cpu_before, cpu_snapshot(pids)).items():
        series.process_cpu_s[name] = series.process_cpu_s.get(name, 0.0) + seconds


async def warm(call: Call, total: int, concurrency: int) -> None:
    counter = iter(range(total))

    async def worker(slot: int) -> None:
        for _ in counter:
            with contextlib.suppress(Exception):
                await call(slot)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))


# --- the benchmark -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Options:
    requests: int
    warmup: int
    concurrency: int
    rounds: int
    rest_client: str


async def create_configuration(
    target: str, api_key: str
) -> configuration_pb2.Configuration:
    configuration = json_format.ParseDict(
        CONFIGURATION, configuration_pb2.Configuration()
    )
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await public_api_pb2_grpc.ConfigurationServiceStub(
            channel
        ).CreateConfiguration(
            public_api_pb2.CreateConfigurationRequest(configuration=configuration),
            metadata=(("authorization", f"Bearer {api_key}"),),
            timeout=30,
        )
    return reply  # type: ignore[no-any-return]


def split(total: int, parts: int) -> list[int]:
    """`total` as `parts` near-equal counts (the first ones one larger)."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def run(platform: Platform, options: Options, data: bytes) -> list[Series]:
    info = platform.info
    organization_id, api_key = create_api_key(platform)
    configuration = await create_configuration(info.address("gateway"), api_key)
    metadata = (("authorization", f"Bearer {api_key}"),)
    pids = platform.pids()

    # Keep-alive clients only: one HTTP/2 channel for every gRPC caller, one
    # HTTP/1.1 connection per REST caller.
    gateway_channel = grpc.aio.insecure_channel(info.address("gateway"))
    transformer_channel = grpc.aio.insecure_channel(info.address("transformer"))
    jobs = public_api_pb2_grpc.JobServiceStub(gateway_channel)
    transformer = transformer_pb2_grpc.TransformerServiceStub(transformer_channel)
    rest = REST_CLIENTS[options.rest_client](
        info.host, info.ports.gateway_http, options.concurrency
    )
    grpc_request = public_api_pb2.CreateJobRequest(
        configuration_id=configuration.id,
        file_content=data,
        file_name=FILE_NAME,
        mode=job_pb2.Job.SYNC,
    )
    rest_body = json.dumps(
        {
            "configurationId": configuration.id,
            "fileContent": base64.b64encode(data).decode(),
            "fileName": FILE_NAME,
            "mode": "SYNC",
        }
    ).encode()
    rest_headers = dict(metadata)

    async def gateway_grpc(_slot: int) -> bool:
        job = await jobs.CreateJob(grpc_request, metadata=metadata, timeout=60)
        if job.status != job_pb2.Job.COMPLETED:
            raise RuntimeError(f"job {job.id} is {job_pb2.Job.Status.Name(job.status)}")
        return True

    async def gateway_rest(slot: int) -> bool:
        status, body = await rest.post(slot, "/v1/jobs", rest_body, rest_headers)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {body[:200]!r}")
        job = json.loads(body)
        if job.get("status") != "COMPLETED":
            raise RuntimeError(f"job {job.get('id')} is {job.get('status')}")
        return True

    async def transform_direct(_slot: int) -> bool:
        # What the gateway's sync path sends, minus the gateway.
        job_id = f"job_bench{uuid.uuid4().hex[:16]}"
        request = transformer_pb2.TransformRequest(
            job_id=job_id,
            organization_id=organization_id,
            attempt=1,
            configuration=configuration,
            input_data=data,
            input_file_name=FILE_NAME,
            output_key=keys.output_key(organization_id, job_id, "bench.csv"),
        )
        reply = await transformer.Transform(request, timeout=60)
        if reply.HasField("error") or not reply.HasField("output"):
            raise RuntimeError(f"Transform failed: {reply.error.message}")
        return True

    def series(name: str, transport: str, concurrency: int) -> Series:
        return Series(name=name, transport=transport, concurrency=concurrency)

    c = options.concurrency
    sequential = [
        (series("Transform direct", "grpc", 1), transform_direct),
        (series("CreateJob", "grpc", 1), gateway_grpc),
        (series("POST /v1/jobs", "rest", 1), gateway_rest),
    ]
    concurrent = [
        (series("CreateJob", "grpc", c), gateway_grpc),
        (series("POST /v1/jobs", "rest", c), gateway_rest),
    ]
    try:
        for _, call in sequential:
            await warm(call, options.warmup, 1)
        for _, call in concurrent:
            await warm(call, options.warmup, c)
        counts = split(options.requests, options.rounds)
        for round_index, count in enumerate(counts):
            if not count:
                continue
            # Alternate the order so no series always follows the same one.
            order = sequential if round_index % 2 == 0 else sequential[::-1]
            for s, call in order:
                if s.transport == "rest":
                    # uvicorn closes keep-alive connections idle for 5 s,
                    # and the other series may take longer than that.
                    await rest.reconnect()
                await measure(s, call, count, pids)
            order = concurrent if round_index % 2 == 0 else concurrent[::-1]
            for s, call in order:
                if s.transport == "rest":
                    # uvicorn closes keep-alive connections idle for 5 s,
                    # and the other series may take longer than that.
                    await rest.reconnect()
                await measure(s, call, count, pids)
            print(f"round {round_index + 1}/{len(counts)} done", file=sys.stderr)
    finally:
        await gateway_channel.close()
        await transformer_channel.close()
        await rest.close()
    return [s for s, _ in sequential] + [s for s, _ in concurrent]


# --- report ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    value: float
    limit: float
    unit: str
    passed: bool

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"target {self.name}: {self.value:.2f}{self.unit} "
            f"(limit {self.limit:g}{self.unit}) {verdict}"
        )


def targets(results: Sequence[Series]) -> list[Target]:
    direct, grpc_1, rest_1, grpc_c, rest_c = results
    found = []
    for name, s in (("gRPC", grpc_1), ("REST", rest_1)):
        overhead = s.p50 - direct.p50
        found.append(
            Target(
                name=f"{name} overhead p50 <= {OVERHEAD_TARGET_MS:g} ms",
                value=overhead,
                limit=OVERHEAD_TARGET_MS,
                unit=" ms",
                passed=overhead <= OVERHEAD_TARGET_MS,
            )
        )
    ratio = rest_c.rate / grpc_c.rate if grpc_c.rate else math.nan
    found.append(
        Target(
            name=(
                f"REST/gRPC jobs/s at {grpc_c.concurrency} clients >= "
                f"{THROUGHPUT_TARGET_RATIO:g}"
            ),
            value=ratio,
            limit=THROUGHPUT_TARGET_RATIO,
            unit="",
            passed=ratio >= THROUGHPUT_TARGET_RATIO,
        )
    )
    return found


CPU_COLUMNS = (
    "gateway",
    "transformer",
    "storage",
    "notifier",
    "postgres",
    "nats",
    "s3",
    "client",
)


def _cpu_cell(value: float) -> str:
    return f"{'-':>11}" if math.isnan(value) else f"{value:>11.2f}"


def report(results: Sequence[Series], checks: Sequence[Target]) -> str:
    header = (
        f"{'series':<26} {'clients':>7} {'reqs':>5} {'fail':>4} {'jobs/s':>7} "
        f"{'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'overhead p50':>12}"
    )
    lines = [header, "-" * len(header)]
    direct = results[0]
    for s in results:
        label = f"{s.transport} {s.name}"
        overhead = (
            f"{s.p50 - direct.p50:>9.2f} ms"
            if s.concurrency == 1 and s is not direct
            else f"{'':>12}"
        )
        lines.append(
            f"{label:<26} {s.concurrency:>7} {s.requests:>5} {s.failures:>4} "
            f"{s.rate:>7.1f} {s.p50:>7.2f} {s.percentile(0.9):>7.2f} "
            f"{s.percentile(0.99):>7.2f} {overhead}"
        )
    lines.append("")
    header = f"{'CPU ms per job':<26} " + " ".join(f"{c:>11}" for c in CPU_COLUMNS)
    lines += [header, "-" * len(header)]
    for s in results:
        label = f"{s.transport} {s.name} x{s.concurrency}"
        lines.append(
            f"{label:<26} "
            + " ".join(_cpu_cell(s.cpu_ms_per_job(c)) for c in CPU_COLUMNS)
        )
    lines.append("")
    lines += [check.line() for check in checks]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests", type=int, default=200, help="measured requests per series"
    )
    parser.add_argument(
        "--warmup", type=int, default=20, help="unmeasured requests per series first"
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="clients of the throughput series"
    )
    parser.add_argument(
        "--rounds", type=int, default=4, help="interleaved rounds the requests span"
    )
    parser.add_argument(
        "--size-kb", type=float, default=20.0, help="size of the workbook, in KB"
    )
    parser.add_argument(
        "--rest-client",
        choices=sorted(REST_CLIENTS),
        default="minimal",
        help="HTTP client of the REST series (its CPU shows in column client)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep data and logs")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.rounds < 1:
        parser.error("--requests, --concurrency and --rounds must be at least 1")
    options = Options(
        requests=args.requests,
        warmup=max(0, args.warmup),
        concurrency=args.concurrency,
        rounds=min(args.rounds, args.requests),
        rest_client=args.rest_client,
    )

    data = workbook(int(args.size_kb * 1024))
    load_before = os.getloadavg()
    data_dir = Path(tempfile.mkdtemp(prefix="mutate-gateway-bench-"))
    try:
        with platform(data_dir) as running:
            print("platform up; measuring", file=sys.stderr)
            results = asyncio.run(run(running, options, data))
            processes = list(running.pids())
    finally:
        if args.keep:
            print(f"data and logs kept in {data_dir}", file=sys.stderr)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    load_after = os.getloadavg()

    checks = targets(results)
    print(
        f"gateway sync create-job: {len(data) / 1024:.1f} KB workbook, "
        f"XLSX_TO_CSV with {len(CONFIGURATION['rules'])} rules; "
        f"{options.requests} requests per series in {options.rounds} rounds, "
        f"warmup {options.warmup}, REST client {options.rest_client}"
    )
    print(report(results, checks))
    print(
        f"machine: {os.cpu_count()} CPUs, load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after "
        "(client and platform share the machine)"
    )
    failures = sum(s.failures for s in results)
    for s in results:
        for error in s.errors:
            print(f"error in {s.transport} {s.name} x{s.concurrency}: {error}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "workbook_bytes": len(data),
                    "options": dataclasses.asdict(options),
                    "cpu_count": os.cpu_count(),
                    "load_average": {"before": load_before, "after": load_after},
                    "series": [s.as_dict(processes) for s in results],
                    "targets": [dataclasses.asdict(t) for t in checks],
                    "failures": failures,
                },
                indent=2,
            )
            + "\n"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
