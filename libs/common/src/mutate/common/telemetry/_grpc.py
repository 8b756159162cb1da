"""gRPC spans and call durations for grpc.aio servers and channels.

Our own small instrumentation rather than `opentelemetry-instrumentation-
grpc`'s interceptors, for cost (issue #8: the sync create-job path makes
three gRPC hops; the library's pair cost ~490 us of CPU a call):

- Server: `ServerSpans`, a `CallObserver` that `GrpcServer` runs inside its
  single ErrorInterceptor (one pass through grpc.aio's interceptor path
  instead of two). It continues the caller's trace from the call metadata
  (the global propagator: W3C `traceparent`), opens a SERVER span named by
  the full method with `rpc.system`, `rpc.service`, `rpc.method` and
  `rpc.grpc.status_code`, and sets ERROR for the codes that are the
  server's fault (semantic conventions: UNKNOWN, DEADLINE_EXCEEDED,
  UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS). The error mapping runs
  inside the span, so the handler's exception is recorded on it.
- Client: `TracedChannel` (what `insecure_channel` makes of the
  interceptors `aio_client_interceptors` returns) wraps a channel's
  callables; on other channels the same interceptors run on grpc.aio's
  interceptor path. Either way a call starts a CLIENT span (not made
  current: nothing runs under it in the caller), puts its context in the
  call metadata, and ends it from the call's done callback with the status
  code; ERROR for any code but OK. The call is handed back at once, never
  awaited here: a client-streaming caller writes with `call.write()` before
  any status exists (opentelemetry-instrumentation-grpc 0.66b2's
  stream-unary interceptor awaited the status first and hung such a put).

Why the channel wrapper: grpc.aio's interceptor path costs an extra task a
call and, for client streams, a queue, a task and an `asyncio.wait` per
`write`. On the sync job path (three traced calls, two of them streamed
puts) that cost more CPU than all the spans, in the callers and in storage.

`DurationInterceptor` records `rpc.server.call.duration`, also as an
observer. Health checks and reflection make no spans.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextvars import Token
from functools import partial
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import Histogram
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from mutate.common.grpc_server import CallObserver, ObserverInterceptor, final_code
from mutate.common.telemetry import _propagation

logger = logging.getLogger(__name__)

TRACER_NAME = "mutate.common.telemetry.grpc"

# Probes and tooling, not work: a health check every few seconds per pod
# would otherwise be a trace of its own.
UNTRACED_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
)

# A server span is ERROR only for codes that are the server's fault.
SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

_OK = grpc.StatusCode.OK


def _method_attributes(method: str | bytes, every: bool) -> dict[str, Any] | None:
    """`rpc.*` attributes of a full method name; None if it is not traced
    (unless `every`)."""
    if isinstance(method, bytes):
        method = method.decode()
    service, _, name = method.lstrip("/").rpartition("/")
    if service in UNTRACED_SERVICES and not every:
        return None
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


class _Methods:
    """Per-method name and attributes, worked out once per method."""

    def __init__(self, *, every: bool = False) -> None:
        self._every = every
        self._known: dict[str | bytes, tuple[str, dict[str, Any]] | None] = {}

    def get(self, method: str | bytes) -> tuple[str, dict[str, Any]] | None:
        try:
            return self._known[method]
        except KeyError:
            attributes = _method_attributes(method, self._every)
            name = method.decode() if isinstance(method, bytes) else method
            info = (name, attributes) if attributes is not None else None
            self._known[method] = info
            return info


# --- server -----------------------------------------------------------------------


class ServerSpans(CallObserver):
    """A SERVER span around each served call (see the module docstring)."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)
        self._methods = _Methods()

    def begin(
        self, method: str, context: grpc.aio.ServicerContext
    ) -> tuple[Span, Token[Context]] | None:
        info = self._methods.get(method)
        if info is None:
            return None
        name, attributes = info
        metadata = context.invocation_metadata()
        parent = _propagation.extract(dict(metadata)) if metadata else None
        span = self._tracer.start_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token

    def end(
        self,
        state: tuple[Span, Token[Context]],
        context: grpc.aio.ServicerContext,
        error: BaseException | None,
    ) -> None:
        span, token = state
        try:
            if span.is_recording():
                code = final_code(context, error)
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if error is not None and not isinstance(
                    error, (grpc.aio.AbortError, asyncio.CancelledError)
                ):
                    # Not mapped to a status by GrpcServer (a bare server).
                    span.record_exception(error)
                if code in SERVER_ERROR_CODES:
                    details = context.details() or ""
                    if isinstance(details, bytes):
                        details = details.decode("utf-8", "replace")
                    span.set_status(Status(StatusCode.ERROR, f"{code}:{details}"))
            span.end()
        finally:
            otel_context.detach(token)


def aio_server_interceptor(
    tracer_provider: trace.TracerProvider | None = None,
) -> grpc.aio.ServerInterceptor:
    """Server spans (global tracer provider by default), for a server's
    interceptors; `GrpcServer` runs it inside its error interceptor."""
    return ObserverInterceptor(ServerSpans(tracer_provider))


# --- client -----------------------------------------------------------------------


class _ClientSpans:
    """Starts CLIENT spans with their context added to the call metadata."""

    def __init__(self, tracer_provider: trace.TracerProvider | None) -> None:
        self._tracer = trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)
        self._methods = _Methods()

    def method(self, method: str | bytes) -> tuple[str, dict[str, Any]] | None:
        """Span name and attributes of a method; None if it is not traced."""
        return self._methods.get(method)

    def begin(
        self, info: tuple[str, dict[str, Any]], metadata: Any
    ) -> tuple[Span, Any]:
        """A started span, and `metadata` (None, pairs or grpc.aio.Metadata)
        with its context added."""
        name, attributes = info
        span = self._tracer.start_span(
            name, kind=SpanKind.CLIENT, attributes=attributes
        )
        carrier: dict[str, str] = {}
        _propagation.inject(carrier, span)
        if isinstance(metadata, grpc.aio.Metadata):
            return span, grpc.aio.Metadata(*metadata, *carrier.items())
        return span, (*(metadata or ()), *carrier.items())

    def started(self, call: Any, span: Span) -> Any:
        """`call`, whose span ends with it."""
        try:
            call.add_done_callback(partial(_end_client_span, span))
        except NotImplementedError:
            # A response another interceptor already produced: it is done.
            _end_client_span(span, call)
        return call


def _fail(span: Span, exc: BaseException) -> None:
    if isinstance(exc, grpc.RpcError):
        span.set_attribute("rpc.grpc.status_code", exc.code().value[0])
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
    span.record_exception(exc)
    span.end()


def _end_client_span(span: Span, call: Any) -> None:
    code = _now(call.code())
    if code is _PENDING:
        # Not expected from a done call; read the status in a task then.
        _finish_later(span, call)
        return
    _set_client_status(span, code, call)


def _set_client_status(span: Span, code: grpc.StatusCode, call: Any) -> None:
    try:
        if span.is_recording():
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code is not _OK:
                details = _now(call.details())
                if details is _PENDING:
                    details = ""
                span.set_status(Status(StatusCode.ERROR, details or str(code)))
    finally:
        span.end()


_PENDING = object()
_finishing: set[asyncio.Task[None]] = set()


def _now(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """The result of a coroutine that completes without waiting (the status
    getters of a done call); `_PENDING` if it would wait."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()
    return _PENDING


def _finish_later(span: Span, call: Any) -> None:
    async def finish() -> None:
        try:
            code = await call.code()
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
        _set_client_status(span, code, call)

    task = asyncio.get_running_loop().create_task(finish())
    _finishing.add(task)
    task.add_done_callback(_finishing.discard)


# The channel wrapper: what `insecure_channel` makes of our interceptors.


class _TracedMultiCallable:
    """A channel's callable for one method whose calls are CLIENT spans.

    The same for the four call shapes: the span starts when the call is
    made and ends from its done callback; the call is handed back at once.
    """

    __slots__ = ("_info", "_inner", "_spans")

    def __init__(
        self, inner: Any, info: tuple[str, dict[str, Any]], spans: _ClientSpans
    ) -> None:
        self._inner = inner
        self._info = info
        self._spans = spans

    def __call__(self, *request: Any, metadata: Any = None, **options: Any) -> Any:
        span, metadata = self._spans.begin(self._info, metadata)
        try:
            call = self._inner(*request, metadata=metadata, **options)
        except BaseException as exc:
            _fail(span, exc)
            raise
        return self._spans.started(call, span)


class TracedChannel(grpc.aio.Channel):  # type: ignore[misc]
    """A grpc.aio channel whose calls are CLIENT spans: the interceptors'
    spans and metadata, without grpc.aio's interceptor path (see the
    module docstring). Everything else is the wrapped channel's."""

    def __init__(self, channel: grpc.aio.Channel, spans: _ClientSpans) -> None:
        self._channel = channel
        self._spans = spans

    async def __aenter__(self) -> TracedChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._channel.close()

    async def close(self, grace: float | None = None) -> None:
        await self._channel.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._channel.get_state(try_to_connect)

    async def wait_for_state_change(
        self, last_observed_state: grpc.ChannelConnectivity
    ) -> None:
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._channel.channel_ready()

    def _traced(self, inner: Any, method: str) -> Any:
        info = self._spans.method(method)
        return inner if info is None else _TracedMultiCallable(inner, info, self._spans)

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._traced(self._channel.unary_unary(method, *args, **kwargs), method)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._traced(self._channel.unary_stream(method, *args, **kwargs), method)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._traced(self._channel.stream_unary(method, *args, **kwargs), method)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._traced(
            self._channel.stream_stream(method, *args, **kwargs), method
        )


def insecure_channel(
    target: str,
    options: Sequence[tuple[str, Any]] | None = None,
    compression: grpc.Compression | None = None,
    interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None,
) -> grpc.aio.Channel:
    """`grpc.aio.insecure_channel`, but the client-span interceptors of
    `aio_client_interceptors` (`Telemetry.client_interceptors`) become a
    `TracedChannel` around it instead. Other interceptors stay on the
    channel (their calls then run inside the span)."""
    spans: _ClientSpans | None = None
    others: list[grpc.aio.ClientInterceptor] = []
    for interceptor in interceptors or ():
        if isinstance(interceptor, _ClientInterceptor):
            spans = interceptor.spans
        else:
            others.append(interceptor)
    channel = grpc.aio.insecure_channel(
        target, options=options, compression=compression, interceptors=others or None
    )
    return channel if spans is None else TracedChannel(channel, spans)


# The interceptors: for channels made elsewhere (any grpc.aio channel).


class _ClientInterceptor:
    """One body for the four call shapes; grpc.aio sorts interceptors by
    isinstance with elif, so each shape still needs a class of its own."""

    def __init__(self, spans: _ClientSpans) -> None:
        self.spans = spans

    async def _intercept(
        self,
        continuation: Callable[..., Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request_or_iterator: Any,
    ) -> Any:
        details = client_call_details
        info = self.spans.method(details.method)
        if info is None:
            return await continuation(details, request_or_iterator)
        span, metadata = self.spans.begin(info, details.metadata)
        details = grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
        )
        try:
            call = await continuation(details, request_or_iterator)
        except BaseException as exc:
            _fail(span, exc)
            raise
        return self.spans.started(call, span)


class _UnaryUnary(_ClientInterceptor, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    intercept_unary_unary = _ClientInterceptor._intercept


class _UnaryStream(_ClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    intercept_unary_stream = _ClientInterceptor._intercept


class _StreamUnary(_ClientInterceptor, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    intercept_stream_unary = _ClientInterceptor._intercept


class _StreamStream(_ClientInterceptor, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    intercept_stream_stream = _ClientInterceptor._intercept


def aio_client_interceptors(
    tracer_provider: trace.TracerProvider | None = None,
) -> list[grpc.aio.ClientInterceptor]:
    """Client-span interceptors for all four call shapes (global tracer
    provider by default). Give them to `insecure_channel` (no interceptor
    path) or to any grpc.aio channel."""
    spans = _ClientSpans(tracer_provider)
    return [
        _UnaryUnary(spans),
        _UnaryStream(spans),
        _StreamUnary(spans),
        _StreamStream(spans),
    ]


# --- durations --------------------------------------------------------------------


class CallDurations(CallObserver):
    """Records each served call's duration with its method and status code."""

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        # Health checks too: their latency is worth a metric, not a trace.
        self._methods = _Methods(every=True)

    def begin(
        self, method: str, context: grpc.aio.ServicerContext
    ) -> tuple[dict[str, Any], float] | None:
        info = self._methods.get(method)
        if info is None:
            return None
        return info[1], time.perf_counter()

    def end(
        self,
        state: tuple[dict[str, Any], float],
        context: grpc.aio.ServicerContext,
        error: BaseException | None,
    ) -> None:
        attributes, started = state
        code = final_code(context, error)
        self._histogram.record(
            time.perf_counter() - started,
            {**attributes, "rpc.grpc.status_code": code.value[0]},
        )


class DurationInterceptor(ObserverInterceptor):
    """`rpc.server.call.duration` for a server's interceptors (`GrpcServer`
    runs it inside its error interceptor)."""

    def __init__(self, histogram: Histogram) -> None:
        super().__init__(CallDurations(histogram))
