"""The gRPC face of the storage service (mutate.v1.StorageService).

Handlers check keys against the scheme in mutate.common.keys, turn protos
into calls on the S3 adapter and back, and raise domain errors; the shared
ErrorInterceptor turns those into status codes, so no stack trace ever
reaches a caller. The chunks of PutObject and GetObject are framed by hand
(`mutate.common.chunk_frames`, registered by `add_storage_service`): a put's
chunks arrive as views of their frames, a get's leave as encoded frames.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import duration_pb2, timestamp_pb2
from opentelemetry import trace

from mutate.common import errors, keys
from mutate.common.storage_client import GET_CHUNKS, PUT_CHUNKS
from mutate.common.telemetry import NOOP_METRICS, Metrics
from mutate.storage._store import (
    TOO_LARGE,
    Presigned,
    S3Store,
    StoredObject,
    check_metadata,
    content_disposition,
)
from mutate.v1 import storage_pb2, storage_pb2_grpc

logger = logging.getLogger(__name__)

_CONTENT_TYPE = re.compile(r"[!-~]+/[!-~]+( *;[ -~]*)?")
_DEFAULT_CONTENT_TYPE = "application/octet-stream"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _content_type(value: str, *, default: str = _DEFAULT_CONTENT_TYPE) -> str:
    if not value:
        return default
    if len(value) > 255 or not _CONTENT_TYPE.fullmatch(value):
        raise errors.InvalidArgument(
            f"content type {value!r} is not a media type",
            field_violations=[("content_type", "type/subtype, printable ASCII")],
        )
    return value


def object_info(info: StoredObject) -> storage_pb2.ObjectInfo:
    message = storage_pb2.ObjectInfo(
        key=info.key,
        size=info.size,
        sha256=info.sha256,
        content_type=info.content_type,
        metadata=info.metadata,
        etag=info.etag,
    )
    if info.last_modified is not None:
        message.last_modified.FromDatetime(info.last_modified)
    return message


def presigned_url(signed: Presigned) -> storage_pb2.PresignedUrl:
    expire_time = timestamp_pb2.Timestamp()
    expire_time.FromDatetime(signed.expires_at)
    return storage_pb2.PresignedUrl(
        url=signed.url,
        method=signed.method,
        expire_time=expire_time,
        headers=signed.headers,
    )


class StorageService(storage_pb2_grpc.StorageServiceServicer):
    """Streamed put/get, stat, delete and presigning over one bucket."""

    def __init__(
        self,
        *,
        store: S3Store,
        max_object_bytes: int,
        presign_default_ttl: float,
        presign_max_ttl: float,
        metrics: Metrics = NOOP_METRICS,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._max_object_bytes = max_object_bytes
        self._default_ttl = presign_default_ttl
        self._max_ttl = presign_max_ttl

    async def PutObject(
        self,
        request_iterator: AsyncIterator[storage_pb2.PutObjectRequest | memoryview],
        context: grpc.aio.ServicerContext,
    ) -> storage_pb2.ObjectInfo:
        try:
            first = await anext(request_iterator, None)
            if (
                first is None
                or isinstance(first, memoryview)
                or first.WhichOneof("part") != "header"
            ):
                raise errors.InvalidArgument(
                    "the first message of PutObject must carry the header",
                    field_violations=[("header", "missing")],
                )
            info = await self._put(first.header, request_iterator)
        except errors.MutateError:
            # Ending the call while the client still writes makes its
            # grpc.aio report INTERNAL instead of our status (so it would not
            # retry an Unavailable); read and drop the rest so the status
            # arrives as sent.
            # TODO: a client streaming without end is only stopped by its own
            # deadline; a byte cap on draining would need a stream reset.
            async for _ in request_iterator:
                pass
            raise
        _describe_span(info.key, info.size)
        self._metrics.storage_transfer(direction="in", size=info.size)
        logger.info(
            "object stored",
            extra={"key": info.key, "size": info.size, "sha256": info.sha256},
        )
        return object_info(info)

    async def _put(
        self,
        header: storage_pb2.PutObjectHeader,
        request_iterator: AsyncIterator[storage_pb2.PutObjectRequest | memoryview],
    ) -> StoredObject:
        key = keys.parse_key(header.key)
        limit = self._max_object_bytes
        if header.max_bytes > 0:
            limit = min(limit, header.max_bytes)
        if header.size < 0:
            raise errors.InvalidArgument(
                "size must not be negative",
                field_violations=[("header.size", "must be ≥ 0 (0: unknown)")],
            )
        # TODO: grpc.aio ends the request iterator normally when the client
        # cancels, like a half-close: a stream without a declared size that
        # is cancelled midway can be stored as the prefix that arrived.
        # StorageClient callers declare the size whenever they know it (a
        # short stream is then refused); an explicit end-of-stream message
        # in the protocol would close the gap for the rest.
        return await self._store.put(
            str(key),
            _chunks(request_iterator),
            content_type=_content_type(header.content_type),
            metadata=check_metadata(header.metadata),
            max_bytes=limit,
            declared_size=header.size,
            declared_sha256=_declared_sha256(header.sha256),
        )

    # Chunks leave as encoded frames (bytes), which the generated base
    # class's signature does not know.
    async def GetObject(  # type: ignore[override]
        self, request: storage_pb2.GetObjectRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[storage_pb2.GetObjectResponse | bytes]:
        key = keys.parse_key(request.key)
        reader = await self._store.open(str(key))
        sent = 0
        try:
            self._check_readable(key, reader.info, request.max_bytes)
            _describe_span(reader.info.key, reader.info.size)
            yield storage_pb2.GetObjectResponse(info=object_info(reader.info))
            async for chunk in reader.chunks():
                sent += len(chunk)
                yield GET_CHUNKS.frame(chunk)
        finally:
            # Counted as sent, also when the caller stopped reading early.
            if sent:
                self._metrics.storage_transfer(direction="out", size=sent)
            await reader.close()

    def _check_readable(
        self, key: keys.ObjectKey, info: StoredObject, max_bytes: int
    ) -> None:
        if max_bytes > 0 and info.size > max_bytes:
            raise errors.FailedPrecondition(
                f"object {info.key!r} is {info.size} bytes, over the "
                f"requested limit of {max_bytes}",
                reason=TOO_LARGE,
            )
        # A presigned PUT cannot cap its size, so the cap is enforced here.
        if key.area is keys.Area.UPLOADS and info.size > self._max_object_bytes:
            raise errors.FailedPrecondition(
                f"upload {info.key!r} is {info.size} bytes, over the limit of "
                f"{self._max_object_bytes}",
                reason=TOO_LARGE,
            )

    async def StatObject(
        self, request: storage_pb2.StatObjectRequest, context: grpc.aio.ServicerContext
    ) -> storage_pb2.ObjectInfo:
        key = keys.parse_key(request.key)
        return object_info(await self._store.stat(str(key)))

    async def DeleteObject(
        self,
        request: storage_pb2.DeleteObjectRequest,
        context: grpc.aio.ServicerContext,
    ) -> storage_pb2.DeleteObjectResponse:
        key = keys.parse_key(request.key)
        deleted = await self._store.delete(str(key))
        logger.info("object deleted", extra={"key": str(key), "existed": deleted})
        return storage_pb2.DeleteObjectResponse(deleted=int(deleted))

    async def DeletePrefix(
        self,
        request: storage_pb2.DeletePrefixRequest,
        context: grpc.aio.ServicerContext,
    ) -> storage_pb2.DeleteObjectResponse:
        keys.parse_prefix(request.prefix)
        deleted = await self._store.delete_prefix(request.prefix)
        logger.info(
            "prefix deleted", extra={"prefix": request.prefix, "deleted": deleted}
        )
        return storage_pb2.DeleteObjectResponse(deleted=deleted)

    async def PresignGet(
        self,
        request: storage_pb2.PresignGetRequest,
        context: grpc.aio.ServicerContext,
    ) -> storage_pb2.PresignedUrl:
        key = keys.parse_key(request.key)
        ttl = self._ttl(request)
        # A URL to nothing would only fail later in a browser; say so now.
        info = await self._store.stat(str(key))
        file_name = (
            keys.sanitize_file_name(request.download_file_name)
            if request.download_file_name
            else key.file_name
        )
        content_type = _content_type(request.content_type, default=info.content_type)
        signed = self._store.presign(
            "GET",
            str(key),
            ttl_seconds=ttl,
            response_headers={
                "response-content-disposition": content_disposition(file_name),
                "response-content-type": content_type,
            },
        )
        return presigned_url(signed)

    async def PresignPut(
        self,
        request: storage_pb2.PresignPutRequest,
        context: grpc.aio.ServicerContext,
    ) -> storage_pb2.PresignedUrl:
        key = keys.parse_key(request.key)
        if key.area is not keys.Area.UPLOADS:
            raise errors.InvalidArgument(
                "presigned uploads may only target uploads/ keys",
                field_violations=[("key", "must be in the uploads area")],
            )
        ttl = self._ttl(request)
        content_type = _content_type(request.content_type)
        signed = self._store.presign("PUT", str(key), ttl_seconds=ttl)
        url = presigned_url(signed)
        url.headers["Content-Type"] = content_type
        return url

    def _ttl(
        self, request: storage_pb2.PresignGetRequest | storage_pb2.PresignPutRequest
    ) -> int:
        """Whole seconds the URL lives; refused before signing when too long."""
        if not request.HasField("expires_in"):
            return max(1, int(self._default_ttl))
        seconds = _seconds(request.expires_in)
        if seconds <= 0:
            raise errors.InvalidArgument(
                "expires_in must be positive",
                field_violations=[("expires_in", "must be positive")],
            )
        if seconds > self._max_ttl:
            raise errors.InvalidArgument(
                f"expires_in of {seconds:g}s is longer than the allowed "
                f"{self._max_ttl:g}s (S3 allows at most 7 days)",
                field_violations=[("expires_in", "too long")],
            )
        return max(1, math.ceil(seconds))


def _describe_span(key: str, size: int) -> None:
    """The object on the current (gRPC server) span, when it records."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({"mutate.storage.key": key, "mutate.storage.size": size})


def _declared_sha256(value: str) -> str:
    """A declared hash in the form we record it (lower-case hex), or ""."""
    lowered = value.lower()
    if lowered and not _SHA256_HEX.fullmatch(lowered):
        raise errors.InvalidArgument(
            "sha256 must be 64 hex digits",
            field_violations=[("header.sha256", "hex SHA-256 of the content")],
        )
    return lowered


def _seconds(duration: duration_pb2.Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


async def _chunks(
    requests: AsyncIterator[storage_pb2.PutObjectRequest | memoryview],
) -> AsyncIterator[bytes | memoryview]:
    async for request in requests:
        if isinstance(request, memoryview):
            if request:
                yield request
            continue
        if request.WhichOneof("part") != "chunk":
            raise errors.InvalidArgument(
                "only the first PutObject message may carry a header",
                field_violations=[("header", "repeated")],
            )
        if request.chunk:
            yield request.chunk


def add_storage_service(servicer: StorageService, server: Any) -> None:
    """The generated registration, with the chunk streams framed by hand.

    Method names, message types and the reflection/health entries stay the
    generated ones; only PutObject's request deserializer and GetObject's
    response serializer are swapped for their `ChunkFrames` versions.
    """
    generated = _RegisteredHandlers()
    storage_pb2_grpc.add_StorageServiceServicer_to_server(servicer, generated)
    handlers = dict(generated.handlers)
    handlers["PutObject"] = handlers["PutObject"]._replace(
        request_deserializer=PUT_CHUNKS.deserialize
    )
    handlers["GetObject"] = handlers["GetObject"]._replace(
        response_serializer=GET_CHUNKS.serialize
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(generated.service, handlers),)
    )
    server.add_registered_method_handlers(generated.service, handlers)


class _RegisteredHandlers:
    """Stands in for a server to collect what generated code registers."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, generic_handlers: Any) -> None:
        pass

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, Any]
    ) -> None:
        self.service = service
        self.handlers = handlers
