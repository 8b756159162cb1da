"""Fixtures for the gateway: one real platform for the whole session.

Its own NATS, S3 and PostgreSQL servers, and storage, transformer, notifier
and the gateway itself as subprocesses, started by `mutate.devstack.harness`
(the code `mutate-dev up` runs). Tests are isolated by organization: each gets a
fresh one with its own API key (`tenant`), which is also how the gateway
isolates its users.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
import pytest_asyncio

from mutate.common.settings import load
from mutate.devstack import _proc
from mutate.devstack import stack as stk
from mutate.devstack.harness import PlatformHarness, start_platform
from mutate.devstack.processes import ServiceProcess
from mutate.gateway.app import Gateway
from mutate.gateway.db import Database
from mutate.gateway.settings import GatewaySettings
from mutate.gateway.tenancy import OPERATOR_SCOPE, TenancyStore

from .helpers import Tenant

logger = logging.getLogger(__name__)

# Short time constants and small limits, so the paths they guard are reachable.
SYNC_MAX_BYTES = 64 * 1024
MAX_INPUT_BYTES = 1024 * 1024
ENGINE_DELAY_MS = 250
GATEWAY_ENV = {
    "MUTATE_SYNC_MAX_BYTES": str(SYNC_MAX_BYTES),
    "MUTATE_MAX_INPUT_BYTES": str(MAX_INPUT_BYTES),
    "MUTATE_WATCH_POLL_MS": "200",
    "MUTATE_PROJECTOR_FETCH_WAIT_MS": "200",
    "MUTATE_PROJECTOR_RETRY_DELAY_MS": "200",
    "MUTATE_TRANSFORM_TIMEOUT_MS": "20000",
    "MUTATE_SHUTDOWN_GRACE_MS": "2000",
    "MUTATE_IDEMPOTENCY_WAIT_MS": "30000",
    "MUTATE_LOG_LEVEL": "INFO",
}
TRANSFORMER_ENV = {
    # Every conversion idles this long first, so a test can cancel mid-job.
    "MUTATE_TEST_ENGINE_DELAY_MS": str(ENGINE_DELAY_MS),
    "MUTATE_WORKER_FETCH_TIMEOUT_MS": "200",
    "MUTATE_SHUTDOWN_GRACE_MS": "2000",
}
COMMON_ENV = {"MUTATE_SHUTDOWN_GRACE_MS": "2000"}


@dataclasses.dataclass
class Platform:
    """The session's platform (`mutate.devstack.harness`), as these tests use it."""

    harness: PlatformHarness
    notifier: bool = True

    @property
    def info(self) -> stk.StackInfo:
        return self.harness.info

    @property
    def log_dir(self) -> Path:
        return self.harness.log_dir

    @property
    def processes(self) -> dict[str, ServiceProcess]:
        return {process.name: process for process in self.harness.processes}

    @property
    def gateway_target(self) -> str:
        return self.harness.gateway_address

    @property
    def database_url(self) -> str:
        return self.harness.database_url

    def settings(self, **overrides: str) -> GatewaySettings:
        """Gateway settings as the subprocess sees them, plus overrides."""
        env = self.harness.service_env("gateway")
        env.update(overrides)
        return load(GatewaySettings, env)


@pytest.fixture(scope="session")
def platform(devstack_dir: Path) -> Iterator[Platform]:
    """Its own NATS, S3 and PostgreSQL (other packages' tests wipe the session
    JetStream) and the four services, the transformer with its worker in one
    process, as `mutate-dev up` runs them."""
    harness = start_platform(
        devstack_dir / f"gateway-platform-{uuid.uuid4().hex[:8]}",
        workers=0,
        test_defaults=False,
        env=COMMON_ENV,
        per_service_env={"gateway": GATEWAY_ENV, "transformer": TRANSFORMER_ENV},
    )
    try:
        yield Platform(harness)
    finally:
        harness.stop()


# --- tenants ---------------------------------------------------------------------


@pytest_asyncio.fixture
async def gateway_db(platform: Platform) -> AsyncIterator[Database]:
    db = Database.create(
        platform.database_url, schema="gateway", min_size=1, max_size=4, timeout=10
    )
    await db.open(wait_timeout=10)
    yield db
    await db.close()


@pytest_asyncio.fixture
async def channel(platform: Platform) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(platform.gateway_target) as ch:
        yield ch


class TenantFactory:
    def __init__(self, db: Database, channel: grpc.aio.Channel) -> None:
        self._store = TenancyStore(db)
        self._channel = channel

    async def __call__(self, *, operator: bool = False) -> Tenant:
        org = await self._store.create_organization(f"test-{uuid.uuid4().hex[:12]}")
        _, key = await self._store.create_api_key(
            org["id"], "test", [OPERATOR_SCOPE] if operator else []
        )
        return Tenant(org["id"], key, self._channel)


@pytest_asyncio.fixture
async def make_tenant(gateway_db: Database, channel: grpc.aio.Channel) -> TenantFactory:
    return TenantFactory(gateway_db, channel)


@pytest_asyncio.fixture
async def tenant(make_tenant: TenantFactory) -> Tenant:
    return await make_tenant()


@pytest_asyncio.fixture
async def other_tenant(make_tenant: TenantFactory) -> Tenant:
    return await make_tenant()


@pytest_asyncio.fixture
async def js(platform: Platform) -> AsyncIterator[Any]:
    """JetStream on the platform's NATS (never wiped: the services use it)."""
    nc = await nats.connect(
        platform.info.nats_url, connect_timeout=5, max_reconnect_attempts=0
    )
    yield nc.jetstream()
    await nc.close()


@pytest.fixture(scope="session")
def s3(platform: Platform) -> tuple[Any, str]:
    """A minio client of the platform's S3 server and the services' bucket."""
    return platform.harness.s3.client(), platform.info.s3.bucket


ReplicaFactory = Callable[..., Awaitable[Gateway]]


@pytest_asyncio.fixture
async def make_replica(platform: Platform) -> AsyncIterator[ReplicaFactory]:
    """Other gateway replicas in this process, with their own settings."""
    started: list[Gateway] = []

    async def make(**overrides: str) -> Gateway:
        grpc_port, http_port = _proc.free_ports(2)
        gateway = Gateway(
            platform.settings(
                MUTATE_GRPC_PORT=str(grpc_port),
                MUTATE_HTTP_PORT=str(http_port),
                MUTATE_SWEEP_INTERVAL_MS="3600000",
                **overrides,
            )
        )
        started.append(gateway)
        await gateway.start()
        return gateway

    yield make
    for gateway in started:
        await gateway.stop()


async def tenant_on(replica: Gateway, make_tenant: TenantFactory) -> Tenant:
    """A new tenant whose channel talks to `replica`."""
    tenant = await make_tenant()
    channel = grpc.aio.insecure_channel(replica.grpc_target)
    return Tenant(tenant.organization_id, tenant.key, channel)
