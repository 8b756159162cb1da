"""Fixtures for the gateway: one real platform for the whole session.

NATS (its own server, so other packages' tests that wipe JetStream cannot
touch it), the session S3 and PostgreSQL servers, and storage, transformer,
notifier (when it starts) and the gateway itself as subprocesses, started
through `mutate.devstack`. Tests are isolated by organization: each gets a
fresh one with its own API key (`tenant`), which is also how the gateway
isolates its users.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
import pytest_asyncio

from mutate.common import topology
from mutate.common.settings import load
from mutate.devstack import stack as stk
from mutate.devstack.processes import ServiceProcess, ServiceProcessError
from mutate.devstack.servers import NatsServer, PostgresServer, S3Server
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
    info: stk.StackInfo
    log_dir: Path
    processes: dict[str, ServiceProcess]
    notifier: bool

    @property
    def gateway_target(self) -> str:
        return self.info.address("gateway")

    @property
    def database_url(self) -> str:
        return self.info.database_url

    def settings(self, **overrides: str) -> GatewaySettings:
        """Gateway settings as the subprocess sees them, plus overrides."""
        env = stk.service_environment(self.info, "gateway")
        env.update(GATEWAY_ENV)
        env.update(overrides)
        return load(GatewaySettings, env)


async def _ensure_topology(url: str) -> None:
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        await topology.ensure(nc.jetstream(), load(topology.TopologySettings, {}))
    finally:
        await nc.close()


@pytest.fixture(scope="session")
def platform(
    devstack_dir: Path, s3_server: S3Server, postgres_server: PostgresServer
) -> Iterator[Platform]:
    suffix = uuid.uuid4().hex[:10]
    with NatsServer(devstack_dir / f"gateway-nats-{suffix}") as nats_server:
        asyncio.run(_ensure_topology(nats_server.url))
        bucket = f"gateway-{suffix}"
        s3_server.ensure_bucket(bucket)
        info = stk.StackInfo(
            nats_url=nats_server.url,
            database_url=postgres_server.create_database(f"gateway_{suffix}"),
            s3=stk.S3Settings(
                endpoint=s3_server.endpoint,
                access_key=s3_server.access_key,
                secret_key=s3_server.secret_key,
                bucket=bucket,
                region=s3_server.region,
            ),
            ports=stk.ServicePorts.free(),
        )
        log_dir = devstack_dir / f"gateway-logs-{suffix}"
        processes: dict[str, ServiceProcess] = {}
        notifier = False
        try:
            # `migrate` of gateway and notifier, as the launcher and Helm do.
            try:
                stk.run_migrations(
                    info, log_dir=log_dir, base_env=stk.clean_environment()
                )
            except (stk.ServiceMissingError, RuntimeError) as exc:
                logger.warning("migrations incomplete: %s", exc)
            for name, extra in (
                ("storage", COMMON_ENV),
                ("transformer", TRANSFORMER_ENV),
                ("notifier", COMMON_ENV),
                ("gateway", GATEWAY_ENV),
            ):
                try:
                    processes[name] = stk.start_service(
                        info,
                        name,  # type: ignore[arg-type]
                        log_dir=log_dir,
                        base_env=stk.clean_environment(),
                        extra_env=extra,
                        start_timeout=60.0,
                    )
                except (ServiceProcessError, stk.ServiceMissingError):
                    if name != "notifier":
                        raise
                    # Delivery routes need it; everything else does not.
                    logger.warning("notifier did not start; delivery tests skip")
                    continue
                notifier = notifier or name == "notifier"
            yield Platform(info, log_dir, processes, notifier)
        finally:
            for process in reversed(list(processes.values())):
                with contextlib.suppress(Exception):
                    process.stop()


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
def s3(platform: Platform, s3_server: S3Server) -> tuple[Any, str]:
    """A minio client of the platform's S3 server and the services' bucket."""
    return s3_server.client(), platform.info.s3.bucket
