"""Retention: the sweep deletes expired objects; lifecycle rules are set."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

from mutate.common import keys
from mutate.devstack.servers import S3Server
from mutate.storage._retention import RetentionSweeper
from mutate.storage._store import S3Store

from .conftest import StartStorage
from .test_faults import _store


def _put(client: Any, bucket: str, key: str) -> None:
    client.put_object(bucket, key, io.BytesIO(b"x"), 1)


def _names(client: Any, bucket: str) -> set[str]:
    return {o.object_name for o in client.list_objects(bucket, recursive=True)}


async def test_retention_sweep_deletes_only_expired_areas(
    s3_server: S3Server, s3_client: Any, bucket: str
) -> None:
    upload = keys.upload_key("org_1", "up_1", "a.csv")
    output = keys.output_key("org_1", "job_1", "b.csv")
    _put(s3_client, bucket, upload)
    _put(s3_client, bucket, output)
    store: S3Store = _store(
        s3_server,
        access=s3_server.access_key,
        secret=s3_server.secret_key,
        bucket=bucket,
    )
    sweeper = RetentionSweeper(
        store=store,
        # Output kept forever (0); uploads expire after 1 ms.
        retention={"uploads": 0.001, "input": 3600.0, "output": 0.0},
        interval=3600.0,
    )
    try:
        await asyncio.sleep(1.1)  # S3 timestamps have whole seconds
        deleted = await sweeper.sweep_once()
    finally:
        store.close()

    assert deleted == 1
    assert _names(s3_client, bucket) == {output}


async def test_retention_sweep_runs_in_the_service(
    start_storage: StartStorage, s3_server: S3Server, s3_client: Any, bucket: str
) -> None:
    start_storage(
        s3_server,
        bucket,
        env={
            "MUTATE_RETENTION_UPLOADS_MS": "200",
            "MUTATE_RETENTION_SWEEP_INTERVAL_MS": "100",
        },
    )
    upload = keys.upload_key("org_1", "up_9", "late.csv")
    kept = keys.input_key("org_1", "job_9", "in.csv")
    _put(s3_client, bucket, upload)
    _put(s3_client, bucket, kept)

    deadline = time.monotonic() + 10
    while upload in _names(s3_client, bucket):
        assert time.monotonic() < deadline, "upload never expired"
        await asyncio.sleep(0.1)

    assert _names(s3_client, bucket) == {kept}


def test_retention_lifecycle_rules_are_installed(
    storage_process: Any, s3_client: Any, bucket: str
) -> None:
    config = s3_client.get_bucket_lifecycle(bucket)

    days = {rule.rule_filter.prefix: rule.expiration.days for rule in config.rules}
    assert days == {"uploads/": 1, "input/": 7, "output/": 30}
