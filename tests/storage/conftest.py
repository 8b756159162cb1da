"""Fixtures of the storage tests: the service as a subprocess on real S3."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from mutate.common.storage_client import StorageClient
from mutate.devstack import stack as stk
from mutate.devstack.processes import ServiceProcess
from mutate.devstack.servers import S3Server

# Small parts keep the memory test meaningful and exercise multipart often.
FAST_ENV = {
    "MUTATE_STORAGE_PART_BYTES": str(5 * 1024 * 1024),
    "MUTATE_STORAGE_STARTUP_TIMEOUT_MS": "10000",
    "MUTATE_STORAGE_RETRIES": "2",
    "MUTATE_STORAGE_RETRY_BACKOFF_MS": "50",
    "MUTATE_STORAGE_CONNECT_TIMEOUT_MS": "2000",
    "MUTATE_STORAGE_READ_TIMEOUT_MS": "30000",
    "MUTATE_SHUTDOWN_GRACE_MS": "1000",
    "MUTATE_LOG_LEVEL": "INFO",
}


def storage_stack(server: S3Server, bucket: str) -> stk.StackInfo:
    """A stack of just S3 (the storage service needs nothing else)."""
    return stk.StackInfo(
        nats_url="nats://127.0.0.1:4222",
        database_url="",
        s3=stk.S3Settings(
            endpoint=server.endpoint,
            access_key=server.access_key,
            secret_key=server.secret_key,
            bucket=bucket,
            region=server.region,
        ),
        ports=stk.ServicePorts.free(),
    )


StartStorage = Callable[..., ServiceProcess]


@pytest.fixture
def start_storage(start_service: Any) -> StartStorage:
    """`start_storage(server, bucket, env=...)`: the service on that store."""

    def start(
        server: S3Server, bucket: str, *, env: dict[str, str] | None = None, **kw: Any
    ) -> ServiceProcess:
        return start_service(  # type: ignore[no-any-return]
            "storage",
            stack=storage_stack(server, bucket),
            env={**FAST_ENV, **(env or {})},
            **kw,
        )

    return start


@pytest.fixture
def storage_process(
    start_storage: StartStorage, s3_server: S3Server, bucket: str
) -> ServiceProcess:
    """The storage service on the session S3 server and this test's bucket."""
    return start_storage(s3_server, bucket)


@pytest_asyncio.fixture
async def storage(storage_process: ServiceProcess) -> AsyncIterator[StorageClient]:
    """A client of `storage_process`."""
    assert storage_process.health_address is not None
    client = StorageClient(storage_process.health_address, timeout=10.0)
    yield client
    await client.close()
