"""The gateway assembled: dependencies, servicers, background loops.

`Gateway.start()` applies migrations (under the advisory lock), opens the
PostgreSQL pool and the NATS connection, checks the JetStream topology,
serves the public API over gRPC, starts the projector and the sweeper, and
the REST server when `mutate.gateway.rest` provides one. `stop()` undoes it
in the SIGTERM order: stop intake, drain in-flight calls against the grace
period, stop the loops, close connections.
"""

from __future__ import annotations

import asyncio
import enum
import importlib
import logging
from typing import Any, Protocol

import nats
from nats.aio.client import Client as NatsClient

from mutate.common import migrations, netguard, topology
from mutate.common.grpc_server import GrpcServer, ServiceRegistration
from mutate.common.storage_client import StorageClient
from mutate.common.telemetry import NOOP_METRICS, Telemetry
from mutate.gateway import backends
from mutate.gateway.api._auth import Auth
from mutate.gateway.api.api_keys import ApiKeyServicer
from mutate.gateway.api.configurations import ConfigurationServicer
from mutate.gateway.api.deliveries import DeliveryForwarder, DeliveryServicer
from mutate.gateway.api.jobs import JobServicer
from mutate.gateway.api.queue import QueueServicer
from mutate.gateway.api.uploads import UploadServicer
from mutate.gateway.backends import Notifier, Transformer
from mutate.gateway.configurations import ConfigurationStore
from mutate.gateway.db import Database
from mutate.gateway.job_store import JobStore
from mutate.gateway.jobs import JobManager, Messaging
from mutate.gateway.projector import Projector
from mutate.gateway.ratelimit import RateLimiter
from mutate.gateway.settings import GatewaySettings
from mutate.gateway.sweeper import Sweeper
from mutate.gateway.tenancy import Authenticator, TenancyStore
from mutate.gateway.webhook_urls import WebhookUrlChecker
from mutate.v1 import public_api_pb2_grpc

logger = logging.getLogger(__name__)

SCHEMA_PACKAGE = "mutate.gateway"


class RestServer(Protocol):
    port: int

    async def stop(self, grace: float) -> None: ...


def apply_migrations(settings: GatewaySettings) -> list[str]:
    """Apply pending migrations under the schema's advisory lock (blocking)."""
    return migrations.migrate(
        settings.database_url,
        settings.database_schema,
        migrations.discover(SCHEMA_PACKAGE),
    )


class GatewayState(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    SERVING = "serving"
    STOPPING = "stopping"
    STOPPED = "stopped"


def loopback_target(host: str, port: int) -> str:
    """Where a local client (the REST layer) reaches the gRPC server."""
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    return f"{host}:{port}"


class Gateway:
    """One gateway replica."""

    def __init__(
        self, settings: GatewaySettings, *, telemetry: Telemetry | None = None
    ) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self.state = GatewayState.NEW
        self.grpc_port = 0
        self.db: Database | None = None
        self.nc: NatsClient | None = None
        self.server: GrpcServer | None = None
        self.projector: Projector | None = None
        self.sweeper: Sweeper | None = None
        self.manager: JobManager | None = None
        self.rest: RestServer | None = None
        self._clients: list[Any] = []

    async def start(self) -> None:
        s = self.settings
        self.state = GatewayState.STARTING
        if s.migrate_on_start:
            applied = await asyncio.to_thread(apply_migrations, s)
            logger.info("migrations checked", extra={"applied": applied})
        self.db = Database.create(
            s.database_url,
            schema=s.database_schema,
            min_size=s.database_pool_min,
            max_size=s.database_pool_max,
            timeout=s.database_timeout,
            traced=bool(self.telemetry and self.telemetry.tracing_enabled),
        )
        await self.db.open(wait_timeout=s.database_timeout)
        self.nc = await nats.connect(
            s.nats_url,
            name="mutate-gateway",
            connect_timeout=s.nats_connect_timeout,
            max_reconnect_attempts=-1,
        )
        js = self.nc.jetstream(timeout=s.nats_publish_timeout)
        await topology.verify(
            js,
            streams=[topology.JOBS_STREAM, topology.EVENTS_STREAM],
            consumers=[
                (topology.JOBS_STREAM, topology.WORKERS_CONSUMER),
                (topology.EVENTS_STREAM, topology.PROJECTOR_CONSUMER),
            ],
            buckets=[topology.CANCELLATIONS_BUCKET],
        )
        cancellations = await js.key_value(topology.CANCELLATIONS_BUCKET)

        telemetry = self.telemetry
        traced = telemetry.client_interceptors() if telemetry else []
        metrics = telemetry.metrics if telemetry else NOOP_METRICS
        storage_channel = backends.channel(s.storage_address, interceptors=traced)
        storage = StorageClient(
            storage_channel,
            timeout=s.rpc_timeout,
            stream_timeout=s.transform_timeout,
        )
        transformer = Transformer(
            s.transformer_address,
            timeout=s.rpc_timeout,
            transform_timeout=s.transform_timeout,
            interceptors=traced,
        )
        notifier = Notifier(
            s.notifier_address, timeout=s.rpc_timeout, interceptors=traced
        )
        self._clients = [storage, storage_channel, transformer, notifier]

        tenancy = TenancyStore(self.db)
        auth = Auth(
            Authenticator(
                tenancy,
                cache_ttl=s.api_key_cache_ttl,
                limiter=RateLimiter(
                    rate=s.rate_limit_per_second, burst=s.rate_limit_burst
                ),
            )
        )
        configurations = ConfigurationStore(self.db)
        jobs = JobStore(self.db)
        webhook_urls = WebhookUrlChecker(
            policy=netguard.NetworkPolicy.from_strings(s.webhook_allowed_networks)
        )
        manager = self.manager = JobManager(
            settings=s,
            db=self.db,
            store=jobs,
            configurations=configurations,
            storage=storage,
            transformer=transformer,
            messaging=Messaging(
                js=js,
                cancellations=cancellations,
                publish_timeout=s.nats_publish_timeout,
                max_payload=self.nc.max_payload,
            ),
            webhook_urls=webhook_urls,
            metrics=metrics,
        )
        deliveries = DeliveryForwarder(notifier)
        p = public_api_pb2_grpc
        self.server = GrpcServer(
            interceptors=telemetry.server_interceptors() if telemetry else (),
            host=s.grpc_host,
            port=s.grpc_port,
            services=[
                ServiceRegistration(
                    name="mutate.v1.ConfigurationService",
                    add_to_server=p.add_ConfigurationServiceServicer_to_server,
                    servicer=ConfigurationServicer(
                        auth=auth,
                        store=configurations,
                        transformer=transformer,
                        webhook_urls=webhook_urls,
                        settings=s,
                    ),
                ),
                ServiceRegistration(
                    name="mutate.v1.UploadService",
                    add_to_server=p.add_UploadServiceServicer_to_server,
                    servicer=UploadServicer(
                        auth=auth, store=jobs, storage=storage, settings=s
                    ),
                ),
                ServiceRegistration(
                    name="mutate.v1.JobService",
                    add_to_server=p.add_JobServiceServicer_to_server,
                    servicer=JobServicer(
                        auth=auth,
                        manager=manager,
                        store=jobs,
                        storage=storage,
                        deliveries=deliveries,
                        settings=s,
                    ),
                ),
                ServiceRegistration(
                    name="mutate.v1.DeliveryService",
                    add_to_server=p.add_DeliveryServiceServicer_to_server,
                    servicer=DeliveryServicer(
                        auth=auth, forwarder=deliveries, webhook_urls=webhook_urls
                    ),
                ),
                ServiceRegistration(
                    name="mutate.v1.ApiKeyService",
                    add_to_server=p.add_ApiKeyServiceServicer_to_server,
                    servicer=ApiKeyServicer(auth=auth, tenancy=tenancy),
                ),
                ServiceRegistration(
                    name="mutate.v1.QueueService",
                    add_to_server=p.add_QueueServiceServicer_to_server,
                    servicer=QueueServicer(
                        auth=auth,
                        store=jobs,
                        manager=manager,
                        js=js,
                        deliveries=deliveries,
                    ),
                ),
            ],
        )
        # Health stays NOT_SERVING until REST listens too: whoever waits on
        # it (the launcher, Kubernetes probes) may then use either face.
        self.grpc_port = await self.server.start(serving=False)
        self.projector = Projector(
            js=js,
            db=self.db,
            batch=s.projector_batch,
            fetch_wait=s.projector_fetch_wait,
            retry_delay=s.projector_retry_delay,
            metrics=metrics,
        )
        await self.projector.start()
        self.sweeper = Sweeper(
            store=jobs,
            configurations=configurations,
            manager=manager,
            interval=s.sweep_interval,
            requeue_after=s.requeue_after,
        )
        self.sweeper.start()
        self.rest = await self._start_rest()
        await self.server.set_serving(True)
        self.state = GatewayState.SERVING
        logger.info(
            "gateway serving",
            extra={"grpc": s.grpc_address, "rest": s.http_address if self.rest else ""},
        )

    @property
    def grpc_target(self) -> str:
        return loopback_target(self.settings.grpc_host, self.grpc_port)

    async def _start_rest(self) -> RestServer | None:
        try:
            rest = importlib.import_module("mutate.gateway.rest")
        except ModuleNotFoundError as exc:
            # Only a missing REST package is "not available"; a broken one
            # fails start-up loudly.
            if exc.name != "mutate.gateway.rest":
                raise
            rest = None
        serve_rest = getattr(rest, "serve_rest", None)
        if serve_rest is None:
            logger.warning(
                "REST is not available: mutate.gateway.rest has no serve_rest"
            )
            return None
        server: RestServer = await serve_rest(
            host=self.settings.http_host,
            port=self.settings.http_port,
            grpc_target=self.grpc_target,
            settings=self.settings,
            tracer=self.telemetry.tracer("mutate.gateway.rest")
            if self.telemetry and self.telemetry.tracing_enabled
            else None,
        )
        return server

    async def stop(self) -> None:
        """Stop intake, let in-flight calls finish within the grace, close."""
        if self.state in (GatewayState.STOPPING, GatewayState.STOPPED):
            return
        self.state = GatewayState.STOPPING
        grace = self.settings.shutdown_grace
        if self.rest is not None:
            await self._quietly("rest", self.rest.stop(grace))
        if self.server is not None:
            await self._quietly("grpc", self.server.stop(grace))
        if self.sweeper is not None:
            await self._quietly("sweeper", self.sweeper.stop())
        if self.projector is not None:
            await self._quietly("projector", self.projector.stop(timeout=grace))
        if self.manager is not None:
            # Sync jobs' events published after their answers.
            await self._quietly("events", self.manager.drain(timeout=grace))
        for client in self._clients:
            await self._quietly("client", client.close())
        if self.nc is not None and not self.nc.is_closed:
            await self._quietly("nats", self.nc.close())
        if self.db is not None:
            await self._quietly("database", self.db.close())
        self.state = GatewayState.STOPPED
        logger.info("gateway stopped")

    @staticmethod
    async def _quietly(what: str, step: Any) -> None:
        try:
            await step
        except Exception:
            logger.warning("error while stopping %s", what, exc_info=True)
