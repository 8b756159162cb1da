"""Webhook delivery throughput and latency of one notifier process.

Self-contained: starts NATS JetStream and embedded PostgreSQL through
`mutate.devstack` on 127.0.0.1, a webhook receiver in this process, and one
`mutate-notifier` process. Three runs, each a fresh batch of `failed` job
events (no storage needed) published on JetStream:

1. burst: N events at once; deliveries/s from the first publish to the last
   delivery, and event→delivery latency (it includes waiting in the backlog);
2. paced: N events at a steady rate below capacity; event→delivery p50/p99;
3. slow receiver: the burst again while a second endpoint sleeps
   `--slow-delay` seconds on each of its `--slow-events` webhooks; the fast
   endpoint's deliveries/s against run 1.

    .venv/bin/python benchmarks/notifier_bench.py
    .venv/bin/python benchmarks/notifier_bench.py --events 50 --slow-events 4 \
        --slow-delay 1 --rate 100

Targets (issue #7): at least 300 deliveries/s; the slow receiver slows the
others by less than 10%.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import uvicorn

from mutate.common import messaging, migrations, topology, webhooks
from mutate.devstack.processes import ServiceProcess
from mutate.devstack.servers import NatsServer, PostgresServer
from mutate.v1 import events_pb2, job_pb2

ORG = "org_bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Receiver:
    """ASGI receiver: notes when each job's webhook arrived; may sleep."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.arrived: dict[str, float] = {}
        self.count = 0
        self.changed = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        headers = dict(scope["headers"])
        if self.delay:
            await asyncio.sleep(self.delay)
        webhook_id = headers.get(b"webhook-id", b"").decode()
        self.arrived.setdefault(webhook_id, time.monotonic())
        self.count += 1
        self.changed.set()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def wait_count(self, count: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while len(self.arrived) < count:
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def serve(app: Receiver) -> Any:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Run:
    name: str
    count: int
    seconds: float
    latencies: list[float]
    # The notifier's own CPU time per delivery: comparable across machines
    # and runs where other processes compete for the cores.
    cpu_per_delivery: float = 0.0

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def line(self) -> str:
        q = (
            statistics.quantiles(self.latencies, n=100)
            if len(self.latencies) > 1
            else [0] * 99
        )
        return (
            f"{self.name:<14} {self.count:>6} webhooks in {self.seconds:6.2f}s = "
            f"{self.rate:7.1f} deliveries/s; event->delivery "
            f"p50 {statistics.median(self.latencies) * 1000:7.1f} ms, "
            f"p99 {q[98] * 1000:7.1f} ms; notifier CPU "
            f"{self.cpu_per_delivery * 1000:.2f} ms/delivery"
        )


def event(url: str) -> events_pb2.JobEvent:
    return events_pb2.JobEvent(
        type=events_pb2.JobEvent.FAILED,
        job_id=f"job_{uuid.uuid4().hex[:16]}",
        organization_id=ORG,
        attempt=1,
        configuration_id="cfg_bench",
        webhook_url=url,
        error=job_pb2.JobError(code="INVALID_FILE", message="benchmark"),
    )


def webhook_id_of(e: events_pb2.JobEvent) -> str:
    from mutate.notifier._payload import webhook_id

    return webhook_id(e.job_id, e.attempt, "failed")


async def run_batch(
    js: Any,
    receiver: Receiver,
    url: str,
    *,
    name: str,
    count: int,
    rate: float | None,
    timeout: float,
    pid: int | None = None,
) -> Run:
    receiver.arrived.clear()
    cpu_before = cpu_seconds(pid)
    events = [event(url) for _ in range(count)]
    published: dict[str, float] = {}
    start = time.monotonic()
    for i, e in enumerate(events):
        if rate:
            # Paced: hold each publish to its slot on the schedule.
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        published[webhook_id_of(e)] = time.monotonic()
        await messaging.publish_event(js, e)
    await receiver.wait_count(count, timeout)
    end = max(receiver.arrived.values())
    latencies = [receiver.arrived[k] - t for k, t in published.items()]
    cpu = (cpu_seconds(pid) - cpu_before) / count
    return Run(name, count, end - start, latencies, cpu)


@contextlib.contextmanager
def platform(folder: Path) -> Iterator[tuple[NatsServer, PostgresServer]]:
    with (
        NatsServer(folder / "nats") as nats_server,
        PostgresServer(folder / "postgres") as postgres,
    ):
        yield nats_server, postgres


async def bench(args: argparse.Namespace, folder: Path) -> int:
    with platform(folder) as (nats_server, postgres):
        database_url = postgres.create_database("bench")
        migrations.migrate(
            database_url, "notifier", migrations.discover("mutate.notifier")
        )
        client = await nats.connect(nats_server.url)
        js = client.jetstream()
        await topology.ensure(js, topology.TopologySettings())

        grpc_port = free_port()
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("MUTATE_", "WEBHOOK_"))
            },
            "MUTATE_NATS_URL": nats_server.url,
            "MUTATE_DATABASE_URL": database_url,
            "MUTATE_GRPC_PORT": str(grpc_port),
            "MUTATE_STORAGE_ADDRESS": f"127.0.0.1:{free_port()}",
            "MUTATE_LOG_LEVEL": "WARNING",
            "WEBHOOK_SECRET": webhooks.generate_secret(),
            "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
            "WEBHOOK_TIMEOUT": str(int((args.slow_delay + 5) * 1000)),
            "PYTHONUNBUFFERED": "1",
        }
        command = [str(Path(sys.executable).parent / "mutate-notifier")]
        if args.profile:
            command = [sys.executable, "-m", "cProfile", "-o", args.profile]
            command += ["-m", "mutate.notifier"]
        notifier = ServiceProcess(
            "notifier",
            command,
            env=env,
            log_path=folder / "notifier.log",
            health_address=f"127.0.0.1:{grpc_port}",
        )
        fast, slow = Receiver(), Receiver(delay=args.slow_delay)
        try:
            notifier.start()
            async with serve(fast) as fast_url, serve(slow) as slow_url:
                # Warm up connections and code paths.
                await run_batch(
                    js, fast, fast_url, name="warm-up", count=20, rate=None, timeout=60
                )
                burst = await run_batch(
                    js,
                    fast,
                    fast_url,
                    name="burst",
                    count=args.events,
                    rate=None,
                    timeout=120,
                    pid=notifier.pid,
                )
                print(burst.line(), flush=True)
                paced = await run_batch(
                    js,
                    fast,
                    fast_url,
                    name=f"paced {args.rate:g}/s",
                    count=args.events,
                    rate=args.rate,
                    timeout=120,
                    pid=notifier.pid,
                )
                print(paced.line(), flush=True)

                for _ in range(args.slow_events):
                    await messaging.publish_event(js, event(slow_url))
                await asyncio.sleep(0.2)
                with_slow = await run_batch(
                    js,
                    fast,
                    fast_url,
                    name="burst+slow",
                    count=args.events,
                    rate=None,
                    timeout=120,
                    pid=notifier.pid,
                )
                print(with_slow.line(), flush=True)
                slowdown = 1 - with_slow.rate / burst.rate
                print(
                    f"slow receiver ({args.slow_events} webhooks sleeping "
                    f"{args.slow_delay:g}s) slows the others by {slowdown * 100:.1f}% "
                    f"(target < 10%); target >= 300 deliveries/s: "
                    f"{'met' if burst.rate >= 300 else 'NOT met'}",
                    flush=True,
                )
                await slow.wait_count(args.slow_events, args.slow_delay * 4 + 30)
        finally:
            notifier.stop()
            await client.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0, help="paced run, /s")
    parser.add_argument("--slow-events", type=int, default=8)
    parser.add_argument("--slow-delay", type=float, default=5.0)
    parser.add_argument(
        "--profile", default="", help="write the notifier's cProfile stats here"
    )
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="mutate-notifier-bench-"))
    try:
        return asyncio.run(bench(args, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
