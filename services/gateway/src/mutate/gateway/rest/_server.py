"""The REST server's life cycle: uvicorn in the caller's event loop.

`serve_rest` builds the route table and the OpenAPI document from the
descriptors, opens one gRPC channel to the gateway's own gRPC server, and
starts uvicorn as a task of the running loop. Signals stay with the caller
(the gateway's main), which stops the server with `RestServer.stop(grace)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
from collections.abc import Generator, Iterable

import grpc
import uvicorn
from google.protobuf import descriptor
from opentelemetry import trace

from mutate.gateway.rest._app import RestApp
from mutate.gateway.rest._openapi import build_openapi
from mutate.gateway.rest._routes import RouteTable, build_routes
from mutate.gateway.rest._settings import RestSettings

logger = logging.getLogger(__name__)

# The gateway's gRPC server accepts 64 MB messages; a 10 MB sync file fits.
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class RestServerState(enum.Enum):
    NEW = "new"
    SERVING = "serving"
    STOPPING = "stopping"
    STOPPED = "stopped"


def public_services() -> list[descriptor.ServiceDescriptor]:
    """The services of the public API, whose annotations define the routes."""
    from mutate.v1 import public_api_pb2

    return list(public_api_pb2.DESCRIPTOR.services_by_name.values())


class _Uvicorn(uvicorn.Server):
    """uvicorn without its signal handlers: the gateway's main owns signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class RestServer:
    """A running REST front end; `port` is the bound port."""

    def __init__(
        self,
        *,
        app: RestApp,
        channel: grpc.aio.Channel,
        server: _Uvicorn,
        task: asyncio.Task[None],
        port: int,
    ) -> None:
        self.app = app
        self.port = port
        self.state = RestServerState.SERVING
        self._channel = channel
        self._server = server
        self._task = task

    async def stop(self, grace: float) -> None:
        """Stop accepting, let requests finish within `grace` seconds, close."""
        if self.state in (RestServerState.STOPPING, RestServerState.STOPPED):
            return
        self.state = RestServerState.STOPPING
        # uvicorn types it int | None; it is only compared and awaited with.
        self._server.config.timeout_graceful_shutdown = max(grace, 0.0)  # type: ignore[assignment]
        self._server.should_exit = True
        await self.app.close()
        try:
            # uvicorn polls should_exit every 0.1 s, then drains within grace.
            await asyncio.wait_for(asyncio.shield(self._task), grace + 1.0)
        except TimeoutError:
            logger.warning("rest server did not stop in %.1f s; cancelling", grace)
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._channel.close()
        self.state = RestServerState.STOPPED
        logger.info("rest server stopped")


async def serve_rest(
    *,
    host: str,
    port: int,
    grpc_target: str,
    settings: object | None = None,
    services: Iterable[descriptor.ServiceDescriptor] | None = None,
    tracer: trace.Tracer | None = None,
) -> RestServer:
    """Start the REST/JSON server on host:port, calling gRPC at `grpc_target`.

    `settings` is a `RestSettings`, or any object with its attribute names
    (such as the gateway's settings), or None for the defaults. `port=0`
    binds a free port; the result's `.port` says which. With a `tracer`,
    each request is an HTTP SERVER span, parent of the gRPC call it makes.
    """
    rest_settings = RestSettings.from_object(settings)
    table = RouteTable(build_routes(services or public_services()))
    channel = grpc.aio.insecure_channel(
        grpc_target,
        options=[
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
        ],
    )
    app = RestApp(
        routes=table,
        channel=channel,
        settings=rest_settings,
        openapi=build_openapi(table.routes),
        tracer=tracer,
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        h11_max_incomplete_event_size=64 * 1024,
    )
    try:
        # Bound here so a busy port is an OSError for the caller, not the
        # sys.exit uvicorn does when it binds itself.
        sock = _bind(host, port)
    except OSError:
        await channel.close()
        raise
    server = _Uvicorn(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="rest-server")
    while not server.started:
        if task.done():
            await channel.close()
            sock.close()
            raise OSError(f"rest server failed to start on {host}:{port}")
        await asyncio.sleep(0.005)
    bound = int(sock.getsockname()[1])
    logger.info(
        "rest serving",
        extra={"address": f"{host}:{bound}", "grpc_target": grpc_target},
    )
    return RestServer(app=app, channel=channel, server=server, task=task, port=bound)


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock
