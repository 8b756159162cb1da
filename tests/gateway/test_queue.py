"""QueueService: tenant and operator views, dead letters and redrive."""

from __future__ import annotations

from typing import Any

from mutate.v1 import events_pb2, job_pb2, public_api_pb2

from .conftest import TenantFactory
from .helpers import Tenant, job_ended_by_worker, wait_for_status

pb = public_api_pb2
Job = job_pb2.Job
Event = events_pb2.JobEvent


async def _dead_letter(tenant: Tenant, js: Any) -> str:
    # As a worker does past the delivery limit.
    job = await job_ended_by_worker(
        tenant,
        js,
        Event.DEAD_LETTERED,
        job_pb2.JobError(code="WORKER_LOST", message="gone"),
        status=Job.DEAD_LETTERED,
    )
    return str(job.id)


async def test_dead_letters_are_listed_and_redriven_per_organization(
    tenant: Tenant, other_tenant: Tenant, make_tenant: TenantFactory, js: Any
) -> None:
    mine = await _dead_letter(tenant, js)
    theirs = await _dead_letter(other_tenant, js)

    listed = await tenant.queue.ListDeadLetters(
        pb.ListDeadLettersRequest(), metadata=tenant.metadata
    )
    assert [j.id for j in listed.jobs] == [mine]
    stats = await tenant.queue.GetQueueStats(
        pb.GetQueueStatsRequest(), metadata=tenant.metadata
    )
    assert stats.dead_lettered == 1
    assert not stats.all_organizations

    operator = await make_tenant(operator=True)
    everything = await operator.queue.ListDeadLetters(
        pb.ListDeadLettersRequest(page_size=500), metadata=operator.metadata
    )
    assert {mine, theirs} <= {j.id for j in everything.jobs}
    operator_stats = await operator.queue.GetQueueStats(
        pb.GetQueueStatsRequest(), metadata=operator.metadata
    )
    assert operator_stats.all_organizations
    assert operator_stats.dead_lettered >= 2
    assert sum(operator_stats.jobs_by_status.values()) >= 2

    redriven = await tenant.queue.RedriveDeadLetters(
        pb.RedriveDeadLettersRequest(), metadata=tenant.metadata
    )
    assert [j.id for j in redriven.jobs] == [mine]
    assert redriven.jobs[0].attempt == 3
    done = await wait_for_status(tenant, mine, Job.COMPLETED)
    assert done.attempt == 3

    # The operator redrives another organization's job by id.
    again = await operator.queue.RedriveDeadLetters(
        pb.RedriveDeadLettersRequest(job_ids=[theirs]), metadata=operator.metadata
    )
    assert [j.id for j in again.jobs] == [theirs]
    await wait_for_status(other_tenant, theirs, Job.COMPLETED)
