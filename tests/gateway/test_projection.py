"""Job events into job rows: ordered by (attempt, event), never backwards."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mutate.common import messaging
from mutate.common.errors import InvalidArgument
from mutate.gateway.db import Database
from mutate.gateway.projection import COUNTED_COLUMNS, apply_events, moves_forward
from mutate.v1 import events_pb2, job_pb2, public_api_pb2

from .helpers import CSV, Tenant, wait_for_status

pb = public_api_pb2
Job = job_pb2.Job
Event = events_pb2.JobEvent


def test_moves_forward_orders_by_attempt_then_event() -> None:
    def event(kind: int, attempt: int = 1, percent: int = 0) -> Any:
        return Event(type=kind, attempt=attempt, progress_percent=percent)  # type: ignore[arg-type]

    at = {"attempt": 1, "rank": 2, "percent": 40}
    assert moves_forward(**at, event=event(Event.PROGRESS, percent=60))
    assert not moves_forward(**at, event=event(Event.PROGRESS, percent=40))
    assert not moves_forward(**at, event=event(Event.STARTED))
    assert moves_forward(**at, event=event(Event.COMPLETED))
    assert moves_forward(**at, event=event(Event.STARTED, attempt=2))
    assert not moves_forward(**at, event=event(Event.COMPLETED, attempt=0))
    terminal = {"attempt": 1, "rank": 3, "percent": 100}
    assert not moves_forward(**terminal, event=event(Event.FAILED))
    assert not moves_forward(**terminal, event=event(Event.PROGRESS, percent=99))


async def _create_job(tenant: Tenant) -> job_pb2.Job:
    """A small job (converted at once, so already COMPLETED)."""
    configuration = await tenant.configuration()
    job: job_pb2.Job = await tenant.jobs.CreateJob(
        pb.CreateJobRequest(configuration_id=configuration.id, file_content=CSV),
        metadata=tenant.metadata,
    )
    return job


async def _publish(js: Any, job: job_pb2.Job, tenant: Tenant, **fields: Any) -> None:
    event = Event(job_id=job.id, organization_id=tenant.organization_id, **fields)
    await messaging.publish_event(js, event)


async def test_events_out_of_order_never_move_a_job_backwards(
    tenant: Tenant, js: Any
) -> None:
    # A job the workers finish; then attempt 1's events arrive again, late
    # and out of order, and must change nothing.
    job = await _create_job(tenant)
    assert job.status == Job.COMPLETED
    await _publish(js, job, tenant, type=Event.PROGRESS, attempt=1, progress_percent=10)
    await _publish(js, job, tenant, type=Event.STARTED, attempt=1, worker_id="late")
    await _publish(
        js,
        job,
        tenant,
        type=Event.FAILED,
        attempt=1,
        error={"code": "LATE", "message": "late"},
    )
    # A marker event of a later attempt shows the earlier ones were processed.
    await _publish(js, job, tenant, type=Event.STARTED, attempt=2)
    current = await wait_for_status(tenant, job.id, Job.RUNNING)
    assert current.attempt == 2
    assert not current.error.code

    # Attempt 2, out of order: completed first, then a progress and a started.
    await _publish(
        js,
        job,
        tenant,
        type=Event.COMPLETED,
        attempt=2,
        output={"key": "k", "file_name": "out.csv", "rows": 42, "bytes": 9},
    )
    await _publish(js, job, tenant, type=Event.PROGRESS, attempt=2, progress_percent=50)
    await _publish(js, job, tenant, type=Event.CANCELLED, attempt=2)
    done = await wait_for_status(tenant, job.id, Job.COMPLETED)
    assert done.output_rows == 42
    # Give the stale events time to be (not) applied, then look again.
    await asyncio.sleep(0.5)
    again = await tenant.jobs.GetJob(
        pb.GetJobRequest(id=job.id), metadata=tenant.metadata
    )
    assert again.status == Job.COMPLETED
    assert again.progress_percent == 100
    assert again.attempt == 2

    # An older attempt's terminal event after a newer attempt: ignored.
    await _publish(js, job, tenant, type=Event.DEAD_LETTERED, attempt=1)
    await asyncio.sleep(0.5)
    last = await tenant.jobs.GetJob(
        pb.GetJobRequest(id=job.id), metadata=tenant.metadata
    )
    assert last.status == Job.COMPLETED


async def test_progress_only_grows(tenant: Tenant, js: Any) -> None:
    job = await _create_job(tenant)
    await _publish(js, job, tenant, type=Event.STARTED, attempt=5)
    await _publish(js, job, tenant, type=Event.PROGRESS, attempt=5, progress_percent=70)
    await _publish(js, job, tenant, type=Event.PROGRESS, attempt=5, progress_percent=30)
    await _publish(js, job, tenant, type=Event.PROGRESS, attempt=5, progress_percent=70)
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        current = await tenant.jobs.GetJob(
            pb.GetJobRequest(id=job.id), metadata=tenant.metadata
        )
        if current.attempt == 5 and current.progress_percent == 70:
            break
        assert asyncio.get_running_loop().time() < deadline, current
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.4)
    current = await tenant.jobs.GetJob(
        pb.GetJobRequest(id=job.id), metadata=tenant.metadata
    )
    assert (current.status, current.progress_percent) == (Job.RUNNING, 70)


async def test_a_batch_of_events_applies_in_one_commit_or_not_at_all(
    tenant: Tenant, gateway_db: Database
) -> None:
    job = await _create_job(tenant)
    assert job.status == Job.COMPLETED

    def event(kind: int, attempt: int, **fields: Any) -> Any:
        return Event(
            type=kind,  # type: ignore[arg-type]
            job_id=job.id,
            organization_id=tenant.organization_id,
            attempt=attempt,
            **fields,
        )

    batch = [
        event(Event.STARTED, 7),
        event(Event.PROGRESS, 7, progress_percent=40),
        event(Event.COMPLETED, 7, output={"key": "k", "rows": 5}),
        Event(type=Event.STARTED, attempt=0),  # never applies
    ]
    async with gateway_db.connection() as conn:
        rows = await apply_events(conn, batch, columns=COUNTED_COLUMNS)
        assert [r and r["status"] for r in rows] == [
            "running",
            "running",
            "completed",
            None,
        ]
        assert set(rows[0] or {}) == set(COUNTED_COLUMNS)
        # The same events again: all stale.
        assert await apply_events(conn, batch[:3]) == [None, None, None]
    done = await wait_for_status(tenant, job.id, Job.COMPLETED)
    assert (done.attempt, done.output_rows) == (7, 5)

    # PostgreSQL refuses the second (a NUL in text): the first is not kept.
    refused = [
        event(Event.STARTED, 8),
        event(Event.FAILED, 8, error={"code": "X", "message": "nul \x00 here"}),
    ]
    with pytest.raises(InvalidArgument):
        async with gateway_db.connection() as conn:
            await apply_events(conn, refused)
    again = await tenant.jobs.GetJob(
        pb.GetJobRequest(id=job.id), metadata=tenant.metadata
    )
    assert (again.attempt, again.status) == (7, Job.COMPLETED)
