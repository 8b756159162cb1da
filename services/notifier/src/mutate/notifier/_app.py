"""The notifier process: wires settings to the pieces and runs them.

`Notifier` owns the database pool, the NATS connection, the storage client,
the HTTP sender, the intake loop, the dispatcher and the gRPC server. Shut
down in order: health NOT_SERVING and stop intake, let tries in flight
finish within MUTATE_SHUTDOWN_GRACE_MS, stop the gRPC server, close clients.

Telemetry (from `main`) adds server and client gRPC spans, spans for SQL
statements, webhook POSTs and consumed events, the webhook-attempts metric
and the Prometheus endpoint of MUTATE_METRICS_PORT.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from typing import Any

import grpc
import httpcore
import nats
from nats.aio.client import Client as NatsClient
from psycopg_pool import AsyncConnectionPool

from mutate.common import netguard, topology
from mutate.common import settings as settings_mod
from mutate.common.grpc_server import (
    DEFAULT_MAX_MESSAGE_BYTES,
    GrpcServer,
    ServiceRegistration,
)
from mutate.common.storage_client import StorageClient
from mutate.common.telemetry import Telemetry, insecure_channel
from mutate.common.telemetry.psycopg import TracedAsyncCursor
from mutate.notifier._consumer import EventConsumer
from mutate.notifier._dispatcher import Backoff, Dispatcher
from mutate.notifier._http import WebhookSender
from mutate.notifier._keys import SigningKeys
from mutate.notifier._secrets import SecretBox
from mutate.notifier._service import NotifierService
from mutate.notifier._store import DeliveryStore
from mutate.notifier.settings import NotifierSettings
from mutate.v1 import webhook_pb2_grpc

logger = logging.getLogger(__name__)

SCHEMA = "notifier"
SERVICE_NAME = "mutate.v1.NotifierService"


class NotifierState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Notifier:
    """One notifier process's moving parts; `start`, then `stop`."""

    def __init__(
        self,
        settings: NotifierSettings,
        *,
        resolver: netguard.Resolver = netguard.system_resolver,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self._storage_channel: grpc.aio.Channel | None = None
        self._resolver = resolver
        self._network_backend = network_backend
        self._pool: AsyncConnectionPool | None = None
        self._nats: NatsClient | None = None
        self._storage: StorageClient | None = None
        self._sender: WebhookSender | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.consumer: EventConsumer | None = None
        self.dispatcher: Dispatcher | None = None
        self.server: GrpcServer | None = None
        self.state = NotifierState.NEW

    @property
    def port(self) -> int:
        return self.server.port if self.server is not None else 0

    async def start(self) -> None:
        s = self.settings
        logger.info("notifier starting", extra=settings_mod.redacted(s))
        box = SecretBox.from_setting(s.secret_encryption_key)
        if not box.encrypts:
            logger.warning(
                "MUTATE_SECRET_ENCRYPTION_KEY is not set: signing secrets are "
                "stored in clear"
            )
        self._pool = AsyncConnectionPool(
            s.database_url,
            min_size=1,
            max_size=s.database_pool_size,
            kwargs=self._connection_kwargs(),
            open=False,
        )
        await self._pool.open(wait=True, timeout=s.nats_connect_timeout + 10)
        self._nats = await nats.connect(
            s.nats_url.split(","),
            connect_timeout=s.nats_connect_timeout,
            max_reconnect_attempts=-1,
            name="mutate-notifier",
        )
        js = self._nats.jetstream()
        await topology.verify(
            js,
            streams=[topology.EVENTS_STREAM],
            consumers=[(topology.EVENTS_STREAM, topology.NOTIFIER_CONSUMER)],
        )
        store = DeliveryStore(self._pool)
        self._storage_channel = insecure_channel(
            s.storage_address,
            options=[
                ("grpc.max_receive_message_length", DEFAULT_MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
            ],
            interceptors=self._client_interceptors(),
        )
        self._storage = StorageClient(self._storage_channel, timeout=s.storage_timeout)
        self._sender = WebhookSender(
            policy=s.network_policy,
            timeout=s.webhook_timeout,
            excerpt_bytes=s.webhook_response_excerpt_bytes,
            max_connections=s.webhook_concurrency,
            resolver=self._resolver,
            network_backend=self._network_backend,
            # Wraps the guarded transport; the address check stays below it.
            instrument=self.telemetry.instrument_httpx_client
            if self.telemetry
            else None,
        )
        keys = SigningKeys(
            store=store,
            box=box,
            fallback_secret=s.webhook_secret,
            cache_ttl=s.webhook_secret_cache,
        )
        # A try holds its lease for at most its timeout plus the presign
        # call; the margin covers recording it.
        lease = s.webhook_timeout + s.storage_timeout + 10.0
        self.dispatcher = Dispatcher(
            store=store,
            sender=self._sender,
            keys=keys,
            storage=self._storage,
            backoff=Backoff(
                base=s.webhook_backoff_base,
                factor=s.webhook_backoff_factor,
                maximum=s.webhook_backoff_max,
                jitter=s.webhook_backoff_jitter,
            ),
            concurrency=s.webhook_concurrency,
            endpoint_concurrency=s.webhook_endpoint_concurrency,
            poll_interval=s.webhook_poll_interval,
            lease=lease,
            **self._metrics(),
        )
        self.consumer = EventConsumer(
            js=js,
            store=store,
            dispatcher=self.dispatcher,
            try_limit=s.webhook_max_retries,
            batch=s.webhook_event_batch,
            fetch_wait=s.webhook_fetch_wait,
            retry_delay=s.webhook_poll_interval,
        )
        service = NotifierService(
            store=store,
            keys=keys,
            dispatcher=self.dispatcher,
            policy=s.network_policy,
            resolver=self._resolver,
            try_limit=s.webhook_max_retries,
            rotation_overlap=s.webhook_rotation_overlap,
            test_lease=lease,
        )
        self.server = GrpcServer(
            interceptors=self.telemetry.server_interceptors() if self.telemetry else (),
            host=s.grpc_host,
            port=s.grpc_port,
            services=[
                ServiceRegistration(
                    name=SERVICE_NAME,
                    add_to_server=webhook_pb2_grpc.add_NotifierServiceServicer_to_server,
                    servicer=service,
                )
            ],
        )
        await self.server.start()
        self._tasks = [
            asyncio.create_task(self._guard(self.dispatcher.run()), name="dispatcher"),
            asyncio.create_task(self._guard(self.consumer.run()), name="intake"),
        ]
        self.state = NotifierState.RUNNING
        logger.info("notifier running", extra={"port": self.server.port})

    def _connection_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"autocommit": True}
        if self.telemetry is not None and self.telemetry.tracing_enabled:
            kwargs["cursor_factory"] = TracedAsyncCursor
        return kwargs

    def _client_interceptors(self) -> list[grpc.aio.ClientInterceptor] | None:
        if self.telemetry is None:
            return None
        return self.telemetry.client_interceptors() or None

    def _metrics(self) -> dict[str, Any]:
        return {"metrics": self.telemetry.metrics} if self.telemetry else {}

    async def _guard(self, work: Any) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            # A loop that dies leaves the process useless: stop serving so
            # health checks fail and the orchestrator restarts it.
            logger.exception("notifier loop died")
            if self.server is not None:
                await self.server.set_serving(False)

    async def stop(self, grace: float | None = None) -> None:
        if self.state in (NotifierState.STOPPING, NotifierState.STOPPED):
            return
        self.state = NotifierState.STOPPING
        grace = self.settings.shutdown_grace if grace is None else grace
        if self.server is not None:
            await self.server.set_serving(False)
        if self.consumer is not None:
            self.consumer.stop()
            # The intake loop ends after its current fetch and batch.
            intake = [t for t in self._tasks if t.get_name() == "intake"]
            if intake:
                await asyncio.wait(
                    intake, timeout=min(grace, self.settings.webhook_fetch_wait + 1)
                )
        if self.dispatcher is not None:
            await self.dispatcher.stop(grace)
        if self.server is not None:
            await self.server.stop(min(grace, 5.0))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close_clients()
        self.state = NotifierState.STOPPED
        logger.info("notifier stopped")

    async def _close_clients(self) -> None:
        if self._sender is not None:
            await self._sender.aclose()
        if self._storage is not None:
            await self._storage.close()
        if self._storage_channel is not None:
            await self._storage_channel.close()
        if self._nats is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nats.close(), 5.0)
        if self._pool is not None:
            await self._pool.close(timeout=5.0)
