"""The synchronous create-job path: input stored alongside the conversion,
the row written once finished, the terminal event published after the answer.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from mutate.common import keys, messaging, topology
from mutate.devstack import _proc
from mutate.gateway.projection import GATEWAY_WORKER_ID
from mutate.v1 import configuration_pb2, events_pb2, job_pb2, public_api_pb2

from .conftest import ReplicaFactory, TenantFactory, tenant_on
from .helpers import CSV, Tenant, get_job

pb = public_api_pb2
Job = job_pb2.Job
Event = events_pb2.JobEvent


async def _events(js: Any, tenant: Tenant, job_id: str) -> list[Any]:
    """The job's events in the stream, once its terminal one is there."""
    subscription = await js.subscribe(
        topology.job_events_filter(tenant.organization_id, job_id),
        ordered_consumer=True,
    )
    found = []
    try:
        while True:
            event = messaging.decode_event(await subscription.next_msg(timeout=15))
            found.append(event)
            if event.type in messaging.TERMINAL_EVENTS:
                return found
    finally:
        await subscription.unsubscribe()


def _objects(s3: tuple[Any, str], prefix: str) -> list[str]:
    client, bucket = s3
    found = client.list_objects(bucket, prefix=prefix, recursive=True)
    return [o.object_name for o in found]


async def test_sync_answer_is_the_stored_row_with_its_input_and_event(
    tenant: Tenant, js: Any, s3: tuple[Any, str]
) -> None:
    configuration = await tenant.configuration(
        rules=[
            configuration_pb2.Rule(
                id="drop-bob",
                delete_rows=configuration_pb2.DeleteRows(
                    condition=configuration_pb2.DeleteRows.EQUALS,
                    column="name",
                    value="bob",
                ),
            )
        ]
    )
    job = await tenant.jobs.CreateJob(
        pb.CreateJobRequest(
            configuration_id=configuration.id,
            file_content=CSV,
            file_name="people.csv",
            mode=Job.SYNC,
        ),
        metadata=tenant.metadata,
    )
    assert job.status == Job.COMPLETED, job
    assert [entry.rule_id for entry in job.execution_log] == ["drop-bob"]
    assert job.output_rows == 2
    assert await get_job(tenant, job.id) == job
    assert job.create_time.ToNanoseconds() <= job.start_time.ToNanoseconds()
    assert job.start_time.ToNanoseconds() <= job.finish_time.ToNanoseconds()
    org = tenant.organization_id
    # Retry needs the input: it is stored whenever the row exists.
    assert _objects(s3, keys.job_prefix(keys.Area.INPUT, org, job.id)) == [
        keys.input_key(org, job.id, "people.csv")
    ]
    assert _objects(s3, keys.job_prefix(keys.Area.OUTPUT, org, job.id))
    events = await _events(js, tenant, job.id)
    assert [e.type for e in events] == [Event.COMPLETED]
    assert events[0].worker_id == GATEWAY_WORKER_ID
    assert events[0].output.rows == job.output_rows


async def test_failed_sync_job_answer_is_the_stored_row(
    tenant: Tenant, js: Any
) -> None:
    configuration = await tenant.configuration(
        rules=[
            configuration_pb2.Rule(
                id="check",
                validate_columns=configuration_pb2.ValidateColumns(
                    required_headers=["missing"]
                ),
            )
        ]
    )
    job = await tenant.jobs.CreateJob(
        pb.CreateJobRequest(
            configuration_id=configuration.id, file_content=CSV, mode=Job.SYNC
        ),
        metadata=tenant.metadata,
    )
    assert job.status == Job.FAILED
    assert job.error.code and job.error.message
    assert await get_job(tenant, job.id) == job
    events = await _events(js, tenant, job.id)
    assert [e.type for e in events] == [Event.FAILED]
    assert events[0].error == job.error


async def test_sync_event_is_published_even_when_the_replica_stops_at_once(
    make_replica: ReplicaFactory, make_tenant: TenantFactory, js: Any
) -> None:
    replica = await make_replica()
    tenant = await tenant_on(replica, make_tenant)
    configuration = await tenant.configuration()
    job = await tenant.jobs.CreateJob(
        pb.CreateJobRequest(
            configuration_id=configuration.id, file_content=CSV, mode=Job.SYNC
        ),
        metadata=tenant.metadata,
    )
    await replica.stop()
    await tenant.channel.close()
    events = await asyncio.wait_for(_events(js, tenant, job.id), 20)
    assert [e.type for e in events] == [Event.COMPLETED]


@pytest.mark.parametrize("mode", [Job.SYNC, Job.AUTO])
async def test_sync_job_whose_input_cannot_be_stored_is_not_created(
    make_replica: ReplicaFactory,
    make_tenant: TenantFactory,
    gateway_db: Any,
    mode: int,
) -> None:
    (dead,) = _proc.free_ports(1)
    replica = await make_replica(
        MUTATE_STORAGE_ADDRESS=f"127.0.0.1:{dead}", MUTATE_RPC_TIMEOUT_MS="2000"
    )
    tenant = await tenant_on(replica, make_tenant)
    configuration = await tenant.configuration()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await tenant.jobs.CreateJob(
            pb.CreateJobRequest(
                configuration_id=configuration.id, file_content=CSV, mode=mode
            ),
            metadata=tenant.metadata,
        )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
    assert "storage" in (info.value.details() or "")
    # Nothing half-written: no row without its input.
    rows = await gateway_db.fetchall(
        "SELECT id FROM jobs WHERE organization_id = %s", (tenant.organization_id,)
    )
    assert rows == []
    await tenant.channel.close()
