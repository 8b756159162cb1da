"""gRPC spans and call durations for grpc.aio servers and channels.

Spans come from `opentelemetry-instrumentation-grpc` (W3C context in the
call metadata, `rpc.*` attributes, status on error). It records no metrics,
so `DurationInterceptor` adds `rpc.server.call.duration`. Both go BEFORE
`GrpcServer`'s own ErrorInterceptor, which it appends last: the error
interceptor's `abort` then runs inside the server span and sets its status.

TODO: cost. On a trivial unary call (tests/common/test_telemetry_bench.py)
client + server spans with OTLP export add roughly 350-470 us of CPU a call,
of which ~80-150 us is grpc.aio's Python interceptor path itself; a real
request spends milliseconds elsewhere, but the issue's 10% budget for the
sync create-job benchmark has to be measured once the services are wired.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import _aio_client
from opentelemetry.instrumentation.grpc import (
    aio_client_interceptors as _otel_client_interceptors,
)
from opentelemetry.instrumentation.grpc import (
    aio_server_interceptor as _otel_server_interceptor,
)
from opentelemetry.metrics import Histogram

# Probes and tooling, not work: a health check every few seconds per pod
# would otherwise be a trace of its own.
UNTRACED_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
)


def _traced_call(details: Any) -> bool:
    method = details.method
    if isinstance(method, bytes):
        method = method.decode()
    service = str(method).lstrip("/").rpartition("/")[0]
    return service not in UNTRACED_SERVICES


def aio_server_interceptor(
    tracer_provider: trace.TracerProvider | None = None,
) -> grpc.aio.ServerInterceptor:
    """The server-span interceptor (global tracer provider by default).

    Health checks and reflection make no spans.
    """
    interceptor: grpc.aio.ServerInterceptor = _otel_server_interceptor(  # type: ignore[no-untyped-call]
        tracer_provider=tracer_provider, filter_=_traced_call
    )
    return interceptor


def aio_client_interceptors(
    tracer_provider: trace.TracerProvider | None = None,
) -> list[grpc.aio.ClientInterceptor]:
    """Client-span interceptors for all four call shapes, for a channel.

    The instrumentation's client-streaming interceptor is replaced: it
    awaits the call's status before handing the call back, so a caller that
    sends with `call.write()` (as StorageClient.put_stream does) waits for
    ever (opentelemetry-instrumentation-grpc 0.66b2).
    """
    interceptors: list[grpc.aio.ClientInterceptor] = _otel_client_interceptors(  # type: ignore[no-untyped-call]
        tracer_provider=tracer_provider, filter_=_traced_call
    )
    return [
        _StreamUnaryClientInterceptor(interceptor)
        if isinstance(interceptor, _aio_client.StreamUnaryAioClientInterceptor)
        else interceptor
        for interceptor in interceptors
    ]


class _StreamUnaryClientInterceptor(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    """A CLIENT span per client-streaming call that returns the call at once.

    The span ends when the call does (a done callback), with the status
    code, as the instrumentation's other interceptors do.
    """

    def __init__(self, otel: Any) -> None:
        # The instrumentation's interceptor: its tracer, filter and helpers.
        self._otel = otel
        self._finishing: set[asyncio.Task[None]] = set()

    async def intercept_stream_unary(
        self,
        continuation: Callable[..., Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        otel = self._otel
        if otel.tracing_skipped(client_call_details):
            return await continuation(client_call_details, request_iterator)
        with otel._start_interceptor_span(client_call_details.method) as span:
            details = otel.propagate_trace_in_details(client_call_details)
            try:
                call = await continuation(details, request_iterator)
            except grpc.aio.AioRpcError as exc:
                otel.add_error_details_to_span(span, exc)
                span.end()
                raise
        call.add_done_callback(lambda done: self._end_span(span, done))
        return call

    def _end_span(self, span: trace.Span, call: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._finish(span, call))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _finish(self, span: trace.Span, call: Any) -> None:
        try:
            code = await call.code()
            details = await call.details()
        except asyncio.CancelledError:
            code, details = grpc.StatusCode.CANCELLED, "cancelled"
        _aio_client._unary_done_callback(
            span, code, details, self._otel._call_response_hook
        )(call)


class DurationInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Records each served call's duration with its method and status code."""

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        attributes = {
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": method,
        }
        wrap_unary = self._unary(attributes)
        wrap_stream = self._stream(attributes)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                wrap_unary(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                wrap_unary(handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                wrap_stream(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                wrap_stream(handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _record(
        self,
        attributes: dict[str, Any],
        started: float,
        context: grpc.aio.ServicerContext,
        failed: bool,
    ) -> None:
        code = context.code()
        if code is None:
            code = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
        if isinstance(code, grpc.StatusCode):
            code = code.value[0]
        self._histogram.record(
            time.perf_counter() - started,
            {**attributes, "rpc.grpc.status_code": int(code)},
        )

    def _unary(
        self, attributes: dict[str, Any]
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def wrap(behavior: Callable[..., Any]) -> Callable[..., Any]:
            async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = time.perf_counter()
                failed = True
                try:
                    result = await behavior(request, context)
                    failed = False
                    return result
                finally:
                    self._record(attributes, started, context, failed)

            return wrapper

        return wrap

    def _stream(
        self, attributes: dict[str, Any]
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def wrap(behavior: Callable[..., Any]) -> Callable[..., Any]:
            async def wrapper(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                started = time.perf_counter()
                failed = True
                try:
                    result = behavior(request, context)
                    if hasattr(result, "__aiter__"):
                        async for item in result:
                            yield item
                    else:
                        await result
                    failed = False
                finally:
                    self._record(attributes, started, context, failed)

            return wrapper

        return wrap
