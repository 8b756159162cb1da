"""Fixtures of the transformer tests: real NATS, S3 and storage service.

NATS and S3 are the session servers of `mutate.devstack.pytest_plugin`; each
module gets its own bucket and storage service process, each test a fresh
JetStream topology (the plugin's `jetstream` fixture deletes every stream
afterwards) with time constants in milliseconds, and worker processes of its
own through `start_worker`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
import pytest_asyncio

from mutate.common import keys, topology
from mutate.common.settings import load
from mutate.common.storage_client import StorageClient
from mutate.devstack import _proc
from mutate.devstack import stack as stk
from mutate.devstack.processes import ServiceProcess
from mutate.devstack.servers import NatsServer, S3Server

from .helpers import ORG, EventLog

# The consumer's ack wait: a killed worker's job comes back after this.
TOPOLOGY_ENV = {
    "MUTATE_JOB_ACK_WAIT_MS": "1500",
    "MUTATE_JOB_DUPLICATE_WINDOW_MS": "60000",
}

STORAGE_ENV = {
    "MUTATE_STORAGE_STARTUP_TIMEOUT_MS": "10000",
    "MUTATE_STORAGE_RETRIES": "1",
    "MUTATE_STORAGE_RETRY_BACKOFF_MS": "50",
    "MUTATE_STORAGE_CONNECT_TIMEOUT_MS": "1000",
    "MUTATE_STORAGE_READ_TIMEOUT_MS": "5000",
    "MUTATE_SHUTDOWN_GRACE_MS": "500",
}

# Every time constant of the worker in milliseconds.
WORKER_ENV = {
    **TOPOLOGY_ENV,
    "MUTATE_ENGINE_PROCESSES": "1",
    "MUTATE_WORKER_CONCURRENCY": "2",
    "MUTATE_WORKER_FETCH_TIMEOUT_MS": "300",
    "MUTATE_JOB_DELIVERY_LIMIT": "3",
    "MUTATE_JOB_NAK_DELAY_MS": "50",
    "MUTATE_JOB_NAK_DELAY_FACTOR": "2",
    "MUTATE_JOB_NAK_DELAY_MAX_MS": "400",
    "MUTATE_JOB_PROGRESS_INTERVAL_MS": "100",
    "MUTATE_ENGINE_KILL_GRACE_MS": "500",
    "MUTATE_STORAGE_TIMEOUT_MS": "1000",
    "MUTATE_STORAGE_STREAM_TIMEOUT_MS": "3000",
    "MUTATE_NATS_PUBLISH_TIMEOUT_MS": "2000",
    "MUTATE_SHUTDOWN_GRACE_MS": "3000",
    "MUTATE_LOG_FORMAT": "json",
}


@pytest.fixture(scope="module")
def module_bucket(s3_server: S3Server) -> str:
    name = f"transformer-{uuid.uuid4().hex[:12]}"
    s3_server.ensure_bucket(name)
    return name


def make_stack(
    nats_server: NatsServer, s3_server: S3Server, bucket: str
) -> stk.StackInfo:
    return stk.StackInfo(
        nats_url=nats_server.url,
        database_url="",
        s3=stk.S3Settings(
            endpoint=s3_server.endpoint,
            access_key=s3_server.access_key,
            secret_key=s3_server.secret_key,
            bucket=bucket,
            region=s3_server.region,
        ),
        ports=stk.ServicePorts.free(),
    )


def start_storage(stack: stk.StackInfo, log_dir: Path) -> ServiceProcess:
    return stk.start_service(
        stack,
        "storage",
        log_dir=log_dir,
        base_env=stk.clean_environment(),
        extra_env=STORAGE_ENV,
        stop_timeout=5.0,
    )


@pytest.fixture(scope="module")
def platform(
    nats_server: NatsServer,
    s3_server: S3Server,
    module_bucket: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[stk.StackInfo]:
    """NATS, S3 and a storage service shared by the tests of one module."""
    stack = make_stack(nats_server, s3_server, module_bucket)
    storage = start_storage(stack, tmp_path_factory.mktemp("storage-logs"))
    yield stack
    storage.stop()


@pytest_asyncio.fixture
async def js(jetstream: Any) -> AsyncIterator[Any]:
    """JetStream with Mutate's topology, time constants in milliseconds."""
    await topology.ensure(jetstream, load(topology.TopologySettings, TOPOLOGY_ENV))
    yield jetstream


@pytest_asyncio.fixture
async def events(js: Any) -> AsyncIterator[EventLog]:
    log = await EventLog(js).start()
    yield log
    await log.stop()


@pytest_asyncio.fixture
async def storage(platform: stk.StackInfo) -> AsyncIterator[StorageClient]:
    client = StorageClient(platform.address("storage"), timeout=5.0)
    yield client
    await client.close()


class Upload(Protocol):
    async def __call__(
        self, job_id: str, data: bytes, file_name: str = "data.csv"
    ) -> str: ...


@pytest.fixture
def upload(storage: StorageClient) -> Upload:
    """`await upload(job_id, data)`: store a job's input; returns its key."""

    async def put(job_id: str, data: bytes, file_name: str = "data.csv") -> str:
        key = keys.input_key(ORG, job_id, file_name)
        await storage.put_bytes(key, data, "application/octet-stream")
        return key

    return put


class StartWorker(Protocol):
    def __call__(
        self,
        name: str = "worker",
        *,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = ("work",),
        stack: stk.StackInfo | None = None,
        wait: bool = True,
    ) -> ServiceProcess: ...


def transformer_env(
    stack: stk.StackInfo, *, name: str, port: int, env: dict[str, str] | None
) -> dict[str, str]:
    return {
        **stk.clean_environment(),
        **stk.service_environment(stack, "transformer"),
        **WORKER_ENV,
        "MUTATE_GRPC_PORT": str(port),
        "MUTATE_WORKER_ID": name,
        **(env or {}),
    }


@pytest.fixture
def start_worker(start_process: Any, platform: stk.StackInfo, js: Any) -> StartWorker:
    """`start_worker("w1", env=...)`: `mutate-transformer work` as a process.

    Depends on `js` so the topology exists before any worker binds to it.
    """
    command = str(_proc.find_executable("mutate-transformer"))

    def start(
        name: str = "worker",
        *,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = ("work",),
        stack: stk.StackInfo | None = None,
        wait: bool = True,
    ) -> ServiceProcess:
        port = _proc.free_port()
        process: ServiceProcess = start_process(
            name,
            [command, *args],
            health_address=f"127.0.0.1:{port}",
            env=transformer_env(stack or platform, name=name, port=port, env=env),
            wait=wait,
            stop_timeout=15.0,
        )
        return process

    return start


def s3_keys(s3_server: S3Server, bucket: str, prefix: str) -> list[str]:
    client = s3_server.client()
    return [
        o.object_name
        for o in client.list_objects(bucket, prefix=prefix, recursive=True)
    ]
