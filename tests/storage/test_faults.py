"""Faults: the store going away and coming back, refused credentials."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from mutate.common import errors, keys
from mutate.common.storage_client import StorageClient
from mutate.devstack.servers import S3Server
from mutate.storage._store import S3Store, StoreOptions
from mutate.storage.settings import Endpoint, ProviderConfig

from .conftest import StartStorage

MIB = 1024 * 1024
LARGE = bytes(range(256)) * (12 * MIB // 256)

OPTIONS = StoreOptions(
    part_bytes=5 * 1024 * 1024,
    single_put_bytes=5_000_000_000,
    chunk_bytes=1024 * 1024,
    io_threads=2,
    connect_timeout=1.0,
    read_timeout=5.0,
    retries=0,
    retry_backoff=0.0,
)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), MIB):
        yield data[start : start + MIB]


def _store(server: S3Server, *, access: str, secret: str, bucket: str) -> S3Store:
    endpoint = Endpoint(host=server.endpoint, secure=False)
    config = ProviderConfig(
        provider="minio",
        endpoint=endpoint,
        public_endpoint=endpoint,
        access_key=access,
        secret_key=secret,
        bucket=bucket,
        region=server.region,
        addressing_style="auto",
        access_key_setting="S3_ACCESS_KEY_ID",
        secret_key_setting="S3_SECRET_ACCESS_KEY",
        bucket_setting="S3_BUCKET",
    )
    return S3Store(config=config, options=OPTIONS)


@pytest.mark.slow
async def test_storage_store_stopped_is_unavailable_then_recovers(
    make_s3_server: type[S3Server], start_storage: StartStorage
) -> None:
    server = make_s3_server()
    bucket = f"faults-{uuid.uuid4().hex[:8]}"
    process = start_storage(server, bucket)
    assert process.health_address is not None
    key = keys.output_key("org_1", "job_1", "out.csv")
    async with StorageClient(process.health_address, timeout=10) as storage:
        await storage.put_bytes(key, b"before")

        server.stop()
        started = time.monotonic()
        with pytest.raises(errors.Unavailable):
            await storage.get_bytes(key)
        with pytest.raises(errors.Unavailable):
            await storage.put_bytes(key, b"during")
        # Large ones too (streamed, multipart): the service reads out the
        # rest of the stream so the caller sees the status, not INTERNAL.
        with pytest.raises(errors.Unavailable):
            await storage.put_bytes(key, LARGE)
        with pytest.raises(errors.Unavailable):
            await storage.put_stream(key, _chunks(LARGE))
        with pytest.raises(errors.Unavailable):
            await storage.stat(key)
        assert time.monotonic() - started < 10

        server.start()
        deadline = time.monotonic() + 20
        while True:
            try:
                assert await storage.get_bytes(key) == b"before"
                break
            except errors.Unavailable:
                assert time.monotonic() < deadline, "no recovery after restart"
                await asyncio.sleep(0.2)
        await storage.put_bytes(key, b"after")
        assert await storage.get_bytes(key) == b"after"
        await storage.put_bytes(key, LARGE)
        assert await storage.get_bytes(key) == LARGE


async def test_storage_stalled_uploads_do_not_starve_other_calls(
    s3_server: S3Server, start_storage: StartStorage, bucket: str
) -> None:
    # More stalled large puts than the service has I/O threads: each holds a
    # transfer thread, and stats and small objects must still be served.
    process = start_storage(s3_server, bucket, env={"MUTATE_STORAGE_IO_THREADS": "2"})
    assert process.health_address is not None
    small = keys.output_key("org_1", "job_1", "small.csv")
    release = asyncio.Event()

    async def stalled_stream() -> AsyncIterator[bytes]:
        yield LARGE[:MIB]
        await release.wait()

    async with StorageClient(process.health_address, timeout=5) as storage:
        stalled = [
            asyncio.ensure_future(
                storage.put_stream(
                    keys.output_key("org_1", "job_1", f"stalled-{i}.bin"),
                    stalled_stream(),
                    size=len(LARGE),
                    sha256=hashlib.sha256(LARGE).hexdigest(),
                )
            )
            for i in range(3)
        ]
        await asyncio.sleep(0.5)
        try:
            await storage.put_bytes(small, b"a,b\n")
            assert await storage.get_bytes(small) == b"a,b\n"
            assert (await storage.stat(small)).size == 4
        finally:
            for call in stalled:
                call.cancel()
            await asyncio.gather(*stalled, return_exceptions=True)


async def test_storage_wrong_secret_names_the_setting(
    s3_server: S3Server, bucket: str
) -> None:
    store = _store(
        s3_server, access=s3_server.access_key, secret="wrong", bucket=bucket
    )
    try:
        with pytest.raises(errors.FailedPrecondition, match="S3_SECRET_ACCESS_KEY"):
            await store.ensure_bucket(create=False)
        with pytest.raises(errors.FailedPrecondition, match="S3_SECRET_ACCESS_KEY"):
            await store.stat(keys.output_key("o", "j", "a.csv"))
    finally:
        store.close()


async def test_storage_unknown_access_key_names_the_setting(
    s3_server: S3Server, bucket: str
) -> None:
    store = _store(s3_server, access="nobody", secret="wrong", bucket=bucket)
    try:
        with pytest.raises(errors.FailedPrecondition, match="S3_ACCESS_KEY_ID"):
            await store.ensure_bucket(create=False)
    finally:
        store.close()


def test_storage_process_refuses_to_start_with_bad_credentials(
    start_storage: StartStorage, s3_server: S3Server, bucket: str
) -> None:
    process = start_storage(
        s3_server, bucket, env={"S3_SECRET_ACCESS_KEY": "wrong"}, wait=False
    )
    deadline = time.monotonic() + 20
    while process.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)

    assert process.returncode == 1
    log = process.log_text()
    assert "S3_SECRET_ACCESS_KEY" in log
    assert "Traceback" not in log


def test_storage_process_refuses_a_missing_bucket_it_may_not_create(
    start_storage: StartStorage, s3_server: S3Server
) -> None:
    process = start_storage(
        s3_server,
        f"missing-{uuid.uuid4().hex[:8]}",
        env={"MUTATE_STORAGE_CREATE_BUCKET": "false"},
        wait=False,
    )
    deadline = time.monotonic() + 20
    while process.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)

    assert process.returncode == 1
    assert "MUTATE_STORAGE_CREATE_BUCKET" in process.log_text()
