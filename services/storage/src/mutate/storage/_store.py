"""The adapter around the `minio` client: the only code that talks to S3.

The minio client is synchronous, so every call runs in a bounded thread pool
and the event loop never blocks. `_translate` is the one place where minio,
urllib3 and socket errors become domain errors: a missing object is NotFound,
an unreachable store Unavailable (callers retry), refused credentials a
FailedPrecondition naming the setting to fix.

Integrity: the SHA-256 of every object is computed while it streams in and
stored as user metadata (`x-amz-meta-sha256`); gets recompute it and end with
DataLoss on a mismatch. S3 wants metadata before the body. A sender that
holds the bytes declares their SHA-256 and size in the header: the object
then goes to the store as one PUT of that length while it arrives (see
`_signed.StreamingPut`; above MUTATE_STORAGE_SINGLE_PUT_MAX_BYTES as a
multipart upload, two parts in flight), and a stream that turns out not to
match is cut off before its last bytes, so nothing is stored. Without a
declared hash, objects that fit in one part (the common case) are buffered,
hashed and sent in one PUT with the hash; larger ones stream as a multipart
upload and get the hash afterwards by a server-side self-copy with replaced
metadata, guarded by the ETag so a concurrent overwrite is never stamped with
our hash. We chose this over spooling to disk (doubles the latency of large
puts) and over sidecar objects (two keys to keep consistent, visible under
every prefix).
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import dataclasses
import datetime
import email.utils
import hashlib
import io
import logging
import math
import re
import threading
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import urllib3
from minio import Minio
from minio.commonconfig import REPLACE, CopySource, Filter
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, S3Error, ServerError
from minio.lifecycleconfig import (
    AbortIncompleteMultipartUpload,
    Expiration,
    LifecycleConfig,
    Rule,
)

from mutate.common import errors
from mutate.storage._pipe import ChunkPipe, PipeClosed
from mutate.storage._signed import StreamingPut
from mutate.storage.settings import Endpoint, ProviderConfig

logger = logging.getLogger(__name__)

T = TypeVar("T")

SHA256_META = "sha256"
_META_PREFIX = "x-amz-meta-"
_META_KEY = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_MAX_METADATA_BYTES = 2048
_DEFAULT_CONTENT_TYPE = "application/octet-stream"
TOO_LARGE = "OBJECT_TOO_LARGE"
CONTENT_MISMATCH = "CONTENT_MISMATCH"
# Parts in flight at once for a stream with a declared hash: receiving the
# next part overlaps sending the last. Memory is (this + 1) parts per put.
_PARALLEL_PARTS = 2
# Chunks a get reads (and hashes) ahead of its caller; memory per large get
# is this many chunks.
_READ_AHEAD = 3

_NOT_FOUND = {"NoSuchKey", "NoSuchObject", "NoSuchVersion", "ResourceNotFound"}
_RETRYABLE = {
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "OperationAborted",
}


@dataclasses.dataclass(frozen=True)
class StoredObject:
    """What the store knows about one object."""

    key: str
    size: int
    sha256: str
    content_type: str
    last_modified: datetime.datetime | None
    etag: str
    metadata: dict[str, str]


@dataclasses.dataclass(frozen=True)
class Presigned:
    """A signed URL and what the client must send with it."""

    url: str
    method: str
    expires_at: datetime.datetime
    headers: dict[str, str]


@dataclasses.dataclass(frozen=True)
class StoreOptions:
    """Tuning of the adapter (from StorageSettings)."""

    part_bytes: int
    chunk_bytes: int
    # Declared puts up to this size stream as one PUT (0: never).
    single_put_bytes: int
    io_threads: int
    connect_timeout: float
    read_timeout: float
    retries: int
    retry_backoff: float


def check_metadata(metadata: collections.abc.Mapping[str, str]) -> dict[str, str]:
    """User metadata S3 can carry as headers: ASCII, small, not ours."""
    out: dict[str, str] = {}
    total = 0
    for raw_key, value in metadata.items():
        key = raw_key.lower()
        if not _META_KEY.fullmatch(key) or key == SHA256_META:
            raise errors.InvalidArgument(
                f"metadata key {raw_key!r} is not allowed",
                field_violations=[("metadata", "keys: a-z, 0-9, - (not sha256)")],
            )
        if not all(" " <= c <= "~" for c in value):
            raise errors.InvalidArgument(
                f"metadata value of {raw_key!r} must be printable ASCII",
                field_violations=[("metadata", "printable ASCII values only")],
            )
        total += len(key) + len(value)
        out[key] = value
    if total > _MAX_METADATA_BYTES:
        raise errors.InvalidArgument(
            f"metadata is {total} bytes; at most {_MAX_METADATA_BYTES}",
            field_violations=[("metadata", "too large")],
        )
    return out


def content_disposition(file_name: str) -> str:
    """`attachment` with an ASCII fallback and the RFC 6266 UTF-8 name."""
    fallback = "".join(
        c if " " <= c <= "~" and c not in '"\\' else "_" for c in file_name
    )
    encoded = urllib.parse.quote(file_name, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def _from_headers(key: str, headers: Any) -> StoredObject:
    metadata: dict[str, str] = {}
    sha256 = ""
    for name, value in headers.items():
        lowered = name.lower()
        if not lowered.startswith(_META_PREFIX):
            continue
        meta_key = lowered[len(_META_PREFIX) :]
        if meta_key == SHA256_META:
            sha256 = value
        else:
            metadata[meta_key] = value
    modified = headers.get("last-modified")
    return StoredObject(
        key=key,
        size=int(headers.get("content-length", "0")),
        sha256=sha256,
        content_type=headers.get("content-type") or _DEFAULT_CONTENT_TYPE,
        last_modified=email.utils.parsedate_to_datetime(modified) if modified else None,
        etag=(headers.get("etag") or "").strip('"'),
        metadata=metadata,
    )


class ObjectReader:
    """An open GET: its info, then chunks read and hashed off the event loop.

    A small object (one chunk) is read, hashed and released in the same
    thread call as the GET. A larger one is pumped by one pool thread that
    reads and hashes up to `_READ_AHEAD` chunks ahead of the caller, so the
    event loop only sends; the pump starts before the info goes out.
    """

    def __init__(
        self, store: S3Store, info: StoredObject, response: Any, chunk: int
    ) -> None:
        self.info = info
        self._store = store
        self._response = response
        self._chunk = chunk
        self._hasher = hashlib.sha256()
        self._taken = 0
        self._first = b""
        self._first_was_all = False
        self._pumped: asyncio.Queue[bytes | BaseException] | None = None
        self._pump: asyncio.Future[None] | None = None
        self._room = threading.Semaphore(_READ_AHEAD)
        self._stopped = False
        # A read still running in a thread must end before the response is
        # released from another one.
        self._lock = threading.Lock()

    def _read(self) -> bytes:
        with self._lock:
            if self._response is None:
                return b""
            data: bytes = self._response.read(self._chunk)
            self._taken += len(data)
        return data

    def read_first(self) -> None:
        """In a pool thread: a small object whole (read, hashed, released)."""
        if self.info.size > self._chunk:
            return
        self._first = self._read()
        self._hasher.update(self._first)
        if self._taken >= self.info.size:
            self._first_was_all = True
            self.release()

    def start(self) -> None:
        """On the loop: start pumping a larger object."""
        if self._first_was_all or self._pump is not None:
            return
        loop = asyncio.get_running_loop()
        pumped: asyncio.Queue[bytes | BaseException] = asyncio.Queue()
        self._pumped = pumped
        self._pump = asyncio.ensure_future(
            self._store.run_transfer(self._run_pump, loop, pumped)
        )

    def _run_pump(
        self,
        loop: asyncio.AbstractEventLoop,
        pumped: asyncio.Queue[bytes | BaseException],
    ) -> None:
        """In a pool thread: read and hash until the end or `stop()`."""
        data = self._first
        while True:
            if not data:
                self._room.acquire()
                if self._stopped:
                    return
                try:
                    with self._store.translated():
                        data = self._read()
                except BaseException as exc:
                    loop.call_soon_threadsafe(pumped.put_nowait, exc)
                    return
                # hashlib drops the GIL on large buffers: the loop sends
                # the last chunk meanwhile.
                self._hasher.update(data)
            loop.call_soon_threadsafe(pumped.put_nowait, data)
            if not data:
                return
            data = b""

    def stop(self) -> None:
        """Let the pump end at its next chunk (the caller stopped reading)."""
        self._stopped = True
        self._room.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The content; DataLoss when size or SHA-256 differ from the record."""
        size = 0
        if self._first_was_all:
            size = len(self._first)
            if self._first:
                yield self._first
            self._verify(size, self._hasher.hexdigest())
            return
        self.start()
        assert self._pumped is not None
        try:
            while True:
                item = await self._pumped.get()
                if isinstance(item, BaseException):
                    raise item
                if not item:
                    break
                size += len(item)
                if size > self.info.size:
                    break
                self._room.release()
                yield item
        finally:
            self.stop()
        self._verify(size, self._hasher.hexdigest())

    def _verify(self, size: int, digest: str) -> None:
        if size != self.info.size:
            raise errors.DataLoss(
                f"object {self.info.key!r} read {size} bytes, expected {self.info.size}"
            )
        # TODO: objects written by presigned PUTs carry no recorded hash yet,
        # so only their size is checked; record it on their first read.
        if self.info.sha256 and digest != self.info.sha256:
            logger.error(
                "sha256 mismatch",
                extra={"key": self.info.key, "expected": self.info.sha256},
            )
            raise errors.DataLoss(
                f"object {self.info.key!r} does not match its recorded SHA-256"
            )

    async def close(self) -> None:
        if self._pump is not None:
            self.stop()
            # The connection is released below once a read in flight ends.
            self._pump.add_done_callback(_retrieve)
        if self._response is not None:
            await self._store.run(self.release)

    def release(self) -> None:
        """Give the connection back (once; waits for a read in flight)."""
        with self._lock:
            response, self._response = self._response, None
        if response is not None:
            _release(response)


async def _feed(
    pipe: ChunkPipe,
    upload: asyncio.Future[str],
    head: list[bytes | memoryview],
    chunks: AsyncIterator[bytes | memoryview],
    counter: _Counter,
) -> str:
    """Write the stream into the pipe an upload thread reads; its ETag."""
    try:
        while head:
            await pipe.write(head.pop(0))
        async for chunk in chunks:
            counter.add(chunk)
            await pipe.write(chunk)
        pipe.close()
        return await upload
    except PipeClosed:
        # The upload failed first; its error says why.
        await upload
        raise errors.Internal("upload ended early") from None
    except BaseException as exc:
        pipe.abort(_Aborted(str(exc)))
        with contextlib.suppress(Exception):
            await asyncio.shield(upload)
        raise


def _held_back(pipe: ChunkPipe, size: int) -> Iterator[bytes | memoryview]:
    """The pipe's content, its last piece only once the end-of-data check
    has passed: a stream that fails it never completes the request's body."""
    pending = pipe.read_chunk(size)
    while pending:
        # At the end of data this read runs the check (and raises on failure)
        # before the last piece is handed over.
        following = pipe.read_chunk(size)
        yield pending
        pending = following


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark an abandoned read's outcome as seen (no "never retrieved" noise)."""
    if not future.cancelled():
        future.exception()


def _headers(
    values: collections.abc.Mapping[str, str],
) -> dict[str, str | list[str] | tuple[str]]:
    """minio's header-dict type, from plain strings."""
    return dict(values)


def _release(response: Any) -> None:
    response.close()
    response.release_conn()


def _minio(
    endpoint: Endpoint, config: ProviderConfig, http: urllib3.PoolManager | None
) -> Minio:
    # The region is always given, so minio never calls GetBucketLocation:
    # presigning stays pure CPU and works for a host we cannot reach.
    client = Minio(
        endpoint.host,
        access_key=config.access_key,
        secret_key=config.secret_key,
        secure=endpoint.secure,
        region=config.region,
        http_client=http,
    )
    if config.addressing_style == "virtual":
        client.enable_virtual_style_endpoint()  # type: ignore[no-untyped-call]
    elif config.addressing_style == "path":
        client.disable_virtual_style_endpoint()  # type: ignore[no-untyped-call]
    return client


class S3Store:
    """Async operations on one bucket, through the minio client."""

    def __init__(self, *, config: ProviderConfig, options: StoreOptions) -> None:
        self.config = config
        self.options = options
        self.bucket = config.bucket
        self._executor = ThreadPoolExecutor(
            max_workers=options.io_threads, thread_name_prefix="s3"
        )
        # Streaming puts and gets hold a thread for as long as their caller
        # streams; their own pool keeps stalled callers from starving stats,
        # deletes and small objects.
        # TODO: a stalled caller keeps its thread until its own deadline, so
        # io_threads stalled callers make further large puts and gets wait;
        # an idle timeout on streams would free them sooner.
        self._transfers = ThreadPoolExecutor(
            max_workers=options.io_threads, thread_name_prefix="s3-transfer"
        )
        retry = urllib3.Retry(
            total=options.retries,
            backoff_factor=options.retry_backoff,
            status_forcelist=[500, 502, 503, 504],
        )
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(
                connect=options.connect_timeout, read=options.read_timeout
            ),
            maxsize=2 * options.io_threads,
            retries=retry,
        )
        self._client = _minio(config.endpoint, config, self._http)
        # A one-time body can only be sent again when it never left: only
        # failures to connect are retried.
        connect_only = urllib3.Retry(
            total=options.retries,
            connect=options.retries,
            read=0,
            redirect=0,
            status=0,
            other=0,
            backoff_factor=options.retry_backoff,
        )
        self._streaming = StreamingPut(
            config.endpoint, config, self._http, retries=connect_only
        )
        # Only signs URLs; never opens a connection.
        self._signer = _minio(config.public_endpoint, config, None)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._transfers.shutdown(wait=False, cancel_futures=True)
        self._http.clear()

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking call in the pool, its errors translated."""
        return await self._run_in(self._executor, fn, *args, **kwargs)

    async def run_transfer(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a call that streams for as long as its caller does."""
        return await self._run_in(self._transfers, fn, *args)

    async def _run_in(
        self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        loop = asyncio.get_running_loop()
        with self._translate():
            return await loop.run_in_executor(pool, lambda: fn(*args, **kwargs))

    def translated(self) -> contextlib.AbstractContextManager[None]:
        """Errors inside become domain errors (for code already in a thread)."""
        return self._translate()

    @contextlib.contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except errors.MutateError:
            raise
        except S3Error as exc:
            raise self._s3_error(exc) from exc
        except (ServerError, InvalidResponseError) as exc:
            raise errors.Unavailable(f"object store failed: {exc}") from exc
        except (TimeoutError, urllib3.exceptions.HTTPError, OSError) as exc:
            raise errors.Unavailable(
                f"object store {self.config.endpoint} unreachable: {type(exc).__name__}"
            ) from exc

    def _s3_error(self, exc: S3Error) -> errors.MutateError:
        code = exc.code or ""
        cfg = self.config
        if code in _NOT_FOUND:
            return errors.NotFound(f"object {exc.object_name!r} not found")
        if code == "NoSuchBucket":
            return errors.FailedPrecondition(
                f"bucket {cfg.bucket!r} does not exist: create it, fix "
                f"{cfg.bucket_setting}, or set MUTATE_STORAGE_CREATE_BUCKET=true",
                reason="STORAGE_BUCKET_MISSING",
            )
        if code == "InvalidAccessKeyId":
            return errors.FailedPrecondition(
                f"the object store does not know the access key: "
                f"check {cfg.access_key_setting}",
                reason="STORAGE_CREDENTIALS",
            )
        if code == "SignatureDoesNotMatch":
            return errors.FailedPrecondition(
                f"the object store refused our signature: "
                f"check {cfg.secret_key_setting}",
                reason="STORAGE_CREDENTIALS",
            )
        if code in ("AccessDenied", "InvalidToken", "ExpiredToken"):
            return errors.FailedPrecondition(
                f"the object store denied access to bucket {cfg.bucket!r}: check "
                f"{cfg.access_key_setting}, {cfg.secret_key_setting} and the "
                "key's permissions",
                reason="STORAGE_CREDENTIALS",
            )
        if code == "PreconditionFailed":
            return errors.Conflict("the object changed while it was being stored")
        if code in _RETRYABLE:
            return errors.Unavailable(f"object store busy: {code}")
        return errors.Internal(f"object store error {code}: {exc.message}")

    # --- bucket --------------------------------------------------------------

    async def ensure_bucket(self, *, create: bool) -> bool:
        """Check the bucket (and so the credentials); create it if allowed."""
        if await self.run(self._client.bucket_exists, self.bucket):
            return False
        if not create:
            raise errors.FailedPrecondition(
                f"bucket {self.bucket!r} does not exist and "
                "MUTATE_STORAGE_CREATE_BUCKET is false"
            )
        await self.run(self._client.make_bucket, self.bucket)
        logger.info("bucket created", extra={"bucket": self.bucket})
        return True

    async def set_lifecycle(self, retention: dict[str, float]) -> None:
        """Expire each area after its retention, in whole days (S3's unit)."""
        rules = [
            Rule(
                "Enabled",
                rule_filter=Filter(prefix=f"{area}/"),
                rule_id=f"mutate-{area}",
                expiration=Expiration(days=max(1, math.ceil(seconds / 86400))),
                abort_incomplete_multipart_upload=AbortIncompleteMultipartUpload(
                    days_after_initiation=1
                ),
            )
            for area, seconds in retention.items()
            if seconds > 0
        ]
        if rules:
            config = LifecycleConfig(rules)
            await self.run(self._client.set_bucket_lifecycle, self.bucket, config)
        else:
            await self.run(self._client.delete_bucket_lifecycle, self.bucket)

    # --- objects -------------------------------------------------------------

    async def stat(self, key: str) -> StoredObject:
        result = await self.run(self._client.stat_object, self.bucket, key)
        return _from_headers(key, result.metadata)

    async def open(self, key: str) -> ObjectReader:
        reader = await self.run(self._open, key)
        reader.start()
        return reader

    def _open(self, key: str) -> ObjectReader:
        # A small object (most inputs and outputs) is read in the same
        # thread call: it then needs no other hop to a thread.
        response = self._client.get_object(self.bucket, key)
        info = _from_headers(key, response.headers)
        reader = ObjectReader(self, info, response, self.options.chunk_bytes)
        try:
            reader.read_first()
        except BaseException:
            reader.release()
            raise
        return reader

    async def delete(self, key: str) -> bool:
        """Remove one object; False when there was none."""
        try:
            await self.stat(key)
        except errors.NotFound:
            return False
        await self.run(self._client.remove_object, self.bucket, key)
        return True

    async def delete_prefix(
        self,
        prefix: str,
        *,
        older_than: datetime.datetime | None = None,
    ) -> int:
        """Remove every object under `prefix` (last modified before a time)."""
        return await self.run(self._delete_listed, prefix, older_than)

    def _delete_listed(self, prefix: str, older_than: datetime.datetime | None) -> int:
        listed = self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
        names = (
            DeleteObject(obj.object_name)
            for obj in listed
            if obj.object_name
            and (
                older_than is None
                or (obj.last_modified is not None and obj.last_modified < older_than)
            )
        )
        counted = _Counted(names)
        # remove_objects batches 1000 names a request and yields only failures.
        failures = list(self._client.remove_objects(self.bucket, counted))
        if failures:
            first = failures[0]
            raise errors.Unavailable(
                f"{len(failures)} objects under {prefix!r} were not deleted "
                f"(first: {first.name}: {first.code})"
            )
        return counted.count

    async def put(
        self,
        key: str,
        chunks: AsyncIterator[bytes | memoryview],
        *,
        content_type: str,
        metadata: dict[str, str],
        max_bytes: int,
        declared_size: int = 0,
        declared_sha256: str = "",
    ) -> StoredObject:
        """Store a stream; returns its size and SHA-256.

        `declared_size`/`declared_sha256` (0/"" when unknown) are the
        sender's word for what the stream holds; a stream that differs is
        refused (CONTENT_MISMATCH) and nothing is stored.
        """
        counter = _Counter(
            key, max_bytes, declared_size=declared_size, declared_sha256=declared_sha256
        )
        if (
            declared_sha256
            and self.options.chunk_bytes
            < declared_size
            <= self.options.single_put_bytes
        ):
            return await self._put_streamed(
                key, chunks, counter, content_type, metadata
            )
        head: list[bytes | memoryview] = []
        part_bytes = self.options.part_bytes
        # Buffer for one PUT unless the sender already said it will not fit.
        if not (declared_sha256 and declared_size > part_bytes):
            while counter.size <= part_bytes:
                chunk = await anext(chunks, None)
                if chunk is None:
                    return await self.run(
                        self._put_buffered,
                        key,
                        b"".join(head),
                        counter,
                        content_type,
                        metadata,
                    )
                counter.add(chunk)
                head.append(chunk)
        return await self._put_large(key, head, chunks, counter, content_type, metadata)

    def _put_buffered(
        self,
        key: str,
        data: bytes,
        counter: _Counter,
        content_type: str,
        metadata: dict[str, str],
    ) -> StoredObject:
        """Hash, check and PUT in one go (in a pool thread: hashing is CPU)."""
        counter.hash(data)
        counter.check_complete()
        headers = {**metadata, SHA256_META: counter.sha256}
        result = self._client.put_object(
            self.bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type=content_type,
            metadata=_headers(headers),
        )
        return counter.stored(result.etag or "", content_type, metadata)

    async def _put_large(
        self,
        key: str,
        head: list[bytes | memoryview],
        chunks: AsyncIterator[bytes | memoryview],
        counter: _Counter,
        content_type: str,
        metadata: dict[str, str],
    ) -> StoredObject:
        hash_known = bool(counter.declared_sha256)
        initial = dict(metadata)
        if hash_known:
            initial[SHA256_META] = counter.declared_sha256
        # The upload thread hashes what it reads (off the event loop) and,
        # at the end of data, checks the stream against its declaration
        # before minio may complete the upload.
        pipe = ChunkPipe(
            capacity=self.options.chunk_bytes,
            on_data=counter.hash,
            on_end=counter.check_complete,
        )
        upload = asyncio.ensure_future(
            self.run_transfer(
                self._upload_from_pipe,
                key,
                pipe,
                content_type,
                initial,
                _PARALLEL_PARTS if hash_known else 1,
            )
        )
        etag = await _feed(pipe, upload, head, chunks, counter)
        if hash_known:
            return counter.stored(etag, content_type, metadata)
        return await self._record_sha256(key, etag, counter, content_type, metadata)

    async def _put_streamed(
        self,
        key: str,
        chunks: AsyncIterator[bytes | memoryview],
        counter: _Counter,
        content_type: str,
        metadata: dict[str, str],
    ) -> StoredObject:
        """One PUT of the declared length, sent while the stream arrives.

        The store ingests at its own pace from the first chunk on, with no
        part to fill and no per-part hash for the signature; the last piece
        waits for the declaration check (see `_held_back`).
        """
        pipe = ChunkPipe(
            capacity=self.options.chunk_bytes,
            on_data=counter.hash,
            on_end=counter.check_complete,
        )
        recorded = {**metadata, SHA256_META: counter.declared_sha256}
        headers = {f"{_META_PREFIX}{name}": value for name, value in recorded.items()}
        headers["Content-Type"] = content_type
        upload = asyncio.ensure_future(
            self.run_transfer(
                self._stream_from_pipe, key, pipe, counter.declared_size, headers
            )
        )
        etag = await _feed(pipe, upload, [], chunks, counter)
        return counter.stored(etag, content_type, metadata)

    def _stream_from_pipe(
        self, key: str, pipe: ChunkPipe, size: int, headers: dict[str, str]
    ) -> str:
        try:
            return self._streaming.put(
                self.bucket,
                key,
                _held_back(pipe, self.options.chunk_bytes),
                length=size,
                headers=headers,
            )
        finally:
            pipe.reader_done()

    def _upload_from_pipe(
        self,
        key: str,
        pipe: ChunkPipe,
        content_type: str,
        metadata: dict[str, str],
        parallel_parts: int,
    ) -> str:
        try:
            # minio holds up to parallel_parts parts (plus the one it is
            # reading) in memory; its pool blocks the reader beyond that.
            # The length stays unknown (-1) even when declared: minio then
            # reads until the end of data, so the pipe's end check runs
            # before the upload can complete.
            result = self._client.put_object(
                self.bucket,
                key,
                pipe,  # type: ignore[arg-type]
                -1,
                content_type=content_type,
                metadata=_headers(metadata),
                part_size=self.options.part_bytes,
                num_parallel_uploads=parallel_parts,
            )
        finally:
            pipe.reader_done()
        return result.etag or ""

    async def _record_sha256(
        self,
        key: str,
        etag: str,
        counter: _Counter,
        content_type: str,
        metadata: dict[str, str],
    ) -> StoredObject:
        headers = {
            **metadata,
            SHA256_META: counter.sha256,
            "Content-Type": content_type,
        }
        try:
            result = await self.run(
                self._client.copy_object,
                self.bucket,
                key,
                CopySource(self.bucket, key, match_etag=etag),
                metadata=headers,
                metadata_directive=REPLACE,
            )
        except errors.MutateError:
            # An object whose hash cannot be recorded must not look stored.
            logger.warning(
                "removing object whose sha256 was not recorded", extra={"key": key}
            )
            with contextlib.suppress(errors.MutateError):
                await self.run(self._client.remove_object, self.bucket, key)
            raise
        return counter.stored(result.etag or etag, content_type, metadata)

    # --- presigning ----------------------------------------------------------

    def presign(
        self,
        method: str,
        key: str,
        *,
        ttl_seconds: int,
        response_headers: dict[str, str] | None = None,
    ) -> Presigned:
        """Sign `method` on `key` for the public endpoint; pure CPU."""
        now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        with self._translate():
            url = self._signer.get_presigned_url(
                method,
                self.bucket,
                key,
                expires=datetime.timedelta(seconds=ttl_seconds),
                response_headers=_headers(response_headers or {}),
                request_date=now,
            )
        return Presigned(
            url=url,
            method=method,
            expires_at=now + datetime.timedelta(seconds=ttl_seconds),
            headers={},
        )


class _Aborted(Exception):
    """Raised inside minio's read loop so it abandons a multipart upload."""


class _Counted(collections.abc.Iterator[DeleteObject]):
    def __init__(self, items: collections.abc.Iterator[DeleteObject]) -> None:
        self._items = items
        self.count = 0

    def __next__(self) -> DeleteObject:
        item = next(self._items)
        self.count += 1
        return item


class _Counter:
    """Size and SHA-256 of a stream, with its size limit and declared content."""

    def __init__(
        self,
        key: str,
        max_bytes: int,
        *,
        declared_size: int = 0,
        declared_sha256: str = "",
    ) -> None:
        self.key = key
        self.max_bytes = max_bytes
        self.declared_size = declared_size
        self.declared_sha256 = declared_sha256
        self.size = 0
        self._hasher = hashlib.sha256()
        if declared_size > max_bytes:
            self._too_large()

    def add(self, chunk: bytes | memoryview) -> None:
        """Count a chunk as it arrives (hashing happens where it is read)."""
        self.size += len(chunk)
        if self.size > self.max_bytes:
            self._too_large()
        if self.declared_size and self.size > self.declared_size:
            raise self._mismatch(f"more than the declared {self.declared_size} bytes")

    def hash(self, data: bytes | memoryview) -> None:
        self._hasher.update(data)

    def check_complete(self) -> None:
        """At the end of the stream: does it hold what the sender declared?"""
        if self.declared_size and self.size != self.declared_size:
            raise self._mismatch(
                f"{self.size} bytes, not the declared {self.declared_size}"
            )
        if self.declared_sha256 and self.sha256 != self.declared_sha256:
            raise self._mismatch("content that does not match the declared sha256")

    def _too_large(self) -> None:
        raise errors.InvalidArgument(
            f"object {self.key!r} is larger than {self.max_bytes} bytes",
            field_violations=[("max_bytes", "stream exceeds the limit")],
            reason=TOO_LARGE,
        )

    def _mismatch(self, what: str) -> errors.InvalidArgument:
        return errors.InvalidArgument(
            f"object {self.key!r}: the stream carried {what}; nothing was stored",
            field_violations=[("header", "size or sha256 differ from the content")],
            reason=CONTENT_MISMATCH,
        )

    @property
    def sha256(self) -> str:
        return self._hasher.hexdigest()

    def stored(
        self, etag: str, content_type: str, metadata: dict[str, str]
    ) -> StoredObject:
        return StoredObject(
            key=self.key,
            size=self.size,
            sha256=self.sha256,
            content_type=content_type,
            last_modified=datetime.datetime.now(datetime.UTC),
            etag=etag.strip('"'),
            metadata=dict(metadata),
        )
