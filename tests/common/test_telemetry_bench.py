"""Cost of gRPC instrumentation: unary calls bare, off, no-op and on.

Run: `.venv/bin/pytest -m bench tests/common/test_telemetry_bench.py -s`.
One process serves and calls, so the figures are the per-call cost of both
sides, not a service's throughput. CPU time per call (process time, export
thread included) is the steadier figure on a busy machine; "on" exports
every span over OTLP/HTTP to a receiver in the test process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from mutate.common.telemetry.receiver import OtlpReceiver

_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, sys, time
    import grpc
    from mutate.common.grpc_server import GrpcServer, ServiceRegistration
    from mutate.common.telemetry import setup_telemetry
    from mutate.v1 import storage_pb2, storage_pb2_grpc

    class Storage(storage_pb2_grpc.StorageServiceServicer):
        async def StatObject(self, request, context):
            return storage_pb2.ObjectInfo(key=request.key, size=7)

    async def main(mode, calls, concurrency):
        telemetry = setup_telemetry("storage", env=os.environ)
        use = mode != "bare"
        if mode == "noop":
            # Instrumentation without an SDK: what "off" would cost if
            # server_interceptors() did not return [] then.
            from mutate.common.telemetry import (
                aio_client_interceptors, aio_server_interceptor)
            server_interceptors = [aio_server_interceptor()]
            client_interceptors = aio_client_interceptors()
        else:
            server_interceptors = telemetry.server_interceptors()
            client_interceptors = telemetry.client_interceptors()
        server = GrpcServer(
            host="127.0.0.1", port=0,
            services=[ServiceRegistration(
                name="mutate.v1.StorageService",
                add_to_server=storage_pb2_grpc.add_StorageServiceServicer_to_server,
                servicer=Storage())],
            interceptors=server_interceptors if use else (),
        )
        port = await server.start()
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{port}",
            interceptors=client_interceptors if use else None,
        )
        stub = storage_pb2_grpc.StorageServiceStub(channel)
        request = storage_pb2.StatObjectRequest(key="k")
        for _ in range(200):
            await stub.StatObject(request)

        async def loop(n):
            for _ in range(n):
                await stub.StatObject(request)

        started = time.perf_counter()
        cpu = time.process_time()
        await asyncio.gather(*(loop(calls // concurrency) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        await channel.close()
        await server.stop(0)
        # Spans still queued are exported here: their cost counts too.
        telemetry.shutdown(10)
        cpu = time.process_time() - cpu
        print(f"{calls / elapsed:.0f} {cpu / calls * 1e6:.1f}")

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
    """
)

CALLS = 6000
CONCURRENCY = 8


def _rate(mode: str, env: dict[str, str]) -> tuple[float, float]:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode, str(CALLS), str(CONCURRENCY)],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rate, cpu = done.stdout.strip().splitlines()[-1].split()
    return float(rate), float(cpu)


@pytest.mark.bench
def test_grpc_tracing_overhead() -> None:
    with OtlpReceiver() as receiver:
        modes = {
            "bare": ("bare", {}),
            "off": ("off", {}),
            "noop": ("noop", {}),
            "on": (
                "on",
                {
                    "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                    "OTEL_BSP_SCHEDULE_DELAY": "200",
                    "OTEL_BSP_MAX_QUEUE_SIZE": "20000",
                },
            ),
        }
        rates: dict[str, list[float]] = {name: [] for name in modes}
        cpus: dict[str, list[float]] = {name: [] for name in modes}
        for _ in range(3):
            for name, (mode, env) in modes.items():
                rate, cpu = _rate(mode, env)
                rates[name].append(rate)
                cpus[name].append(cpu)
        spans = len(receiver.spans())
    best = {name: max(values) for name, values in rates.items()}
    cpu = {name: min(values) for name, values in cpus.items()}
    for name in modes:
        print(
            f"{name:>5}: best {best[name]:6.0f} calls/s, "
            f"{100 * (1 - best[name] / best['bare']):5.1f}% below bare; "
            f"CPU {cpu[name]:6.1f} us/call (+{cpu[name] - cpu['bare']:.1f})"
        )
    print(f"spans received: {spans}")
    # Every call of the "on" runs made a client and a server span.
    assert spans >= 3 * 2 * (CALLS + 200)
