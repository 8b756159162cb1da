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

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import (
    aio_client_interceptors as _otel_client_interceptors,
)
from opentelemetry.instrumentation.grpc import (
    aio_server_interceptor as _otel_server_interceptor,
)
from opentelemetry.metrics import Histogram


def aio_server_interceptor(
    tracer_provider: trace.TracerProvider | None = None,
) -> grpc.aio.ServerInterceptor:
    """The server-span interceptor (global tracer provider by default)."""
    interceptor: grpc.aio.ServerInterceptor = _otel_server_interceptor(  # type: ignore[no-untyped-call]
        tracer_provider=tracer_provider
    )
    return interceptor


def aio_client_interceptors(
    tracer_provider: trace.TracerProvider | None = None,
) -> list[grpc.aio.ClientInterceptor]:
    """Client-span interceptors for all four call shapes, for a channel."""
    interceptors: list[grpc.aio.ClientInterceptor] = _otel_client_interceptors(  # type: ignore[no-untyped-call]
        tracer_provider=tracer_provider
    )
    return interceptors


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
