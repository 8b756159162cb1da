"""Benchmark: sync create-job over REST vs gRPC, 8 concurrent clients.

Run with `.venv/bin/pytest tests/gateway/rest/test_rest_bench.py -m bench -s`.
The target (issue #6) is REST at most 30% slower than gRPC. The REST client
is a minimal keep-alive HTTP/1.1 client on asyncio streams, so the figures
measure the server side rather than an HTTP client library's CPU; both
clients share the machine with the whole platform.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest

from mutate.devstack import stack as stk
from mutate.devstack.servers import NatsServer, PostgresServer, S3Server
from mutate.gateway.db import Database
from mutate.gateway.tenancy import TenancyStore
from mutate.v1 import configuration_pb2, job_pb2, public_api_pb2, public_api_pb2_grpc

from .rest_fakes import API_KEY

pytestmark = [pytest.mark.asyncio, pytest.mark.bench, pytest.mark.timeout(300)]

CSV = b"name,amount\n" + b"".join(b"row%d,%d\n" % (i, i) for i in range(200))
CONCURRENCY = 8
REQUESTS = 1000
WARMUP = 16


class _HttpConnection:
    """One keep-alive HTTP/1.1 connection; enough for JSON request/response."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self._host, self._port
            )
        assert self._reader is not None
        lines = [f"POST {path} HTTP/1.1", f"host: {self._host}:{self._port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines += ["content-type: application/json", f"content-length: {len(body)}"]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self._reader.readexactly(length)
        return status

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


async def _run(
    call: Callable[[int], Awaitable[bool]], total: int
) -> tuple[float, list[float], int]:
    """(requests/s, latencies in ms, failures) for `total` calls, 8 at a time."""
    latencies: list[float] = []
    failures = 0
    counter = iter(range(total))

    async def worker(slot: int) -> None:
        nonlocal failures
        for _ in counter:
            started = time.perf_counter()
            ok = await call(slot)
            latencies.append((time.perf_counter() - started) * 1000)
            failures += 0 if ok else 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(CONCURRENCY)))
    return total / (time.perf_counter() - started), latencies, failures


def _summary(name: str, rate: float, latencies: list[float], failures: int) -> str:
    ordered = sorted(latencies)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return (
        f"{name}: {rate:.0f} jobs/s, p50 {statistics.median(ordered):.1f} ms, "
        f"p95 {p95:.1f} ms, failures {failures}"
    )


@dataclasses.dataclass
class _Tenant:
    key: str
    configuration_id: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.key}"),)


@pytest.fixture(scope="module")
def bench_stack(
    devstack_dir: Path, s3_server: S3Server, postgres_server: PostgresServer
) -> Iterator[stk.StackInfo]:
    """The platform with production defaults (no test delays, no rate limit)."""
    suffix = uuid.uuid4().hex[:10]
    with NatsServer(devstack_dir / f"rest-bench-nats-{suffix}") as nats_server:
        bucket = f"rest-bench-{suffix}"
        s3_server.ensure_bucket(bucket)
        info = stk.StackInfo(
            nats_url=nats_server.url,
            database_url=postgres_server.create_database(f"rest_bench_{suffix}"),
            s3=stk.S3Settings(
                endpoint=s3_server.endpoint,
                access_key=s3_server.access_key,
                secret_key=s3_server.secret_key,
                bucket=bucket,
                region=s3_server.region,
            ),
            ports=stk.ServicePorts.free(),
        )
        log_dir = devstack_dir / f"rest-bench-logs-{suffix}"
        base_env = stk.clean_environment()
        stk.ensure_topology(info.nats_url, env={})
        stk.run_migrations(info, log_dir=log_dir, base_env=base_env)
        processes = []
        try:
            for name in ("storage", "transformer", "notifier", "gateway"):
                processes.append(
                    stk.start_service(
                        info,
                        name,  # type: ignore[arg-type]
                        log_dir=log_dir,
                        base_env=base_env,
                        extra_env={"MUTATE_RATE_LIMIT_PER_SECOND": "0"},
                        start_timeout=60.0,
                    )
                )
            yield info
        finally:
            for process in reversed(processes):
                with contextlib.suppress(Exception):
                    process.stop()


async def _tenant(info: stk.StackInfo, name: str) -> _Tenant:
    db = Database.create(
        info.database_url, schema="gateway", min_size=1, max_size=2, timeout=10
    )
    await db.open(wait_timeout=10)
    try:
        store = TenancyStore(db)
        org = await store.create_organization(f"{name}-{uuid.uuid4().hex[:8]}")
        _, key = await store.create_api_key(org["id"], name, [])
    finally:
        await db.close()
    async with grpc.aio.insecure_channel(info.address("gateway")) as channel:
        configuration = await public_api_pb2_grpc.ConfigurationServiceStub(
            channel
        ).CreateConfiguration(
            public_api_pb2.CreateConfigurationRequest(
                configuration=configuration_pb2.Configuration(
                    name="bench",
                    conversion_type=configuration_pb2.CSV_TO_CSV,
                    output_format=configuration_pb2.OutputFormat(
                        type=configuration_pb2.OutputFormat.CSV
                    ),
                )
            ),
            metadata=(("authorization", f"Bearer {key}"),),
        )
    return _Tenant(key, configuration.id)


async def test_rest_bench_sync_create_job(bench_stack: stk.StackInfo) -> None:
    grpc_tenant = await _tenant(bench_stack, "bench-grpc")
    rest_tenant = await _tenant(bench_stack, "bench-rest")

    # gRPC
    channel = grpc.aio.insecure_channel(bench_stack.address("gateway"))
    stub = public_api_pb2_grpc.JobServiceStub(channel)
    grpc_request = public_api_pb2.CreateJobRequest(
        configuration_id=grpc_tenant.configuration_id,
        file_content=CSV,
        file_name="bench.csv",
        mode=job_pb2.Job.SYNC,
    )

    async def grpc_call(_slot: int) -> bool:
        job = await stub.CreateJob(grpc_request, metadata=grpc_tenant.metadata)
        return job.status == job_pb2.Job.COMPLETED

    # REST
    url = urlsplit(bench_stack.gateway_http_url)
    connections = [
        _HttpConnection(url.hostname or "127.0.0.1", url.port or 80)
        for _ in range(CONCURRENCY)
    ]
    body = json.dumps(
        {
            "configurationId": rest_tenant.configuration_id,
            "fileContent": base64.b64encode(CSV).decode(),
            "fileName": "bench.csv",
            "mode": "SYNC",
        }
    ).encode()
    headers = {"authorization": f"Bearer {rest_tenant.key}"}

    async def rest_call(slot: int) -> bool:
        return await connections[slot].post("/v1/jobs", body, headers) == 200

    try:
        await _run(grpc_call, WARMUP)
        grpc_rate, grpc_lat, grpc_fail = await _run(grpc_call, REQUESTS - WARMUP)
        # Warmed right before use: uvicorn closes idle keep-alive connections.
        await _run(rest_call, WARMUP)
        rest_rate, rest_lat, rest_fail = await _run(rest_call, REQUESTS - WARMUP)
    finally:
        await channel.close()
        for connection in connections:
            await connection.close()

    print()
    print(_summary("grpc", grpc_rate, grpc_lat, grpc_fail))
    print(_summary("rest", rest_rate, rest_lat, rest_fail))
    print(f"rest/grpc throughput: {rest_rate / grpc_rate:.2f}")
    assert grpc_fail == 0
    assert rest_fail == 0
    assert len(grpc_lat) == len(rest_lat) == REQUESTS - WARMUP
    # The target: REST at most 30% slower than gRPC.
    assert rest_rate >= 0.7 * grpc_rate


@pytest.fixture
async def fake_stack_process() -> AsyncIterator[dict[str, int]]:
    """The REST server and fake servicers (rest_fakes) in their own process."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).with_name("rest_fakes.py")),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stdin is not None
    ports = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
    yield ports
    process.stdin.close()
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        process.kill()
        await process.wait()


async def test_rest_bench_transcoder_overhead(
    fake_stack_process: dict[str, int],
) -> None:
    """The REST hop alone: CreateJob on the fake servicers, REST vs gRPC.

    The fake answers at once, so this is the transcoder's own cost (HTTP
    parsing, JSON, the extra loopback gRPC call) with nothing to hide it.
    """
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{fake_stack_process['grpc']}")
    stub = public_api_pb2_grpc.JobServiceStub(channel)
    request = public_api_pb2.CreateJobRequest(
        configuration_id="cfg_1", file_content=CSV, mode=job_pb2.Job.SYNC
    )
    metadata = (("x-api-key", API_KEY),)

    async def grpc_call(_slot: int) -> bool:
        await stub.CreateJob(request, metadata=metadata)
        return True

    connections = [
        _HttpConnection("127.0.0.1", fake_stack_process["rest"])
        for _ in range(CONCURRENCY)
    ]
    body = json.dumps(
        {
            "configurationId": "cfg_1",
            "fileContent": base64.b64encode(CSV).decode(),
            "mode": "SYNC",
        }
    ).encode()

    async def rest_call(slot: int) -> bool:
        return await connections[slot].post("/v1/jobs", body, dict(metadata)) == 200

    try:
        await _run(grpc_call, 200)
        grpc_rate, grpc_lat, _ = await _run(grpc_call, 3000)
        await _run(rest_call, 200)
        rest_rate, rest_lat, rest_fail = await _run(rest_call, 3000)
    finally:
        await channel.close()
        for connection in connections:
            await connection.close()

    print()
    print(_summary("grpc direct", grpc_rate, grpc_lat, 0))
    print(_summary("rest -> grpc", rest_rate, rest_lat, rest_fail))
    assert rest_fail == 0
