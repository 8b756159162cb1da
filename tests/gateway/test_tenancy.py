"""Every public RPC: authentication, and another organization sees nothing.

The method list is read from the service descriptors, so a new RPC (a new
REST route) fails `test_every_public_method_is_covered` until it is added
here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from mutate.v1 import job_pb2, public_api_pb2

from .conftest import Platform
from .helpers import CSV, Tenant

pb = public_api_pb2
Job = job_pb2.Job
SERVICES = [
    "ConfigurationService",
    "UploadService",
    "JobService",
    "DeliveryService",
    "ApiKeyService",
    "QueueService",
]


@dataclasses.dataclass
class Owned:
    """What the first organization has, for the second to reach for."""

    tenant: Tenant
    configuration_id: str
    job_id: str
    upload_id: str
    key_id: str


# kind: "not_found" — the second organization gets NOT_FOUND;
#       "own" — the call succeeds but is about the caller's own data only
#               (the check returns a message and what must not be in it).
Call = Callable[[Tenant, Owned], Awaitable[Any]]


def _since() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromJsonString("2000-01-01T00:00:00Z")
    return stamp


async def _upload_job(b: Tenant, a: Owned) -> Any:
    async def parts() -> Any:
        yield pb.UploadJobRequest(
            request=pb.CreateJobRequest(configuration_id=a.configuration_id)
        )
        yield pb.UploadJobRequest(chunk=CSV)

    return await b.jobs.UploadJob(parts(), metadata=b.metadata)


async def _watch(b: Tenant, a: Owned) -> Any:
    return [
        j
        async for j in b.jobs.WatchJob(
            pb.WatchJobRequest(id=a.job_id), metadata=b.metadata
        )
    ]


def _not_found(call: Call) -> tuple[str, Call]:
    return ("not_found", call)


def _own(call: Call) -> tuple[str, Call]:
    return ("own", call)


CALLS: dict[str, tuple[str, Call]] = {
    "ConfigurationService/CreateConfiguration": _own(lambda b, a: b.configuration()),
    "ConfigurationService/GetConfiguration": _not_found(
        lambda b, a: b.configurations.GetConfiguration(
            pb.GetConfigurationRequest(id=a.configuration_id), metadata=b.metadata
        )
    ),
    "ConfigurationService/ListConfigurations": _own(
        lambda b, a: b.configurations.ListConfigurations(
            pb.ListConfigurationsRequest(), metadata=b.metadata
        )
    ),
    "ConfigurationService/UpdateConfiguration": _not_found(
        lambda b, a: b.configurations.UpdateConfiguration(
            pb.UpdateConfigurationRequest(
                configuration={"id": a.configuration_id, "name": "stolen"}
            ),
            metadata=b.metadata,
        )
    ),
    "ConfigurationService/DeleteConfiguration": _not_found(
        lambda b, a: b.configurations.DeleteConfiguration(
            pb.DeleteConfigurationRequest(id=a.configuration_id), metadata=b.metadata
        )
    ),
    "ConfigurationService/ListConfigurationVersions": _not_found(
        lambda b, a: b.configurations.ListConfigurationVersions(
            pb.ListConfigurationVersionsRequest(id=a.configuration_id),
            metadata=b.metadata,
        )
    ),
    "ConfigurationService/TestConfiguration": _not_found(
        lambda b, a: b.configurations.TestConfiguration(
            pb.TestConfigurationRequest(id=a.configuration_id, file_content=CSV),
            metadata=b.metadata,
        )
    ),
    "UploadService/CreateUpload": _own(
        lambda b, a: b.uploads.CreateUpload(
            pb.CreateUploadRequest(file_name="x.csv"), metadata=b.metadata
        )
    ),
    "JobService/CreateJob": _not_found(
        lambda b, a: b.jobs.CreateJob(
            pb.CreateJobRequest(configuration_id=a.configuration_id, file_content=CSV),
            metadata=b.metadata,
        )
    ),
    "JobService/UploadJob": _not_found(_upload_job),
    "JobService/GetJob": _not_found(
        lambda b, a: b.jobs.GetJob(pb.GetJobRequest(id=a.job_id), metadata=b.metadata)
    ),
    "JobService/ListJobs": _own(
        lambda b, a: b.jobs.ListJobs(pb.ListJobsRequest(), metadata=b.metadata)
    ),
    "JobService/CancelJob": _not_found(
        lambda b, a: b.jobs.CancelJob(
            pb.CancelJobRequest(id=a.job_id), metadata=b.metadata
        )
    ),
    "JobService/RetryJob": _not_found(
        lambda b, a: b.jobs.RetryJob(
            pb.RetryJobRequest(id=a.job_id), metadata=b.metadata
        )
    ),
    "JobService/DeleteJob": _not_found(
        lambda b, a: b.jobs.DeleteJob(
            pb.DeleteJobRequest(id=a.job_id), metadata=b.metadata
        )
    ),
    "JobService/GetJobDownload": _not_found(
        lambda b, a: b.jobs.GetJobDownload(
            pb.GetJobDownloadRequest(id=a.job_id), metadata=b.metadata
        )
    ),
    "JobService/WatchJob": _not_found(_watch),
    "JobService/ListJobDeliveries": _not_found(
        lambda b, a: b.jobs.ListJobDeliveries(
            pb.ListJobDeliveriesRequest(id=a.job_id), metadata=b.metadata
        )
    ),
    "DeliveryService/ListDeliveries": _own(
        lambda b, a: b.deliveries.ListDeliveries(
            pb.ListDeliveriesRequest(), metadata=b.metadata
        )
    ),
    "DeliveryService/RedeliverDelivery": _not_found(
        lambda b, a: b.deliveries.RedeliverDelivery(
            pb.RedeliverDeliveryRequest(id="dlv_nothere"), metadata=b.metadata
        )
    ),
    "DeliveryService/RecoverDeliveries": _own(
        lambda b, a: b.deliveries.RecoverDeliveries(
            pb.RecoverDeliveriesRequest(since=_since()), metadata=b.metadata
        )
    ),
    "DeliveryService/SendTestWebhook": _own(
        lambda b, a: b.deliveries.SendTestWebhook(
            pb.SendTestWebhookRequest(url="http://127.0.0.1:9/hook"),
            metadata=b.metadata,
        )
    ),
    "DeliveryService/RotateWebhookSecret": _own(
        lambda b, a: b.deliveries.RotateWebhookSecret(
            pb.RotateWebhookSecretRequest(), metadata=b.metadata
        )
    ),
    "ApiKeyService/ListApiKeys": _own(
        lambda b, a: b.api_keys.ListApiKeys(
            pb.ListApiKeysRequest(), metadata=b.metadata
        )
    ),
    "ApiKeyService/CreateApiKey": _own(
        lambda b, a: b.api_keys.CreateApiKey(
            pb.CreateApiKeyRequest(name="mine"), metadata=b.metadata
        )
    ),
    "ApiKeyService/RevokeApiKey": _not_found(
        lambda b, a: b.api_keys.RevokeApiKey(
            pb.RevokeApiKeyRequest(id=a.key_id), metadata=b.metadata
        )
    ),
    "QueueService/GetQueueStats": _own(
        lambda b, a: b.queue.GetQueueStats(
            pb.GetQueueStatsRequest(), metadata=b.metadata
        )
    ),
    "QueueService/ListDeadLetters": _own(
        lambda b, a: b.queue.ListDeadLetters(
            pb.ListDeadLettersRequest(), metadata=b.metadata
        )
    ),
    "QueueService/RedriveDeadLetters": _not_found(
        lambda b, a: b.queue.RedriveDeadLetters(
            pb.RedriveDeadLettersRequest(job_ids=[a.job_id]), metadata=b.metadata
        )
    ),
}


def _public_methods() -> list[str]:
    names = []
    for service in SERVICES:
        descriptor = pb.DESCRIPTOR.services_by_name[service]
        names += [f"{service}/{m.name}" for m in descriptor.methods]
    return names


def test_every_public_method_is_covered() -> None:
    assert set(pb.DESCRIPTOR.services_by_name) == set(SERVICES)
    assert sorted(CALLS) == sorted(_public_methods())


@pytest.fixture
async def owned(tenant: Tenant) -> Owned:
    configuration = await tenant.configuration()
    job = await tenant.jobs.CreateJob(
        pb.CreateJobRequest(configuration_id=configuration.id, file_content=CSV),
        metadata=tenant.metadata,
    )
    upload = await tenant.uploads.CreateUpload(
        pb.CreateUploadRequest(file_name="a.csv"), metadata=tenant.metadata
    )
    keys = await tenant.api_keys.ListApiKeys(
        pb.ListApiKeysRequest(), metadata=tenant.metadata
    )
    return Owned(tenant, configuration.id, job.id, upload.id, keys.api_keys[0].id)


def _needs_notifier(method: str, platform: Platform) -> None:
    delivery = method.startswith("DeliveryService/") or method.endswith("Deliveries")
    if delivery and not platform.notifier:
        pytest.skip("the notifier is not running")


@pytest.mark.parametrize("method", sorted(CALLS))
async def test_another_organization_gets_not_found_or_only_its_own(
    method: str, platform: Platform, owned: Owned, other_tenant: Tenant
) -> None:
    _needs_notifier(method, platform)
    kind, call = CALLS[method]
    if kind == "not_found":
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(other_tenant, owned)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND, info.value.details()
    else:
        reply = await call(other_tenant, owned)
        text = str(reply)
        for secret in (owned.configuration_id, owned.job_id, owned.key_id):
            assert secret not in text
        assert owned.tenant.organization_id not in text
        if method == "QueueService/GetQueueStats":
            assert not reply.all_organizations
            assert sum(reply.jobs_by_status.values()) == 0
    # The first organization's things are all still there and untouched.
    job = await owned.tenant.jobs.GetJob(
        pb.GetJobRequest(id=owned.job_id), metadata=owned.tenant.metadata
    )
    assert job.status == Job.COMPLETED
    configuration = await owned.tenant.configurations.GetConfiguration(
        pb.GetConfigurationRequest(id=owned.configuration_id),
        metadata=owned.tenant.metadata,
    )
    assert configuration.version == 1


@pytest.mark.parametrize("method", sorted(CALLS))
@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Bearer mk_not_a_real_key"),),
        (("x-api-key", "nonsense"),),
        (("authorization", "Basic dXNlcjpwYXNz"),),
    ],
    ids=["none", "unknown", "malformed", "basic"],
)
async def test_every_method_needs_a_valid_key(
    method: str, metadata: tuple[tuple[str, str], ...], tenant: Tenant
) -> None:
    _, call = CALLS[method]
    owned = Owned(tenant, "cfg_x", "job_x", "upl_x", "key_x")

    class _Anonymous(Tenant):
        @property
        def metadata(self) -> tuple[tuple[str, str], ...]:
            return metadata

    anonymous = _Anonymous(tenant.organization_id, "", tenant.channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(anonymous, owned)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "key" in (info.value.details() or "").lower() or "authorization" in (
        info.value.details() or ""
    )
