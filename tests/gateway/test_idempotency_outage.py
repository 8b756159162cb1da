"""An idempotency key whose bookkeeping fails (the database away) still settles.

Found by tests/faults (PostgreSQL restarted): a request that failed while the
database was down could not release its key, and every retry with that key
then waited MUTATE_IDEMPOTENCY_WAIT_MS, past the client's deadline. The
gateway now retries the key's bookkeeping in the background. Here a trigger
makes the bookkeeping of one key fail for a while, which the gateway cannot
tell from a database outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from mutate.gateway.db import Database
from mutate.v1 import job_pb2, public_api_pb2

from .helpers import CSV, Tenant

pb = public_api_pb2
Job = job_pb2.Job


@contextlib.asynccontextmanager
async def failing_key_bookkeeping(db: Database, key: str) -> AsyncIterator[None]:
    """Make settling `key` (its DELETE, or UPDATE to done) raise until exit."""
    name = f"fail_{uuid.uuid4().hex[:10]}"
    literal = key.replace("'", "''")
    await db.execute(
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'injected fault'; END $$"
    )
    await db.execute(
        f"CREATE TRIGGER {name}_u BEFORE UPDATE ON idempotency_keys FOR EACH ROW"
        f" WHEN (OLD.key = '{literal}' AND NEW.state = 'done')"
        f" EXECUTE FUNCTION {name}()"
    )
    await db.execute(
        f"CREATE TRIGGER {name}_d BEFORE DELETE ON idempotency_keys FOR EACH ROW"
        f" WHEN (OLD.key = '{literal}') EXECUTE FUNCTION {name}()"
    )
    try:
        yield
    finally:
        await db.execute(f"DROP TRIGGER {name}_u ON idempotency_keys")
        await db.execute(f"DROP TRIGGER {name}_d ON idempotency_keys")
        await db.execute(f"DROP FUNCTION {name}()")


async def test_a_failed_request_frees_its_key_once_the_database_is_back(
    tenant: Tenant, gateway_db: Database
) -> None:
    key = f"outage-{uuid.uuid4().hex}"
    request = pb.CreateJobRequest(
        configuration_id="cfg_does_not_exist", file_content=CSV
    )
    async with failing_key_bookkeeping(gateway_db, key):
        with pytest.raises(grpc.aio.AioRpcError) as first:
            await tenant.jobs.CreateJob(
                request, metadata=tenant.md(idempotency_key=key)
            )
        assert first.value.code() == grpc.StatusCode.NOT_FOUND
        # A retry now waits for the first request's key...
        retry = asyncio.ensure_future(
            tenant.jobs.CreateJob(
                request, metadata=tenant.md(idempotency_key=key), timeout=20
            )
        )
        await asyncio.sleep(1.0)
        assert not retry.done()
    # ...which is released as soon as the bookkeeping works again, not after
    # MUTATE_IDEMPOTENCY_WAIT_MS (30 s here).
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as second:
        await retry
    assert time.monotonic() - started < 10
    assert second.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "send the request again" in (second.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as third:
        await tenant.jobs.CreateJob(request, metadata=tenant.md(idempotency_key=key))
    assert third.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_job_made_while_its_key_cannot_be_finished_is_answered(
    tenant: Tenant, gateway_db: Database
) -> None:
    configuration = await tenant.configuration()
    key = f"outage-{uuid.uuid4().hex}"
    request = pb.CreateJobRequest(
        configuration_id=configuration.id, file_content=CSV, mode=Job.ASYNC
    )
    async with failing_key_bookkeeping(gateway_db, key):
        # The job is made: its maker gets it, although the key is not done.
        job = await tenant.jobs.CreateJob(
            request, metadata=tenant.md(idempotency_key=key)
        )
        assert job.id
        retry = asyncio.ensure_future(
            tenant.jobs.CreateJob(
                request, metadata=tenant.md(idempotency_key=key), timeout=20
            )
        )
        await asyncio.sleep(1.0)
    started = time.monotonic()
    again = await retry
    assert time.monotonic() - started < 10
    assert again.id == job.id
