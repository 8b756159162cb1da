"""The storage service end to end, on the session SeaweedFS (signed requests)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import io
import os
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from mutate.common import errors, keys
from mutate.common.storage_client import StorageClient
from mutate.devstack.processes import ServiceProcess
from mutate.devstack.servers import S3Server
from mutate.v1 import storage_pb2, storage_pb2_grpc

from .conftest import StartStorage

MIB = 1024 * 1024

ODD_NAMES = [
    "my report.csv",
    "a+b=c.csv",
    "résumé déjà vu.csv",
    "données 😀🚀.json",
    "100% [draft] & co #1.csv",
]


def _proc_status(pid: int, field: str) -> int:
    """A number from /proc/PID/status (VmRSS, VmHWM in KiB; Threads)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


async def _pattern(total: int, chunk: int = MIB) -> AsyncIterator[bytes]:
    block = os.urandom(chunk)
    sent = 0
    while sent < total:
        piece = block[: min(chunk, total - sent)]
        sent += len(piece)
        yield piece


@pytest.mark.parametrize("name", ODD_NAMES)
async def test_storage_odd_file_names_round_trip(
    storage: StorageClient, s3_client: Any, bucket: str, name: str
) -> None:
    key = keys.output_key("org_1", "job_1", name)

    info = await storage.put_bytes(key, name.encode(), "text/csv")

    assert info.key == key
    assert await storage.get_bytes(key) == name.encode()
    # The store holds exactly that key (no escaping, no double encoding).
    listed = [o.object_name for o in s3_client.list_objects(bucket, recursive=True)]
    assert listed == [key]


async def test_storage_put_returns_size_and_sha256(storage: StorageClient) -> None:
    data = os.urandom(300_000)
    key = keys.input_key("org_1", "job_1", "in.bin")

    info = await storage.put_bytes(key, data, metadata={"rows": "12"})
    stat = await storage.stat(key)

    assert info.size == stat.size == len(data)
    assert info.sha256 == stat.sha256 == hashlib.sha256(data).hexdigest()
    assert stat.content_type == "application/octet-stream"
    assert stat.metadata == {"rows": "12"}
    assert stat.last_modified is not None


@pytest.mark.slow
async def test_storage_50mb_round_trip_keeps_memory_flat(
    storage: StorageClient, storage_process: ServiceProcess
) -> None:
    assert storage_process.pid is not None
    key = keys.output_key("org_1", "job_big", "big.bin")
    total = 50 * MIB
    # Warm up (thread pool, connection pool, allocator), then measure.
    await storage.put_bytes(keys.output_key("org_1", "w", "w.bin"), b"w" * MIB)
    rss_before = _proc_status(storage_process.pid, "VmRSS")

    sent = hashlib.sha256()

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in _pattern(total):
            sent.update(chunk)
            yield chunk

    info = await storage.put_stream(key, chunks())
    got = hashlib.sha256()
    size = 0
    async for chunk in storage.get_stream(key):
        got.update(chunk)
        size += len(chunk)
    peak = _proc_status(storage_process.pid, "VmHWM")

    assert info.size == size == total
    assert info.sha256 == got.hexdigest() == sent.hexdigest()
    # About two 5 MiB parts, minio's copies of them and gRPC's buffers
    # (measured ~30 MiB); holding the object would add 50 MiB at least.
    growth_mib = (peak - rss_before) / 1024
    assert growth_mib < 40, f"storage RSS grew {growth_mib:.1f} MiB for 50 MiB"


@pytest.mark.parametrize("size", [8, 3 * MIB + 5], ids=["one-chunk", "pumped"])
async def test_storage_get_detects_corruption(
    storage: StorageClient, s3_client: Any, bucket: str, size: int
) -> None:
    key = keys.output_key("org_1", "job_1", "out.csv")
    data = os.urandom(size)
    info = await storage.put_bytes(key, data, "text/csv")
    # Same size and recorded hash, last byte flipped: as if the disk rotted.
    rotten = data[:-1] + bytes([data[-1] ^ 1])
    s3_client.put_object(
        bucket, key, io.BytesIO(rotten), size, metadata={"sha256": info.sha256}
    )

    with pytest.raises(errors.DataLoss):
        await storage.get_bytes(key)


async def test_storage_gets_abandoned_midway_leave_nothing_behind(
    storage: StorageClient, storage_process: ServiceProcess
) -> None:
    assert storage_process.pid is not None
    key = keys.output_key("org_1", "job_1", "big.bin")
    # Large enough that flow control stops the sender long before the end.
    data = os.urandom(32 * MIB)
    await storage.put_bytes(key, data)
    assert await storage.get_bytes(key) == data
    threads_before = _proc_status(storage_process.pid, "Threads")

    for _ in range(20):
        async for _chunk in storage.get_stream(key):
            break

    # Every abandoned read stopped and gave its thread and connection back:
    # a full read still works and the pool did not grow past its steady size.
    assert await storage.get_bytes(key) == data
    await asyncio.sleep(0.5)
    # A leaked reader would hold its pool thread for good (20 of them).
    assert _proc_status(storage_process.pid, "Threads") <= threads_before + 10


async def test_storage_missing_object_is_not_found(storage: StorageClient) -> None:
    key = keys.output_key("org_1", "job_1", "nothing.csv")

    with pytest.raises(errors.NotFound):
        await storage.get_bytes(key)
    with pytest.raises(errors.NotFound):
        await storage.stat(key)
    with pytest.raises(errors.NotFound):
        await storage.presign_get(key)
    assert await storage.delete(key) == 0


@pytest.mark.parametrize(
    "key",
    ["output/org_1/job_1/../../x.csv", "/etc/passwd", "output/o/j/a\x01.csv", "x"],
)
async def test_storage_refuses_keys_outside_the_scheme(
    storage: StorageClient, key: str
) -> None:
    with pytest.raises(errors.InvalidArgument):
        await storage.put_bytes(key, b"x")
    with pytest.raises(errors.InvalidArgument):
        await storage.get_bytes(key)


async def test_storage_put_over_max_bytes_stores_nothing(
    storage: StorageClient, s3_client: Any, bucket: str
) -> None:
    small = keys.input_key("org_1", "job_1", "small.bin")
    large = keys.input_key("org_1", "job_1", "large.bin")

    with pytest.raises(errors.InvalidArgument):
        await storage.put_bytes(small, b"x" * 1000, max_bytes=999)
    with pytest.raises(errors.InvalidArgument):
        await storage.put_stream(large, _pattern(12 * MIB), max_bytes=7 * MIB)

    assert list(s3_client.list_objects(bucket, recursive=True)) == []


async def test_storage_declared_hash_streams_a_large_object_in_one_put(
    storage: StorageClient,
) -> None:
    # 12 MiB > the 5 MiB part size, but declared: one streamed PUT with the
    # hash recorded up front (a multipart ETag would end in "-<parts>").
    data = os.urandom(12 * MIB)
    key = keys.output_key("org_1", "job_1", "big.bin")

    info = await storage.put_bytes(key, data, metadata={"origin": "test"})

    stored = await storage.stat(key)
    assert info.sha256 == stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.size == len(data)
    assert stored.metadata == {"origin": "test"}
    assert "-" not in stored.etag
    assert await storage.get_bytes(key) == data


async def test_storage_declared_hash_over_the_single_put_limit_goes_multipart(
    start_storage: StartStorage, s3_server: S3Server, bucket: str
) -> None:
    process = start_storage(
        s3_server, bucket, env={"MUTATE_STORAGE_SINGLE_PUT_MAX_BYTES": "0"}
    )
    assert process.health_address is not None
    data = os.urandom(12 * MIB)
    key = keys.output_key("org_1", "job_1", "big.bin")

    async with StorageClient(process.health_address) as client:
        info = await client.put_bytes(key, data)
        stored = await client.stat(key)
        assert await client.get_bytes(key) == data

    assert info.sha256 == stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.etag.endswith("-3")


async def test_storage_speaks_plain_protobuf_to_generated_stubs(
    storage_process: ServiceProcess,
) -> None:
    # The service frames chunks by hand; a peer with generated stubs (or
    # grpcurl) must see ordinary messages both ways.
    assert storage_process.health_address is not None
    data = os.urandom(3 * MIB + 17)
    key = keys.output_key("org_1", "job_1", "plain.bin")
    async with grpc.aio.insecure_channel(storage_process.health_address) as channel:
        stub = storage_pb2_grpc.StorageServiceStub(channel)
        call = stub.PutObject()
        await call.write(
            storage_pb2.PutObjectRequest(
                header=storage_pb2.PutObjectHeader(key=key, content_type="x/y")
            )
        )
        for start in range(0, len(data), MIB):
            await call.write(
                storage_pb2.PutObjectRequest(chunk=data[start : start + MIB])
            )
        await call.done_writing()
        stored = await call

        replies = [
            r async for r in stub.GetObject(storage_pb2.GetObjectRequest(key=key))
        ]

    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert replies[0].WhichOneof("part") == "info"
    assert replies[0].info.size == len(data)
    assert b"".join(r.chunk for r in replies[1:]) == data


async def test_storage_a_stream_without_its_header_first_is_refused_as_such(
    storage_process: ServiceProcess, s3_client: Any, bucket: str
) -> None:
    # Refused on the first message while the client still writes 12 MiB:
    # the status must arrive as INVALID_ARGUMENT, never as INTERNAL.
    assert storage_process.health_address is not None
    chunk = os.urandom(MIB)
    async with grpc.aio.insecure_channel(storage_process.health_address) as channel:
        stub = storage_pb2_grpc.StorageServiceStub(channel)
        for first in (b"", chunk):
            for _ in range(5):
                call = stub.PutObject()
                with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError):
                    await call.write(storage_pb2.PutObjectRequest(chunk=first))
                    for _ in range(12):
                        await call.write(storage_pb2.PutObjectRequest(chunk=chunk))
                    await call.done_writing()
                with pytest.raises(grpc.RpcError) as refused:
                    await call
                assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
                assert "header" in (refused.value.details() or "")
    assert list(s3_client.list_objects(bucket, recursive=True)) == []


@pytest.mark.parametrize(
    ("size", "single_put"),
    [(1000, True), (12 * MIB, True), (12 * MIB, False)],
    ids=["buffered", "streamed-put", "multipart"],
)
@pytest.mark.parametrize("wrong", ["sha256", "size-short", "size-long"])
async def test_storage_content_unlike_its_declaration_stores_nothing(
    start_storage: StartStorage,
    s3_server: S3Server,
    s3_client: Any,
    bucket: str,
    size: int,
    single_put: bool,
    wrong: str,
) -> None:
    env = {} if single_put else {"MUTATE_STORAGE_SINGLE_PUT_MAX_BYTES": "0"}
    process = start_storage(s3_server, bucket, env=env)
    assert process.health_address is not None
    data = os.urandom(size)
    declared_size, declared_sha = size, hashlib.sha256(data).hexdigest()
    if wrong == "sha256":
        declared_sha = hashlib.sha256(b"something else").hexdigest()
    elif wrong == "size-short":
        declared_size = size - 1
    else:
        declared_size = size + 1

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, size, MIB):
            yield data[start : start + MIB]

    with pytest.raises(errors.InvalidArgument) as refused:
        async with StorageClient(process.health_address) as storage:
            await storage.put_stream(
                keys.output_key("org_1", "job_1", "out.bin"),
                chunks(),
                size=declared_size,
                sha256=declared_sha,
            )

    assert "declared" in str(refused.value)
    assert list(s3_client.list_objects(bucket, recursive=True)) == []


@pytest.mark.parametrize(
    ("size", "sha256"),
    [(0, "not-hex"), (0, "ab" * 31), (-1, ""), (10 * 1024**4, "")],
    ids=["not-hex", "short-hash", "negative-size", "over-the-limit"],
)
async def test_storage_bad_declarations_are_refused(
    storage: StorageClient, size: int, sha256: str
) -> None:
    async def one_chunk() -> AsyncIterator[bytes]:
        yield b"x"

    with pytest.raises(errors.InvalidArgument):
        await storage.put_stream(
            keys.output_key("org_1", "job_1", "out.bin"),
            one_chunk(),
            size=size,
            sha256=sha256,
        )


async def test_storage_get_over_max_bytes_is_refused(storage: StorageClient) -> None:
    key = keys.output_key("org_1", "job_1", "out.csv")
    await storage.put_bytes(key, b"x" * 100)

    with pytest.raises(errors.FailedPrecondition):
        await storage.get_bytes(key, max_bytes=99)
    assert await storage.get_bytes(key, max_bytes=100) == b"x" * 100


async def test_storage_delete_prefix_removes_one_job_only(
    storage: StorageClient,
) -> None:
    for name in ("a.csv", "b.csv", "c d.csv"):
        await storage.put_bytes(keys.output_key("org_1", "job_1", name), b"1")
    other = keys.output_key("org_1", "job_10", "a.csv")
    await storage.put_bytes(other, b"2")

    deleted = await storage.delete_prefix("output/org_1/job_1/")

    assert deleted == 3
    assert (await storage.stat(other)).size == 1
    with pytest.raises(errors.InvalidArgument):
        await storage.delete_prefix("output/org_1/")
    assert await storage.delete(other) == 1


async def test_storage_presigned_get_downloads_with_a_plain_client(
    storage: StorageClient,
) -> None:
    key = keys.output_key("org_1", "job_1", "out-1234.csv")
    await storage.put_bytes(key, b"a,b\n1,2\n", "text/csv")
    before = datetime.datetime.now(datetime.UTC)

    url = await storage.presign_get(
        key, expires_in=600, download_file_name="report.csv"
    )
    async with httpx.AsyncClient() as http:
        reply = await http.get(url.url)

    assert reply.status_code == 200
    assert reply.content == b"a,b\n1,2\n"
    assert reply.headers["content-type"].startswith("text/csv")
    assert 'filename="report.csv"' in reply.headers["content-disposition"]
    lifetime = (url.expires_at - before).total_seconds()
    assert 595 <= lifetime <= 605


async def test_storage_presigned_get_default_lifetime_is_24_hours(
    storage: StorageClient,
) -> None:
    key = keys.output_key("org_1", "job_1", "out.csv")
    await storage.put_bytes(key, b"x")

    url = await storage.presign_get(key)

    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url.url).query))
    assert query["X-Amz-Expires"] == str(24 * 3600)
    left = url.expires_at - datetime.datetime.now(datetime.UTC)
    assert abs(left.total_seconds() - 24 * 3600) < 10


async def test_storage_presign_longer_than_7_days_is_refused(
    storage: StorageClient,
) -> None:
    key = keys.output_key("org_1", "job_1", "out.csv")
    await storage.put_bytes(key, b"x")

    with pytest.raises(errors.InvalidArgument, match="7 days"):
        await storage.presign_get(key, expires_in=7 * 24 * 3600 + 1)
    with pytest.raises(errors.InvalidArgument):
        await storage.presign_put(keys.upload_key("org_1", "u1", "a.csv"), -5)
    url = await storage.presign_get(key, expires_in=7 * 24 * 3600)
    assert "X-Amz-Expires=604800" in url.url


async def test_storage_presigned_get_tampered_or_expired_is_refused(
    storage: StorageClient,
) -> None:
    key = keys.output_key("org_1", "job_1", "out.csv")
    await storage.put_bytes(key, b"secret data")
    good = await storage.presign_get(key, expires_in=600)
    short = await storage.presign_get(key, expires_in=1)
    signature = good.url[-64:]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    other_key = good.url.replace("out.csv", "other.csv")

    async with httpx.AsyncClient() as http:
        assert (await http.get(good.url)).status_code == 200
        assert (await http.get(good.url[:-64] + flipped)).status_code == 403
        assert (await http.get(other_key)).status_code == 403
        await asyncio.sleep(2.1)
        expired = await http.get(short.url)

    assert expired.status_code == 403
    assert b"secret data" not in expired.content


async def test_storage_presigned_put_then_get(storage: StorageClient) -> None:
    key = keys.upload_key("org_1", "up_1", "big input.csv")
    data = b"a,b\n" + b"1,2\n" * 10_000

    url = await storage.presign_put(key, expires_in=600, content_type="text/csv")
    async with httpx.AsyncClient() as http:
        reply = await http.put(url.url, content=data, headers=dict(url.headers))

    assert reply.status_code == 200, reply.text
    assert url.method == "PUT"
    assert url.headers == {"Content-Type": "text/csv"}
    assert await storage.get_bytes(key) == data
    info = await storage.verify_upload(
        key, max_bytes=len(data), content_types=("text/csv",)
    )
    assert info.size == len(data)


async def test_storage_presigned_put_only_targets_uploads(
    storage: StorageClient,
) -> None:
    with pytest.raises(errors.InvalidArgument, match="uploads"):
        await storage.presign_put(keys.output_key("org_1", "job_1", "x.csv"))


async def test_storage_oversize_presigned_upload_is_refused(
    start_storage: StartStorage, s3_server: S3Server, bucket: str
) -> None:
    process = start_storage(
        s3_server, bucket, env={"MUTATE_STORAGE_MAX_OBJECT_BYTES": str(MIB)}
    )
    assert process.health_address is not None
    key = keys.upload_key("org_1", "up_1", "huge.csv")
    async with StorageClient(process.health_address) as storage:
        url = await storage.presign_put(key, content_type="text/csv")
        async with httpx.AsyncClient() as http:
            reply = await http.put(
                url.url, content=b"x" * (MIB + 1), headers=dict(url.headers)
            )
        assert reply.status_code == 200

        with pytest.raises(errors.FailedPrecondition, match="over the limit"):
            await storage.get_bytes(key)
        with pytest.raises(errors.FailedPrecondition, match="over the limit"):
            await storage.verify_upload(key, max_bytes=MIB)
        with pytest.raises(errors.NotFound):
            await storage.stat(key)


async def test_storage_upload_of_wrong_type_is_refused(
    storage: StorageClient,
) -> None:
    key = keys.upload_key("org_1", "up_2", "data.csv")
    url = await storage.presign_put(key, content_type="text/csv")
    async with httpx.AsyncClient() as http:
        await http.put(
            url.url, content=b"<html>", headers={"Content-Type": "text/html"}
        )

    with pytest.raises(errors.FailedPrecondition, match="content type"):
        await storage.verify_upload(key, max_bytes=MIB, content_types=("text/csv",))
    with pytest.raises(errors.NotFound):
        await storage.stat(key)


async def test_storage_public_endpoint_urls_work_under_that_host(
    start_storage: StartStorage, s3_server: S3Server, bucket: str
) -> None:
    # The services reach the store at 127.0.0.1, clients at "localhost":
    # URLs must name localhost and carry a signature valid for it.
    public = f"http://localhost:{s3_server.port}"
    process = start_storage(s3_server, bucket, env={"S3_PUBLIC_ENDPOINT": public})
    assert process.health_address is not None
    key = keys.output_key("org_1", "job_1", "r.csv")
    async with StorageClient(process.health_address) as storage:
        await storage.put_bytes(key, b"public")
        url = await storage.presign_get(key, expires_in=60)
    parsed = urllib.parse.urlsplit(url.url)
    async with httpx.AsyncClient() as http:
        reply = await http.get(url.url)
        moved = await http.get(url.url.replace("localhost", "127.0.0.1", 1))

    assert parsed.netloc == f"localhost:{s3_server.port}"
    assert reply.status_code == 200
    assert reply.content == b"public"
    assert moved.status_code == 403
