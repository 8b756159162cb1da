"""Async client of the storage service, for gateway, transformer and notifier.

Wraps the generated `StorageService` stub: bytes and async byte streams go
out in 1 MiB chunks (framed by `mutate.common.chunk_frames`, which saves the
copies protobuf would make of bulk bytes), answers come back as frozen
dataclasses, and every failed call is translated once (`_translate`) into
the mutate.common.errors tree, so callers handle `NotFound`, retry on
`Unavailable` and so on::

    async with StorageClient("127.0.0.1:50052") as storage:
        info = await storage.put_bytes(key, data, "text/csv")
        url = await storage.presign_get(key, download_file_name="report.csv")
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import enum
import hashlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Mapping
from types import TracebackType
from typing import Self

import grpc
from google.protobuf import duration_pb2

from mutate.common import errors
from mutate.common.chunk_frames import ChunkFrames
from mutate.common.grpc_server import DEFAULT_MAX_MESSAGE_BYTES
from mutate.v1 import storage_pb2, storage_pb2_grpc

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
# Content above this is hashed in a thread rather than on the event loop
# (put_bytes here, and callers that declare a file's hash).
HASH_INLINE_BYTES = 256 * 1024
DEFAULT_TIMEOUT = 30.0
DEFAULT_STREAM_TIMEOUT = 600.0

# The chunk messages of the two streaming calls, framed by hand on both ends.
PUT_CHUNKS = ChunkFrames(storage_pb2.PutObjectRequest, "chunk")
GET_CHUNKS = ChunkFrames(storage_pb2.GetObjectResponse, "chunk")
_SERVICE = storage_pb2.DESCRIPTOR.services_by_name["StorageService"].full_name


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    """A stored object as the storage service reports it."""

    key: str
    size: int
    sha256: str
    content_type: str
    last_modified: datetime.datetime | None
    etag: str
    metadata: Mapping[str, str]

    @classmethod
    def from_proto(cls, message: storage_pb2.ObjectInfo) -> ObjectInfo:
        modified = None
        if message.HasField("last_modified"):
            modified = message.last_modified.ToDatetime(tzinfo=datetime.UTC)
        return cls(
            key=message.key,
            size=message.size,
            sha256=message.sha256,
            content_type=message.content_type,
            last_modified=modified,
            etag=message.etag,
            metadata=dict(message.metadata),
        )


@dataclasses.dataclass(frozen=True)
class PresignedUrl:
    """A URL a client can use without credentials until `expires_at`."""

    url: str
    method: str
    expires_at: datetime.datetime
    # Headers the client must send with the request (e.g. Content-Type).
    headers: Mapping[str, str]

    @classmethod
    def from_proto(cls, message: storage_pb2.PresignedUrl) -> PresignedUrl:
        return cls(
            url=message.url,
            method=message.method,
            expires_at=message.expire_time.ToDatetime(tzinfo=datetime.UTC),
            headers=dict(message.headers),
        )


class ClientState(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


@contextlib.contextmanager
def _translate(what: str) -> Iterator[None]:
    try:
        yield
    except grpc.RpcError as exc:
        raise errors.from_rpc_error(exc, what=what) from exc


def _duration(seconds: float | None) -> duration_pb2.Duration | None:
    if seconds is None:
        return None
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(seconds * 1e9))
    return duration


class StorageClient:
    """One channel to the storage service; `close()` when done.

    Give an address (the client owns the channel) or an existing channel
    (the caller owns it). `timeout` bounds unary calls, `stream_timeout`
    whole puts and gets, in seconds.
    """

    def __init__(
        self,
        target: str | grpc.aio.Channel,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        stream_timeout: float = DEFAULT_STREAM_TIMEOUT,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        if isinstance(target, str):
            self._channel = grpc.aio.insecure_channel(
                target,
                options=[
                    ("grpc.max_receive_message_length", DEFAULT_MAX_MESSAGE_BYTES),
                    ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
                ],
            )
            self._owns_channel = True
        else:
            self._channel = target
            self._owns_channel = False
        self._stub = storage_pb2_grpc.StorageServiceStub(self._channel)
        self._put_object = self._channel.stream_unary(
            f"/{_SERVICE}/PutObject",
            request_serializer=PUT_CHUNKS.serialize,
            response_deserializer=storage_pb2.ObjectInfo.FromString,
        )
        self._get_object = self._channel.unary_stream(
            f"/{_SERVICE}/GetObject",
            request_serializer=storage_pb2.GetObjectRequest.SerializeToString,
            response_deserializer=GET_CHUNKS.deserialize,
        )
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self.chunk_bytes = chunk_bytes
        self.state = ClientState.OPEN

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self.state is ClientState.CLOSED:
            return
        self.state = ClientState.CLOSED
        if self._owns_channel:
            await self._channel.close()

    def _check_open(self) -> None:
        if self.state is ClientState.CLOSED:
            raise errors.FailedPrecondition("storage client is closed")

    # --- put ---------------------------------------------------------------

    async def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        *,
        max_bytes: int = 0,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store `data` under `key`; returns its size and SHA-256.

        The size and hash travel in the header, so the service can stream a
        large object straight to the store and refuse a corrupted transfer.
        """

        async def chunks() -> AsyncIterator[memoryview]:
            # Slices of a view: the frame around each is the only copy.
            view = memoryview(data)
            for start in range(0, len(view), self.chunk_bytes):
                yield view[start : start + self.chunk_bytes]

        if len(data) > HASH_INLINE_BYTES:
            # hashlib drops the GIL: a large buffer is hashed off the loop.
            sha256 = await asyncio.to_thread(_sha256_hex, data)
        else:
            sha256 = _sha256_hex(data)
        return await self.put_stream(
            key,
            chunks(),
            content_type,
            max_bytes=max_bytes,
            metadata=metadata,
            size=len(data),
            sha256=sha256,
        )

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes] | AsyncIterable[memoryview],
        content_type: str = "application/octet-stream",
        max_bytes: int = 0,
        *,
        metadata: Mapping[str, str] | None = None,
        size: int = 0,
        sha256: str = "",
    ) -> ObjectInfo:
        """Store a stream of any length in constant memory.

        `max_bytes` (0: the service's own limit) refuses a longer stream with
        InvalidArgument; nothing is stored then. `size` and `sha256`, when the
        caller knows them, are checked by the service against what arrives.
        """
        self._check_open()
        header = storage_pb2.PutObjectHeader(
            key=key,
            content_type=content_type,
            max_bytes=max_bytes,
            metadata=dict(metadata or {}),
            size=size,
            sha256=sha256,
        )

        call = self._put_object(timeout=self.stream_timeout)
        try:
            await call.write(storage_pb2.PutObjectRequest(header=header))
            async for chunk in _rechunk(chunks, self.chunk_bytes):
                await call.write(PUT_CHUNKS.frame(chunk))
            await call.done_writing()
        except (grpc.RpcError, asyncio.InvalidStateError):
            # The service ended the call early (e.g. over max_bytes); its
            # status, read below, says why. Iterating a request generator
            # instead would report only "Internal error from Core".
            pass
        except BaseException:
            call.cancel()
            raise
        with _translate("storage"):
            reply = await call
        return ObjectInfo.from_proto(reply)

    # --- get ---------------------------------------------------------------

    async def get_bytes(self, key: str, max_bytes: int = 0) -> bytes:
        """The whole object; FailedPrecondition when over `max_bytes` (0: any)."""
        async with self._open(key, max_bytes) as (_, payloads):
            # Views of the received frames: joining them is the one copy.
            parts = [payload async for payload in payloads]
        return b"".join(parts)

    async def get_stream(self, key: str, *, max_bytes: int = 0) -> AsyncIterator[bytes]:
        """The object's content in chunks, verified by the service as it goes.

        A corrupted object ends the iteration with DataLoss.
        """
        async with self.open_stream(key, max_bytes=max_bytes) as (_, chunks):
            async for chunk in chunks:
                yield chunk

    @contextlib.asynccontextmanager
    async def open_stream(
        self, key: str, *, max_bytes: int = 0
    ) -> AsyncIterator[tuple[ObjectInfo, AsyncIterator[bytes]]]:
        """The object's info first (size, type), then its chunks.

        For callers that need the size before the content, e.g. to send a
        Content-Length header.
        """
        async with self._open(key, max_bytes) as (info, payloads):
            yield info, _as_bytes(payloads)

    @contextlib.asynccontextmanager
    async def _open(
        self, key: str, max_bytes: int
    ) -> AsyncIterator[tuple[ObjectInfo, AsyncIterator[bytes | memoryview]]]:
        self._check_open()
        call = self._get_object(
            storage_pb2.GetObjectRequest(key=key, max_bytes=max_bytes),
            timeout=self.stream_timeout,
        )
        try:
            with _translate("storage"):
                first = await call.read()
            if (
                first is grpc.aio.EOF
                or isinstance(first, memoryview)
                or first.WhichOneof("part") != "info"
            ):
                raise errors.Internal(f"storage sent no info for {key!r}")
            yield ObjectInfo.from_proto(first.info), _read_payloads(call)
        finally:
            call.cancel()

    # --- the rest ------------------------------------------------------------

    async def stat(self, key: str) -> ObjectInfo:
        self._check_open()
        with _translate("storage"):
            reply = await self._stub.StatObject(
                storage_pb2.StatObjectRequest(key=key), timeout=self.timeout
            )
        return ObjectInfo.from_proto(reply)

    async def delete(self, key: str) -> int:
        """Delete one object; returns 1, or 0 when there was none."""
        self._check_open()
        with _translate("storage"):
            reply = await self._stub.DeleteObject(
                storage_pb2.DeleteObjectRequest(key=key), timeout=self.timeout
            )
        return int(reply.deleted)

    async def delete_prefix(self, prefix: str) -> int:
        """Delete everything under `area/org/owner/`; returns how many."""
        self._check_open()
        with _translate("storage"):
            reply = await self._stub.DeletePrefix(
                storage_pb2.DeletePrefixRequest(prefix=prefix),
                timeout=self.stream_timeout,
            )
        return int(reply.deleted)

    async def presign_get(
        self,
        key: str,
        expires_in: float | None = None,
        download_file_name: str = "",
        content_type: str = "",
    ) -> PresignedUrl:
        """A download URL; `expires_in` seconds (None: the service default)."""
        self._check_open()
        request = storage_pb2.PresignGetRequest(
            key=key,
            expires_in=_duration(expires_in),
            download_file_name=download_file_name,
            content_type=content_type,
        )
        with _translate("storage"):
            reply = await self._stub.PresignGet(request, timeout=self.timeout)
        return PresignedUrl.from_proto(reply)

    async def presign_put(
        self,
        key: str,
        expires_in: float | None = None,
        content_type: str = "",
    ) -> PresignedUrl:
        """An upload URL for an `uploads/` key; send `headers` with the PUT."""
        self._check_open()
        request = storage_pb2.PresignPutRequest(
            key=key, expires_in=_duration(expires_in), content_type=content_type
        )
        with _translate("storage"):
            reply = await self._stub.PresignPut(request, timeout=self.timeout)
        return PresignedUrl.from_proto(reply)

    async def verify_upload(
        self,
        key: str,
        *,
        max_bytes: int,
        content_types: tuple[str, ...] = (),
    ) -> ObjectInfo:
        """Check a presigned upload after the fact; delete it when refused.

        A presigned PUT cannot cap size or type, so the gateway calls this
        before using an upload: over `max_bytes`, or a content type outside
        `content_types` (when given), the object is deleted and the call
        fails with FailedPrecondition.
        """
        info = await self.stat(key)
        problem = ""
        if info.size > max_bytes:
            problem = f"is {info.size} bytes, over the limit of {max_bytes}"
        elif content_types and _media_type(info.content_type) not in content_types:
            problem = f"has content type {info.content_type!r}"
        if not problem:
            return info
        logger.warning("refusing upload", extra={"key": key, "problem": problem})
        with contextlib.suppress(errors.NotFound):
            await self.delete(key)
        raise errors.FailedPrecondition(
            f"upload {key!r} {problem}", reason="UPLOAD_REFUSED"
        )


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


async def _read_payloads(
    call: grpc.aio.UnaryStreamCall,
) -> AsyncIterator[bytes | memoryview]:
    """Chunk payloads: views of the frames (GET_CHUNKS), or bytes from a
    frame that protobuf had to parse."""
    while True:
        with _translate("storage"):
            message = await call.read()
        if message is grpc.aio.EOF:
            return
        if isinstance(message, memoryview):
            yield message
        elif message.WhichOneof("part") == "chunk":
            yield message.chunk
        else:
            raise errors.Internal("storage sent a second info message")


async def _as_bytes(
    payloads: AsyncIterator[bytes | memoryview],
) -> AsyncIterator[bytes]:
    async for payload in payloads:
        yield payload if isinstance(payload, bytes) else bytes(payload)


async def _rechunk(
    chunks: AsyncIterable[bytes] | AsyncIterable[memoryview], size: int
) -> AsyncIterator[bytes | memoryview]:
    """Pieces of at most `size` bytes, so no message nears gRPC's limit."""
    async for chunk in chunks:
        if len(chunk) <= size:
            yield chunk
            continue
        view = memoryview(chunk)
        for start in range(0, len(view), size):
            yield view[start : start + size]


__all__ = [
    "CHUNK_BYTES",
    "HASH_INLINE_BYTES",
    "ClientState",
    "ObjectInfo",
    "PresignedUrl",
    "StorageClient",
]
