"""Helpers shared by the gateway tests: a tenant's stubs, sample data."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

import grpc

from mutate.common import messaging
from mutate.v1 import (
    configuration_pb2,
    events_pb2,
    job_pb2,
    public_api_pb2,
    public_api_pb2_grpc,
)

CSV = b"name,amount\nalice,1\nbob,2\ncarol,3\n"


@dataclasses.dataclass
class Tenant:
    """One organization, its key and stubs that send it."""

    organization_id: str
    key: str
    channel: grpc.aio.Channel

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.key}"),)

    def md(self, **extra: str) -> tuple[tuple[str, str], ...]:
        return self.metadata + tuple((k.replace("_", "-"), v) for k, v in extra.items())

    @property
    def configurations(self) -> public_api_pb2_grpc.ConfigurationServiceStub:
        return public_api_pb2_grpc.ConfigurationServiceStub(self.channel)

    @property
    def jobs(self) -> public_api_pb2_grpc.JobServiceStub:
        return public_api_pb2_grpc.JobServiceStub(self.channel)

    @property
    def uploads(self) -> public_api_pb2_grpc.UploadServiceStub:
        return public_api_pb2_grpc.UploadServiceStub(self.channel)

    @property
    def api_keys(self) -> public_api_pb2_grpc.ApiKeyServiceStub:
        return public_api_pb2_grpc.ApiKeyServiceStub(self.channel)

    @property
    def queue(self) -> public_api_pb2_grpc.QueueServiceStub:
        return public_api_pb2_grpc.QueueServiceStub(self.channel)

    @property
    def deliveries(self) -> public_api_pb2_grpc.DeliveryServiceStub:
        return public_api_pb2_grpc.DeliveryServiceStub(self.channel)

    async def configuration(self, **fields: Any) -> configuration_pb2.Configuration:
        return await self.configurations.CreateConfiguration(
            public_api_pb2.CreateConfigurationRequest(
                configuration=csv_configuration(**fields)
            ),
            metadata=self.metadata,
        )


def csv_configuration(**fields: Any) -> configuration_pb2.Configuration:
    base: dict[str, Any] = {
        "name": f"csv {uuid.uuid4().hex[:6]}",
        "conversion_type": configuration_pb2.CSV_TO_CSV,
        "output_format": configuration_pb2.OutputFormat(
            type=configuration_pb2.OutputFormat.CSV
        ),
    }
    base.update(fields)
    return configuration_pb2.Configuration(**base)


async def wait_for_status(
    tenant: Tenant, job_id: str, *statuses: int, timeout: float = 15.0
) -> Any:
    """Poll GetJob until the job reaches one of `statuses`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = await tenant.jobs.GetJob(
            public_api_pb2.GetJobRequest(id=job_id), metadata=tenant.metadata
        )
        if job.status in statuses:
            return job
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job {job_id} stuck in {job.status}")
        await asyncio.sleep(0.05)


async def job_ended_by_worker(
    tenant: Tenant,
    js: Any,
    event_type: int,
    error: job_pb2.JobError,
    *,
    status: int,
) -> Any:
    """A queued job that a later worker attempt ended with `event_type` and
    `error`, as seen once the gateway has projected it to `status`."""
    configuration = await tenant.configuration()
    job = await tenant.jobs.CreateJob(
        public_api_pb2.CreateJobRequest(
            configuration_id=configuration.id, file_content=CSV
        ),
        metadata=tenant.metadata,
    )
    # A later attempt supersedes the first, as a worker's redelivery does.
    await messaging.publish_event(
        js,
        events_pb2.JobEvent(
            type=event_type,
            job_id=job.id,
            organization_id=tenant.organization_id,
            attempt=job.attempt + 1,
            error=error,
        ),
    )
    return await wait_for_status(tenant, job.id, status)


async def get_job(tenant: Tenant, job_id: str) -> Any:
    return await tenant.jobs.GetJob(
        public_api_pb2.GetJobRequest(id=job_id), metadata=tenant.metadata
    )
