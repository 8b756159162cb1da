"""Putting the transformer together: pool, storage, gRPC server, worker.

`run` starts the roles asked for (`serve`, `work` or both) around one engine
pool, waits for SIGTERM or SIGINT and shuts down in order: stop intake
(health NOT_SERVING, no more pulls), let in-flight work finish within the
grace period, give back what did not, close NATS (bounded), stop the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc
import nats
from nats.aio.client import Client as NatsClient

from mutate.common.grpc_server import (
    DEFAULT_MAX_MESSAGE_BYTES,
    GrpcServer,
    ServiceRegistration,
    wait_for_signal,
)
from mutate.common.settings import redacted
from mutate.common.telemetry import Telemetry, insecure_channel
from mutate.common.topology import TopologySettings
from mutate.transformer.pool import EnginePool
from mutate.transformer.service import SERVICE_NAME, TransformerService
from mutate.transformer.settings import TransformerSettings
from mutate.transformer.storage import Storage
from mutate.transformer.worker import Worker, options_from_settings
from mutate.v1 import transformer_pb2_grpc

logger = logging.getLogger(__name__)

# Room for framing around the largest synchronous input.
_MESSAGE_OVERHEAD = 1024 * 1024


async def run(
    *,
    settings: TransformerSettings,
    topology: TopologySettings,
    limits: Any,
    serve: bool,
    work: bool,
    telemetry: Telemetry | None = None,
) -> int:
    """Run until signalled; the process exit code."""
    logger.info(
        "transformer starting",
        extra={"serve": serve, "work": work, "settings": redacted(settings)},
    )
    pool = EnginePool(
        processes=settings.processes,
        limits=limits,
        kill_grace=settings.engine_kill_grace,
        nice=settings.engine_nice,
        test_delay=settings.test_engine_delay,
    )
    storage_channel = _storage_channel(settings, telemetry)
    storage = Storage(
        storage_channel,
        timeout=settings.storage_timeout,
        stream_timeout=settings.storage_stream_timeout,
    )
    server = GrpcServer(
        interceptors=telemetry.server_interceptors() if telemetry else (),
        host=settings.grpc_host,
        port=settings.grpc_port,
        services=_services(settings, pool, storage) if serve else [],
        max_message_bytes=max(
            DEFAULT_MAX_MESSAGE_BYTES, settings.sync_max_bytes + _MESSAGE_OVERHEAD
        ),
    )
    nc: NatsClient | None = None
    worker: Worker | None = None
    try:
        await pool.start()
        if work:
            nc = await _connect(settings)
            worker = Worker(
                nc=nc,
                js=nc.jetstream(timeout=settings.nats_publish_timeout),
                pool=pool,
                storage=storage,
                options=options_from_settings(
                    settings,
                    ack_wait=topology.job_ack_wait,
                    max_input_bytes=getattr(limits, "max_input_bytes", 0),
                ),
                **({"metrics": telemetry.metrics} if telemetry else {}),
            )
            await worker.start()
        # Health says SERVING only once every role is ready.
        await server.start()
        received = await wait_for_signal()
        logger.info("shutting down", extra={"signal": received.name})
        await server.set_serving(False)
        await asyncio.gather(
            server.stop(settings.shutdown_grace),
            worker.stop(settings.shutdown_grace) if worker else _nothing(),
        )
    finally:
        await server.stop(0)
        if nc is not None:
            await _close(nc, timeout=max(1.0, settings.nats_connect_timeout))
        await storage.close()
        await storage_channel.close()
        await pool.close()
    logger.info("transformer stopped")
    return 0


def _storage_channel(
    settings: TransformerSettings, telemetry: Telemetry | None
) -> grpc.aio.Channel:
    """The channel to storage, with client spans when tracing is on."""
    return insecure_channel(
        settings.storage_address,
        options=[
            ("grpc.max_receive_message_length", DEFAULT_MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
        ],
        interceptors=telemetry.client_interceptors() if telemetry else None,
    )


def _services(
    settings: TransformerSettings, pool: EnginePool, storage: Storage
) -> list[ServiceRegistration]:
    servicer = TransformerService(
        pool=pool,
        storage=storage,
        sync_max_bytes=settings.sync_max_bytes,
        engine_timeout=settings.engine_timeout,
        work_dir=settings.work_dir,
    )
    return [
        ServiceRegistration(
            name=SERVICE_NAME,
            add_to_server=transformer_pb2_grpc.add_TransformerServiceServicer_to_server,
            servicer=servicer,
        )
    ]


async def _connect(settings: TransformerSettings) -> NatsClient:
    async def on_error(exc: Exception) -> None:
        logger.warning("nats error", extra={"error": repr(exc)})

    async def on_disconnected() -> None:
        logger.warning("nats disconnected; reconnecting")

    async def on_reconnected() -> None:
        logger.info("nats reconnected")

    return await nats.connect(
        settings.nats_url.split(","),
        connect_timeout=settings.nats_connect_timeout,
        # A worker outlives NATS restarts: it reconnects for ever and the
        # messages it could not settle are redelivered.
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
        name="mutate-transformer",
    )


async def _close(nc: NatsClient, *, timeout: float) -> None:
    """Flush and close; a drain can hang, so this one is bounded."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.flush(timeout=max(1, int(timeout))), timeout)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), timeout)


async def _nothing() -> None:
    return None
