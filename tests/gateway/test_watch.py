"""WatchJob ends on a state the job row already has (GetJob, download agree)."""

from __future__ import annotations

import asyncio
from typing import Any

from mutate.common import messaging, topology
from mutate.gateway.db import Database
from mutate.v1 import events_pb2, job_pb2, public_api_pb2

from .helpers import CSV, Tenant, get_job

pb = public_api_pb2
Job = job_pb2.Job
Event = events_pb2.JobEvent


async def _wait_for_event(js: Any, tenant: Tenant, job_id: str, kind: int) -> None:
    subscription = await js.subscribe(
        topology.job_events_filter(tenant.organization_id, job_id),
        ordered_consumer=True,
    )
    try:
        while True:
            msg = await subscription.next_msg(timeout=15)
            if messaging.decode_event(msg).type == kind:
                return
    finally:
        await subscription.unsubscribe()


async def test_watch_then_download_immediately(
    tenant: Tenant, gateway_db: Database, js: Any
) -> None:
    """The worker's `completed` event is out while the projector is held back
    (the test holds the job row's lock): the watch must not end before the
    row is completed, and a download right after it must work."""
    configuration = await tenant.configuration()
    job = await tenant.jobs.CreateJob(
        pb.CreateJobRequest(
            configuration_id=configuration.id, file_content=CSV, mode=Job.ASYNC
        ),
        metadata=tenant.metadata,
    )
    seen: list[Any] = []

    async def watch() -> None:
        async for update in tenant.jobs.WatchJob(
            pb.WatchJobRequest(id=job.id), metadata=tenant.metadata, timeout=30
        ):
            seen.append(update)

    async with gateway_db.transaction() as conn:
        # The projector's UPDATE of this row waits for this transaction.
        cur = await conn.execute(
            "SELECT status FROM jobs WHERE id = %s FOR UPDATE", (job.id,)
        )
        locked = await cur.fetchone()
        # The test transformer idles 250 ms per job, so it cannot be done yet.
        assert locked is not None and locked["status"] in ("pending", "running")
        watcher = asyncio.create_task(watch())
        await _wait_for_event(js, tenant, job.id, Event.COMPLETED)
        # Several watch polls (200 ms) after the event: still not terminal.
        await asyncio.sleep(1.0)
        assert not watcher.done()
        assert all(update.status != Job.COMPLETED for update in seen), seen
        assert (await get_job(tenant, job.id)).status != Job.COMPLETED
    await asyncio.wait_for(watcher, 20)
    assert seen[-1].status == Job.COMPLETED
    download = await tenant.jobs.GetJobDownload(
        pb.GetJobDownloadRequest(id=job.id), metadata=tenant.metadata
    )
    assert download.url and download.bytes == seen[-1].output_bytes


async def test_many_watches_end_with_a_downloadable_job(tenant: Tenant) -> None:
    """Without help: each watch's end is at once visible to GetJobDownload."""
    configuration = await tenant.configuration()

    async def one() -> None:
        job = await tenant.jobs.CreateJob(
            pb.CreateJobRequest(
                configuration_id=configuration.id, file_content=CSV, mode=Job.ASYNC
            ),
            metadata=tenant.metadata,
        )
        last = None
        async for update in tenant.jobs.WatchJob(
            pb.WatchJobRequest(id=job.id), metadata=tenant.metadata, timeout=30
        ):
            last = update
        assert last is not None and last.status == Job.COMPLETED
        download = await tenant.jobs.GetJobDownload(
            pb.GetJobDownloadRequest(id=job.id), metadata=tenant.metadata
        )
        assert download.url

    await asyncio.gather(*(one() for _ in range(8)))
