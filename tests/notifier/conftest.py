"""Fixtures for the notifier: a real webhook receiver on 127.0.0.1, a
notifier running in the test's event loop against the session's NATS and
PostgreSQL, and helpers to publish job events."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc
import pytest
import pytest_asyncio
import uvicorn

from mutate.common import messaging, migrations, topology
from mutate.common.settings import load
from mutate.notifier._app import SCHEMA, Notifier
from mutate.notifier.settings import NotifierSettings
from mutate.v1 import configuration_pb2, events_pb2, job_pb2, webhook_pb2_grpc

# Short time constants so retries take milliseconds.
FAST_ENV = {
    "WEBHOOK_TIMEOUT": "2000",
    "WEBHOOK_MAX_RETRIES": "4",
    "WEBHOOK_BACKOFF_BASE_MS": "150",
    "WEBHOOK_BACKOFF_FACTOR": "2",
    "WEBHOOK_BACKOFF_MAX_MS": "5000",
    "WEBHOOK_BACKOFF_JITTER": "0.1",
    "WEBHOOK_POLL_INTERVAL_MS": "50",
    "WEBHOOK_FETCH_WAIT_MS": "200",
    "WEBHOOK_SECRET_CACHE_MS": "0",
    "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
    "MUTATE_SHUTDOWN_GRACE_MS": "2000",
    "MUTATE_LOG_FORMAT": "text",
    "MUTATE_LOG_LEVEL": "DEBUG",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclasses.dataclass
class Reply:
    status: int = 200
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0


class Receiver:
    """An ASGI webhook receiver: records every call, answers from a script.

    `script(path, [Reply(500), Reply(500)])` makes the first two calls to
    `path` fail; calls past the script get `default`.
    """

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._scripts: dict[str, list[Reply]] = {}
        self._defaults: dict[str, Reply] = {}
        self.port = 0
        self._arrived = asyncio.Condition()

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def script(self, path: str, replies: list[Reply]) -> None:
        self._scripts[path] = list(replies)

    def default(self, path: str, reply: Reply) -> None:
        self._defaults[path] = reply

    def calls_to(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.path == path]

    async def wait_for(
        self, path: str, count: int, *, timeout: float = 15.0
    ) -> list[Call]:
        """Wait until `path` has had `count` calls; returns them."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.calls_to(path)) >= count)
        return self.calls_to(path)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        path = scope["path"]
        script = self._scripts.get(path)
        reply = script.pop(0) if script else self._defaults.get(path, Reply())
        if reply.delay:
            await asyncio.sleep(reply.delay)
        async with self._arrived:
            self.calls.append(Call(path, headers, body, time.monotonic()))
            self._arrived.notify_all()
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [(k.encode(), v.encode()) for k, v in reply.headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": reply.body})


@contextlib.asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    receiver.port = sock.getsockname()[1]
    config = uvicorn.Config(
        receiver, log_level="warning", lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield receiver
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
        sock.close()


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver on 127.0.0.1 in the test's event loop."""
    async with running_receiver() as r:
        yield r


@pytest.fixture
def notifier_env(nats_server: Any, database_url: str) -> dict[str, str]:
    """The environment a test notifier reads (fast time constants)."""
    migrations.migrate(database_url, SCHEMA, migrations.discover("mutate.notifier"))
    return {
        **FAST_ENV,
        "MUTATE_NATS_URL": nats_server.url,
        "MUTATE_DATABASE_URL": database_url,
        "MUTATE_GRPC_PORT": str(free_port()),
        # Nothing listens there unless a test starts storage.
        "MUTATE_STORAGE_ADDRESS": f"127.0.0.1:{free_port()}",
        "MUTATE_STORAGE_TIMEOUT_MS": "2000",
    }


@pytest_asyncio.fixture
async def topology_ready(jetstream: Any) -> Any:
    await topology.ensure(jetstream, topology.TopologySettings())
    return jetstream


StartNotifier = Callable[..., Awaitable[Notifier]]


@pytest_asyncio.fixture
async def start_notifier(
    notifier_env: dict[str, str], topology_ready: Any
) -> AsyncIterator[StartNotifier]:
    """`await start_notifier(ENV=value, ..., resolver=..., network_backend=...)`."""
    started: list[Notifier] = []

    async def start(**overrides: Any) -> Notifier:
        inject = {
            k: overrides.pop(k)
            for k in ("resolver", "network_backend")
            if k in overrides
        }
        env = {**notifier_env, **{k: str(v) for k, v in overrides.items()}}
        notifier = Notifier(load(NotifierSettings, env), **inject)
        started.append(notifier)
        await notifier.start()
        return notifier

    yield start
    for notifier in reversed(started):
        await notifier.stop(1.0)


@pytest_asyncio.fixture
async def notifier(start_notifier: StartNotifier) -> Notifier:
    return await start_notifier()


@pytest_asyncio.fixture
async def stub(notifier: Notifier) -> AsyncIterator[Any]:
    """A NotifierService stub to the `notifier` fixture."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{notifier.port}") as channel:
        yield webhook_pb2_grpc.NotifierServiceStub(channel)


def job_event(
    kind: int = events_pb2.JobEvent.COMPLETED,
    *,
    url: str,
    organization_id: str = "org_a",
    job_id: str | None = None,
    attempt: int = 1,
    output_key: str = "",
) -> events_pb2.JobEvent:
    """A terminal job event such as a worker publishes."""
    job_id = job_id or f"job_{uuid.uuid4().hex[:12]}"
    event = events_pb2.JobEvent(
        type=kind,
        job_id=job_id,
        organization_id=organization_id,
        attempt=attempt,
        configuration_id="cfg_1",
        configuration_version=3,
        webhook_url=url,
        client_reference="ref-42",
        worker_id="worker-1",
    )
    event.execution_log.add(
        rule_id="r1",
        rule_type=configuration_pb2.RuleType.Value(
            configuration_pb2.RuleType.keys()[1]
        ),
        outcome=configuration_pb2.ExecutionLogEntry.OK,
        message="done",
        rows_before=10,
        rows_after=8,
    )
    if kind == events_pb2.JobEvent.COMPLETED:
        event.output.CopyFrom(
            job_pb2.JobOutput(
                key=output_key or f"output/{organization_id}/{job_id}/out.csv",
                file_name="out.csv",
                content_type="text/csv",
                bytes=12,
                rows=2,
                columns=2,
            )
        )
    if kind in (events_pb2.JobEvent.FAILED, events_pb2.JobEvent.DEAD_LETTERED):
        event.error.CopyFrom(
            job_pb2.JobError(code="INVALID_FILE", message="not a spreadsheet")
        )
    return event


async def publish(js: Any, event: events_pb2.JobEvent) -> None:
    await messaging.publish_event(js, event)
