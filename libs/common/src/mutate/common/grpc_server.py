"""The gRPC server every service runs: health, reflection, error mapping.

`GrpcServer` wraps grpc.aio with the standard health service and v1alpha
server reflection (what grpcurl uses), and installs `ErrorInterceptor`, the
single place where domain errors become status codes. `run_until_signalled`
gives the SIGTERM order: stop intake (health NOT_SERVING), drain in-flight
work against a deadline, then close.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import enum
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import trace

from mutate.common.errors import MutateError

logger = logging.getLogger(__name__)

# Large enough for MUTATE_SYNC_MAX_BYTES (10 MB default) inline plus framing.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class ServiceRegistration:
    """One servicer to add: its full name (for health and reflection)."""

    name: str
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: Any


def status_details(exc: MutateError) -> bytes:
    """A serialized google.rpc.Status carrying the error's details."""
    status = status_pb2.Status(code=exc.code.value[0], message=exc.message)
    if exc.field_violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=field, description=description
                )
                for field, description in exc.field_violations
            ]
        )
        status.details.add().Pack(bad)
    if exc.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(exc.retry_after * 1000))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    if exc.reason:
        status.details.add().Pack(
            error_details_pb2.ErrorInfo(reason=exc.reason, domain="mutate")
        )
    serialized: bytes = status.SerializeToString()
    return serialized


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    # The server span (an observer's, begun before this runs) gets the
    # exception as an event; its status follows from the code set below.
    trace.get_current_span().record_exception(exc)
    if isinstance(exc, MutateError):
        context.set_trailing_metadata(((STATUS_DETAILS_KEY, status_details(exc)),))
        await context.abort(exc.code, exc.message)
    if isinstance(exc, grpc.aio.AioRpcError) and exc.code() in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    ):
        # A dependency that nobody translated: keep the retryable code.
        await context.abort(exc.code(), f"dependency failed: {exc.details()}")
    logger.error("unhandled error in rpc", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see server logs")


class CallObserver(abc.ABC):
    """Sees each served call begin and end (spans, durations).

    `begin` runs in the handler's task right before the handler, `end` right
    after it, in the same task, once the status is set (after the error
    mapping); what `begin` returns is handed to `end`. `begin` returns None
    for a call it does not observe.
    """

    @abc.abstractmethod
    def begin(self, method: str, context: grpc.aio.ServicerContext) -> Any: ...

    @abc.abstractmethod
    def end(
        self,
        state: Any,
        context: grpc.aio.ServicerContext,
        error: BaseException | None,
    ) -> None: ...


def final_code(
    context: grpc.aio.ServicerContext, error: BaseException | None
) -> grpc.StatusCode:
    """The status a finished call ends with, as `CallObserver.end` sees it."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        return _CODES.get(code, grpc.StatusCode.UNKNOWN)
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


_CODES = {code.value[0]: code for code in grpc.StatusCode}


class ObserverInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """A `CallObserver` as an interceptor of its own, for any grpc.aio server.

    `GrpcServer` does not run it as one: it hands the observer to its
    `ErrorInterceptor`, so that all of them cost a single pass through
    grpc.aio's Python interceptor path (~100 us a call, more than a span).
    """

    def __init__(self, observer: CallObserver) -> None:
        self.observer = observer

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        return _wrapped(handler, handler_call_details.method, (self.observer,), False)


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Maps exceptions raised by handlers to gRPC status codes.

    With `observers`, each call also begins and ends with them, inside this
    one interceptor. Wrapped handlers are kept per method: the servicer's
    handler objects do not change while the server runs.
    """

    def __init__(self, observers: Sequence[CallObserver] = ()) -> None:
        self._observers = tuple(observers)
        self._handlers: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        cached = self._handlers.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = _wrapped(handler, method, self._observers, True)
        self._handlers[method] = (handler, wrapped)
        return wrapped


def _wrapped(
    handler: Any, method: str, observers: tuple[CallObserver, ...], map_errors: bool
) -> Any:
    if handler is None:
        return None
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary(handler.unary_unary, method, observers, map_errors),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            _wrap_unary(handler.stream_unary, method, observers, map_errors),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_stream(handler.unary_stream, method, observers, map_errors),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream(handler.stream_stream, method, observers, map_errors),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


def _passes_through(exc: BaseException) -> bool:
    # context.abort() raises AbortError: the status is already set.
    return isinstance(exc, (asyncio.CancelledError, grpc.aio.AbortError))


def _begin(observers: tuple[CallObserver, ...], method: str, context: Any) -> list[Any]:
    return [observer.begin(method, context) for observer in observers]


def _end(
    observers: tuple[CallObserver, ...],
    states: list[Any],
    context: Any,
    error: BaseException | None,
) -> None:
    # Last begun, first ended: a span ends after what it encloses.
    for observer, state in zip(reversed(observers), reversed(states), strict=True):
        if state is not None:
            try:
                observer.end(state, context, error)
            except Exception:  # noqa: BLE001 - telemetry never fails a call
                logger.exception("call observer failed")


def _wrap_unary(
    behavior: Callable[..., Any],
    method: str,
    observers: tuple[CallObserver, ...],
    map_errors: bool,
) -> Callable[..., Any]:
    if not observers:

        async def plain(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await behavior(request, context)
            except BaseException as exc:
                if _passes_through(exc) or not isinstance(exc, Exception):
                    raise
                await _abort(context, exc)

        return plain

    async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
        states = _begin(observers, method, context)
        error: BaseException | None = None
        try:
            return await behavior(request, context)
        except BaseException as exc:
            error = exc
            if not map_errors or _passes_through(exc) or not isinstance(exc, Exception):
                raise
            try:
                await _abort(context, exc)
            except BaseException as aborted:
                error = aborted
                raise
        finally:
            _end(observers, states, context, error)

    return observed


def _wrap_stream(
    behavior: Callable[..., Any],
    method: str,
    observers: tuple[CallObserver, ...],
    map_errors: bool,
) -> Callable[..., Any]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        states = _begin(observers, method, context) if observers else []
        error: BaseException | None = None
        try:
            result = behavior(request, context)
            if hasattr(result, "__aiter__"):
                async for item in result:
                    yield item
            else:
                await result
        except BaseException as exc:
            error = exc
            if not map_errors or _passes_through(exc) or not isinstance(exc, Exception):
                raise
            try:
                await _abort(context, exc)
            except BaseException as aborted:
                error = aborted
                raise
        finally:
            if observers:
                _end(observers, states, context, error)

    return wrapper


class ServerState(enum.Enum):
    NEW = "new"
    SERVING = "serving"
    STOPPING = "stopping"
    STOPPED = "stopped"


class GrpcServer:
    """A grpc.aio server with health, reflection and the error interceptor."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        services: Sequence[ServiceRegistration],
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self._address = f"{host}:{port}"
        self._services = list(services)
        self.health = health.aio.HealthServicer()
        self.state = ServerState.NEW
        channel_options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
            *options,
        ]
        # Observers (spans, durations) run inside the ErrorInterceptor: one
        # pass through grpc.aio's interceptor path instead of one each.
        observers = [
            i.observer for i in interceptors if isinstance(i, ObserverInterceptor)
        ]
        others = [i for i in interceptors if not isinstance(i, ObserverInterceptor)]
        self._server = grpc.aio.server(
            interceptors=[*others, ErrorInterceptor(observers)],
            options=channel_options,
        )
        self.port = 0

    async def start(self, *, serving: bool = True) -> int:
        """Bind and start; returns the bound port.

        `serving=False` starts with health NOT_SERVING, for a process that
        has more to start (e.g. an HTTP listener) before it takes traffic;
        it calls `set_serving(True)` when ready.
        """
        for registration in self._services:
            registration.add_to_server(registration.servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        names = [s.name for s in self._services]
        reflection.enable_server_reflection(
            [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], self._server
        )
        self.port = self._server.add_insecure_port(self._address)
        if self.port == 0:
            raise OSError(f"cannot bind gRPC server to {self._address}")
        await self._server.start()
        await self.set_serving(serving)
        self.state = ServerState.SERVING
        logger.info("grpc serving", extra={"address": self._address})
        return self.port

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *(s.name for s in self._services)):
            await self.health.set(name, status)

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let running ones finish within `grace` seconds."""
        if self.state in (ServerState.STOPPING, ServerState.STOPPED):
            return
        self.state = ServerState.STOPPING
        await self.health.enter_graceful_shutdown()
        await self._server.stop(grace)
        self.state = ServerState.STOPPED


async def wait_for_signal() -> signal.Signals:
    """Block until SIGTERM or SIGINT arrives; returns which."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()

    def _on_signal(sig: signal.Signals) -> None:
        if not received.done():
            received.set_result(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, sig)
    try:
        return await received
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)


def code_to_int(code: grpc.StatusCode) -> int:
    """The numeric value of a status code (google.rpc.Code)."""
    return int(code.value[0])


__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "STATUS_DETAILS_KEY",
    "CallObserver",
    "ErrorInterceptor",
    "GrpcServer",
    "ObserverInterceptor",
    "ServerState",
    "ServiceRegistration",
    "code_to_int",
    "final_code",
    "status_details",
    "wait_for_signal",
]
