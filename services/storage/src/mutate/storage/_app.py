"""Wiring of the storage service: store, bucket bootstrap, server, sweep."""

from __future__ import annotations

import asyncio
import logging
import time

from mutate.common import errors
from mutate.common.grpc_server import GrpcServer, ServiceRegistration, wait_for_signal
from mutate.common.settings import redacted
from mutate.common.telemetry import Telemetry
from mutate.storage._retention import RetentionSweeper
from mutate.storage._service import StorageService, add_storage_service
from mutate.storage._store import S3Store, StoreOptions
from mutate.storage.settings import StorageSettings

logger = logging.getLogger(__name__)

_BOOTSTRAP_PAUSE = 0.5


class StartupError(RuntimeError):
    """The service cannot serve: the store refuses us or never answered."""


def build_store(settings: StorageSettings) -> S3Store:
    return S3Store(
        config=settings.resolve_provider(),
        options=StoreOptions(
            part_bytes=settings.part_bytes,
            single_put_bytes=settings.single_put_bytes,
            chunk_bytes=settings.chunk_bytes,
            io_threads=settings.io_threads,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            retries=settings.retries,
            retry_backoff=settings.retry_backoff,
        ),
    )


async def bootstrap(store: S3Store, settings: StorageSettings) -> None:
    """Reach the store, check the credentials and the bucket, set lifecycle.

    An unreachable store is waited for until the start-up timeout; refused
    credentials or a missing bucket fail at once with the setting to fix.
    """
    deadline = time.monotonic() + settings.startup_timeout
    while True:
        try:
            await store.ensure_bucket(create=settings.create_bucket)
            break
        except errors.Unavailable as exc:
            if time.monotonic() >= deadline:
                raise StartupError(str(exc)) from exc
            logger.warning("object store not reachable yet: %s", exc)
            await asyncio.sleep(_BOOTSTRAP_PAUSE)
        except errors.MutateError as exc:
            raise StartupError(exc.message) from exc
    if settings.lifecycle_rules:
        try:
            await store.set_lifecycle(settings.retention_by_area())
        except errors.MutateError as exc:
            # The sweep covers retention anyway; rules are an optimisation.
            logger.warning("bucket lifecycle rules not set: %s", exc)


async def serve(settings: StorageSettings, telemetry: Telemetry | None = None) -> None:
    """Run until SIGTERM or SIGINT, then stop within the shutdown grace."""
    logger.info("starting", extra={"settings": redacted(settings)})
    store = build_store(settings)
    try:
        await bootstrap(store, settings)
        await _serve_with(store, settings, telemetry)
    finally:
        store.close()


async def _serve_with(
    store: S3Store, settings: StorageSettings, telemetry: Telemetry | None
) -> None:
    service = StorageService(
        store=store,
        max_object_bytes=settings.max_object_bytes,
        presign_default_ttl=settings.presign_default_ttl,
        presign_max_ttl=settings.presign_max_ttl,
        **({"metrics": telemetry.metrics} if telemetry else {}),
    )
    server = GrpcServer(
        interceptors=telemetry.server_interceptors() if telemetry else (),
        host=settings.grpc_host,
        port=settings.grpc_port,
        services=[
            ServiceRegistration(
                name="mutate.v1.StorageService",
                add_to_server=add_storage_service,
                servicer=service,
            )
        ],
        # Without BDP probing a put stream's HTTP/2 window stays small, so a
        # client sending faster than S3 accepts waits instead of filling the
        # server's memory (constant memory for any object size).
        options=[("grpc.http2.bdp_probe", 0)],
    )
    sweeper = RetentionSweeper(
        store=store,
        retention=settings.retention_by_area(),
        interval=settings.retention_sweep_interval,
    )
    await server.start()
    if settings.retention_sweep_interval > 0:
        sweeper.start()
    try:
        received = await wait_for_signal()
        logger.info("stopping", extra={"signal": received.name})
    finally:
        await sweeper.stop()
        await server.stop(settings.shutdown_grace)
    logger.info("stopped")
