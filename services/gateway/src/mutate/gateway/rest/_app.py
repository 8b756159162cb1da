"""The ASGI application: HTTP requests in, gRPC calls to the gateway out.

One plain ASGI callable, no framework router: the route table comes from the
annotations (`_routes`), and the hot path (match, build the request, one unary
call, encode) writes its response with two `send` calls. Server-streaming
methods answer with Server-Sent Events, and `POST /v1/jobs` with a
multipart/form-data body streams the file part to the client-streaming
`UploadJob` RPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2
from opentelemetry import propagate, trace
from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException, MultiPartParser

from mutate.gateway.rest import _errors, _fields, _json, _transcode
from mutate.gateway.rest._routes import Match, Route, RouteTable, message_class
from mutate.gateway.rest._settings import RestSettings

logger = logging.getLogger(__name__)

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# HTTP headers passed on to the gRPC call as metadata (ASGI lowercases names).
# With tracing on, the trace context is the HTTP server span's instead (see
# `RestApp.__call__`); off, traceparent passes through unchanged.
# TODO: no CORS.
FORWARDED_HEADERS = frozenset(
    {b"authorization", b"x-api-key", b"idempotency-key", b"traceparent", b"tracestate"}
)
_TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
_KEY_HEADERS = frozenset({b"authorization", b"x-api-key"})
# Longest forwarded header value: keys and traceparent are far shorter, W3C
# tracestate is at most 512 bytes, idempotency keys 255 characters.
MAX_FORWARDED_HEADER_BYTES = 1024

# The RPC a multipart POST of a route's method is streamed to instead.
MULTIPART_TARGETS = {"mutate.v1.JobService.CreateJob": "UploadJob"}
# The form part carrying the file, and the request field it stands for.
FILE_PART = "file"
FILE_FIELD = "file_content"
# A JSON job body over the size limit that holds the file inline is told to
# use a form or a presigned upload instead; the file field's key in proto3
# JSON, either spelling. Looked for in the body's first bytes only: the fields
# that may come before it are ids, names and URLs.
_INLINE_FILE_KEYS = (b'"fileContent"', b'"file_content"')
_INLINE_FILE_PEEK_BYTES = 64 * 1024

_JSON = (b"content-type", b"application/json")
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"


class ClientDisconnected(Exception):
    """The HTTP client went away before its request was read."""


class _BodyTooLarge(Exception):
    """A request body over the limit, with the first bytes that were read."""

    def __init__(self, head: bytes) -> None:
        super().__init__()
        self.head = head


@dataclass(frozen=True)
class _Endpoint:
    """A route with what serving it needs, prepared once."""

    route: Route
    builder: _transcode.RequestBuilder
    call: Any
    # For multipart uploads: the client-streaming call and its request class.
    upload_call: Any = None
    upload_request_class: Any = None


class RestApp:
    """ASGI application transcoding REST/JSON to the gateway's gRPC API."""

    def __init__(
        self,
        *,
        routes: RouteTable,
        channel: grpc.aio.Channel,
        settings: RestSettings,
        openapi: Mapping[str, Any],
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._routes = routes
        self._tracer = tracer
        self._channel = channel
        self._settings = settings
        self._openapi = _json.dumps(openapi)
        self._endpoints = {id(r): self._prepare(r) for r in routes.routes}
        self._health = channel.unary_unary(
            _HEALTH_CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        # Open SSE streams, told to end when the server stops.
        self._streams: set[asyncio.Queue[tuple[str, Any]]] = set()
        self._fixed: dict[str, Callable[[Send], Awaitable[int]]] = {
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/openapi.json": self._openapi_json,
        }

    def _prepare(self, route: Route) -> _Endpoint:
        method = route.method
        kwargs = {
            "request_serializer": route.request_class.SerializeToString,
            "response_deserializer": route.response_class.FromString,
            "_registered_method": True,
        }
        if route.server_streaming:
            call = self._channel.unary_stream(route.full_method, **kwargs)
        else:
            call = self._channel.unary_unary(route.full_method, **kwargs)
        upload_call = None
        upload_class = None
        target = MULTIPART_TARGETS.get(method.full_name)
        if target is not None:
            upload = method.containing_service.methods_by_name[target]
            upload_class = message_class(upload.input_type)
            upload_call = self._channel.stream_unary(
                f"/{upload.containing_service.full_name}/{upload.name}",
                request_serializer=upload_class.SerializeToString,
                response_deserializer=message_class(upload.output_type).FromString,
                _registered_method=True,
            )
        return _Endpoint(
            route=route,
            builder=_transcode.RequestBuilder(route),
            call=call,
            upload_call=upload_call,
            upload_request_class=upload_class,
        )

    async def close(self) -> None:
        """End open event streams so a stopping server is not held up by them."""
        for queue in list(self._streams):
            queue.put_nowait(("closed", None))

    # ------------------------------------------------------------ dispatch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if self._tracer is not None:
            await self._traced(self._tracer, scope, receive, send)
            return
        await self._serve(scope, receive, send)

    async def _traced(
        self, tracer: trace.Tracer, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Serve inside an HTTP SERVER span, child of the caller's traceparent.

        The gRPC call then carries this span's context, so a REST request
        is the parent of the gateway's server span.
        """
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in (b"traceparent", b"tracestate")
        }
        method = scope["method"]
        with tracer.start_as_current_span(
            method,
            context=propagate.extract(carrier),
            kind=trace.SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": scope["path"],
                "url.scheme": scope.get("scheme", "http"),
            },
        ) as span:
            status = await self._serve(scope, receive, send)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(trace.StatusCode.ERROR, f"HTTP {status}")

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> int:
        started = time.perf_counter()
        method = scope["method"]
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else scope["path"]
        status = 500
        try:
            status = await self._dispatch(scope, receive, send, method, path)
        except _errors.RestError as exc:
            status = await _send_error(send, exc)
        except ClientDisconnected:
            status = 499
        except Exception:
            # A bug here must still answer with the error body, never a bare 500.
            logger.exception("unhandled error serving %s %s", method, path)
            error = _errors.RestError(code_pb2.INTERNAL, "internal error")
            status = await _send_error(send, error)
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            level = logging.WARNING if status >= 500 else logging.DEBUG
            if logger.isEnabledFor(level):
                logger.log(
                    level,
                    "http %s %s -> %s in %.1f ms",
                    method,
                    path,
                    status,
                    elapsed_ms,
                    extra={"http_method": method, "http_status": status},
                )
        return status

    async def _dispatch(
        self, scope: Scope, receive: Receive, send: Send, method: str, path: str
    ) -> int:
        fixed = self._fixed.get(path)
        if fixed is not None:
            if method != "GET":
                raise _errors.method_not_allowed(method, path, ["GET"])
            return await fixed(send)
        match = self._routes.match(method, path)
        endpoint = self._endpoints[id(match.route)]
        metadata = _metadata(scope["headers"])
        if self._tracer is not None:
            metadata = _with_current_trace(metadata, match.route, method)
        if endpoint.upload_call is not None and _is_multipart(scope["headers"]):
            return await self._serve_multipart(endpoint, match, scope, receive, send)
        body = b""
        if match.route.body:
            body = await self._read_json_body(endpoint, scope, receive, path)
        request = endpoint.builder.build(
            match.variables, scope.get("query_string", b""), body
        )
        if match.route.server_streaming:
            return await self._serve_stream(endpoint, request, metadata, receive, send)
        return await self._serve_unary(endpoint, request, metadata, send)

    async def _read_json_body(
        self, endpoint: _Endpoint, scope: Scope, receive: Receive, path: str
    ) -> bytes:
        limit = self._settings.http_max_body_bytes
        # Only the routes that take a multipart file have an alternative to
        # offer; other oversized bodies are refused as soon as that is known.
        job_route = endpoint.upload_call is not None
        peek = min(limit, _INLINE_FILE_PEEK_BYTES) if job_route else 0
        try:
            return await _read_body(scope, receive, limit, peek=peek)
        except _BodyTooLarge as exc:
            if any(key in exc.head for key in _INLINE_FILE_KEYS):
                raise _errors.inline_file_too_large(
                    limit, path=path, file_part=FILE_PART
                ) from None
            raise _errors.payload_too_large(limit) from None

    # ------------------------------------------------------------ unary

    async def _serve_unary(
        self,
        endpoint: _Endpoint,
        request: Message,
        metadata: tuple[tuple[str, str], ...],
        send: Send,
    ) -> int:
        try:
            response = await endpoint.call(
                request, metadata=metadata, timeout=self._settings.http_call_timeout
            )
        except grpc.RpcError as exc:
            raise _errors.from_rpc_error(exc) from exc
        payload = _transcode.encode_message(endpoint.route, response)
        await _send_json(send, 200, payload)
        return 200

    # ------------------------------------------------------------ multipart

    async def _serve_multipart(
        self,
        endpoint: _Endpoint,
        match: Match,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> int:
        route = endpoint.route
        limit = self._settings.http_max_upload_bytes
        _check_content_length(scope, limit)
        # TODO: the file part is spooled (memory up to 1 MB, then a temporary
        # file) until the whole form is read, because curl may send fields
        # after the file; a form whose fields come first could be piped to
        # UploadJob as it arrives instead.
        parser = MultiPartParser(
            Headers(raw=scope["headers"]),
            _limited_stream(receive, limit),
            max_files=1,
            max_fields=64,
            max_part_size=64 * 1024,
        )
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            raise _errors.bad_request(
                f"invalid multipart body: {exc.message}", field="body"
            ) from None
        upload = None
        try:
            request = endpoint.builder.build(
                match.variables, scope.get("query_string", b""), b""
            )
            upload = self._apply_form(route, request, form.multi_items())
            metadata = _metadata(scope["headers"])
            if self._tracer is not None:
                metadata = _with_current_trace(metadata, route, scope["method"])
            if upload is None:
                return await self._serve_unary(endpoint, request, metadata, send)
            return await self._stream_upload(endpoint, request, upload, metadata, send)
        finally:
            await form.close()

    def _apply_form(
        self, route: Route, request: Message, items: Iterable[tuple[str, Any]]
    ) -> Any:
        """Set form fields on `request`; returns the file part, if any."""
        upload = None
        seen: set[str] = set()
        message_type = route.method.input_type
        for name, value in items:
            if not isinstance(value, str):
                if name != FILE_PART:
                    raise _errors.bad_request(
                        f"unexpected file part {name!r}; send the file as "
                        f"{FILE_PART!r}",
                        field=name,
                    )
                upload = value
                continue
            try:
                path = _fields.resolve(message_type, name)
            except _fields.FieldError as exc:
                raise _errors.bad_request(
                    f"unknown form field {name!r}: {exc}", field=name
                ) from None
            if path.proto_path == FILE_FIELD:
                raise _errors.bad_request(
                    f"form field {name!r}: send the file as a file part named "
                    f"{FILE_PART!r}",
                    field=name,
                )
            if path.proto_path in seen and not _fields.is_repeated(path.leaf):
                raise _errors.bad_request(
                    f"form field {name!r} is given more than once", field=name
                )
            seen.add(path.proto_path)
            try:
                _fields.set_field(request, path, value)
            except _fields.FieldError as exc:
                raise _errors.bad_request(
                    f"form field {name!r}: {exc}", field=name
                ) from None
        if upload is not None:
            file_name = getattr(request, "file_name", None)
            if file_name == "" and upload.filename:
                request.file_name = upload.filename  # type: ignore[attr-defined]
        return upload

    async def _stream_upload(
        self,
        endpoint: _Endpoint,
        request: Message,
        upload: Any,
        metadata: tuple[tuple[str, str], ...],
        send: Send,
    ) -> int:
        chunk_size = self._settings.http_upload_chunk_bytes
        part_class = endpoint.upload_request_class
        assert part_class is not None

        async def messages() -> AsyncIterator[Message]:
            yield part_class(request=request)
            while chunk := await upload.read(chunk_size):
                yield part_class(chunk=chunk)

        try:
            response = await endpoint.upload_call(
                messages(), metadata=metadata, timeout=self._settings.http_call_timeout
            )
        except grpc.RpcError as exc:
            raise _errors.from_rpc_error(exc) from exc
        payload = _transcode.encode_message(endpoint.route, response)
        await _send_json(send, 200, payload)
        return 200

    # ------------------------------------------------------------ streaming

    async def _serve_stream(
        self,
        endpoint: _Endpoint,
        request: Message,
        metadata: tuple[tuple[str, str], ...],
        receive: Receive,
        send: Send,
    ) -> int:
        """Server-streaming RPC as Server-Sent Events, one frame a message."""
        call = endpoint.call(request, metadata=metadata)
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        pump = asyncio.create_task(_pump_stream(call, queue))
        watcher = asyncio.create_task(_watch_disconnect(receive, queue))
        self._streams.add(queue)
        keepalive = self._settings.http_sse_keepalive
        event = endpoint.route.response_class.DESCRIPTOR.name.lower().encode()
        try:
            # Hold the headers until the first message or error, so a call that
            # fails at once (not found, unauthenticated) gets a real status.
            try:
                first: tuple[str, Any] | None = await asyncio.wait_for(
                    queue.get(), keepalive
                )
            except TimeoutError:
                first = None
            if first is not None and first[0] == "error":
                raise first[1]
            if first is not None and first[0] == "closed":
                return 499
            await send(
                {"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS}
            )
            item = first
            while True:
                if item is None:
                    await _send_chunk(send, b": keepalive\n\n")
                elif item[0] == "message":
                    payload = _transcode.encode_message(endpoint.route, item[1])
                    await _send_chunk(
                        send, b"event: %s\ndata: %s\n\n" % (event, payload)
                    )
                elif item[0] == "error":
                    error: _errors.RestError = item[1]
                    body = _json.dumps(error.body())
                    await _send_chunk(send, b"event: error\ndata: %s\n\n" % body)
                    break
                else:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), keepalive)
                except TimeoutError:
                    item = None
            await send({"type": "http.response.body", "body": b""})
            return 200
        finally:
            self._streams.discard(queue)
            call.cancel()
            for task in (pump, watcher):
                task.cancel()
            await asyncio.gather(pump, watcher, return_exceptions=True)

    # ------------------------------------------------------------ fixed

    async def _healthz(self, send: Send) -> int:
        await _send_json(send, 200, b'{"status":"ok"}')
        return 200

    async def _readyz(self, send: Send) -> int:
        try:
            response = await self._health(
                health_pb2.HealthCheckRequest(service=""),
                timeout=self._settings.http_ready_timeout,
            )
            serving = response.status == health_pb2.HealthCheckResponse.SERVING
            detail = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        except grpc.RpcError as exc:
            serving = False
            detail = f"grpc backend unreachable: {_rpc_code_name(exc)}"
        status = 200 if serving else 503
        body = {"status": "ready" if serving else "not ready", "grpc": detail}
        await _send_json(send, status, _json.dumps(body))
        return status

    async def _openapi_json(self, send: Send) -> int:
        await _send_json(send, 200, self._openapi)
        return 200


# ---------------------------------------------------------------- helpers


def _rpc_code_name(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    return code.name if code is not None else "UNKNOWN"


def _metadata(headers: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[str, str], ...]:
    out = []
    seen: set[bytes] = set()
    for name, value in headers:
        if name in FORWARDED_HEADERS:
            text = value.decode("latin-1")
            if not text.isprintable() or not text.isascii():
                raise _errors.bad_request(
                    f"header {name.decode()!r} has characters gRPC metadata "
                    "cannot carry",
                    field=name.decode(),
                )
            # Past gRPC's metadata limit (8 KiB) a call fails at random with
            # RESOURCE_EXHAUSTED: refuse oversized or repeated headers here.
            if len(value) > MAX_FORWARDED_HEADER_BYTES or name in seen:
                raise _oversized_header(name)
            seen.add(name)
            out.append((name.decode(), text))
    return tuple(out)


def _oversized_header(name: bytes) -> _errors.RestError:
    header = name.decode()
    if name in _KEY_HEADERS:
        # No key is that long, and one key is read: as any invalid key.
        return _errors.RestError(
            code_pb2.UNAUTHENTICATED,
            f"API key is not valid (header {header!r} is repeated or longer "
            f"than {MAX_FORWARDED_HEADER_BYTES} bytes)",
        )
    return _errors.bad_request(
        f"header {header!r} is repeated or longer than "
        f"{MAX_FORWARDED_HEADER_BYTES} bytes",
        field=header,
    )


def _with_current_trace(
    metadata: tuple[tuple[str, str], ...], route: Route, method: str
) -> tuple[tuple[str, str], ...]:
    """The metadata with the current span's trace context; names the span."""
    span = trace.get_current_span()
    if span.is_recording():
        template = route.template.text
        span.update_name(f"{method} {template}")
        span.set_attributes(
            {"http.route": template, "rpc.method": route.full_method.lstrip("/")}
        )
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    kept = tuple(item for item in metadata if item[0] not in _TRACE_HEADERS)
    return kept + tuple(carrier.items())


def _is_multipart(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-type":
            return value.lower().startswith(b"multipart/form-data")
    return False


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                raise _errors.bad_request(
                    "content-length is not a number", field="content-length"
                ) from None
    return None


def _check_content_length(scope: Scope, limit: int) -> None:
    length = _declared_length(scope)
    if length is not None and length > limit:
        raise _errors.payload_too_large(limit)


async def _read_body(scope: Scope, receive: Receive, limit: int, *, peek: int) -> bytes:
    """The whole body, at most `limit` bytes, else `_BodyTooLarge` with its
    first `peek` bytes (read up to there even when the declared length is
    already over the limit)."""
    chunks: list[bytes] = []
    size = 0
    length = _declared_length(scope)
    too_large = length is not None and length > limit
    while not too_large or size < peek:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        more = message.get("more_body", False)
        if size > limit:
            too_large = True
        elif not more and not too_large:
            return b"".join(chunks)
        if not more:
            break  # the body ended, over the limit or short of its declared length
    raise _BodyTooLarge(_head(chunks, peek))


def _head(chunks: list[bytes], size: int) -> bytes:
    """The first `size` bytes of `chunks`, without joining all of them."""
    head = bytearray()
    for chunk in chunks:
        if len(head) >= size:
            break
        head += chunk[: size - len(head)]
    return bytes(head)


async def _limited_stream(receive: Receive, limit: int) -> AsyncGenerator[bytes]:
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _errors.payload_too_large(limit)
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def _pump_stream(call: Any, queue: asyncio.Queue[tuple[str, Any]]) -> None:
    try:
        async for message in call:
            queue.put_nowait(("message", message))
    except grpc.RpcError as exc:
        queue.put_nowait(("error", _errors.from_rpc_error(exc)))
        return
    queue.put_nowait(("end", None))


async def _watch_disconnect(
    receive: Receive, queue: asyncio.Queue[tuple[str, Any]]
) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            queue.put_nowait(("closed", None))
            return


async def _send_json(
    send: Send, status: int, payload: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                _JSON,
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _send_chunk(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _send_error(send: Send, error: _errors.RestError) -> int:
    extra = [(k.encode(), v.encode()) for k, v in error.headers.items()]
    with contextlib.suppress(Exception):
        # The response may already have started (a failed stream write).
        await _send_json(send, error.http_status, _json.dumps(error.body()), extra)
    return error.http_status


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


__all__ = ["FORWARDED_HEADERS", "RestApp"]
