"""ConfigurationService and ApiKeyService over gRPC."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from mutate.v1 import configuration_pb2, public_api_pb2

from .helpers import CSV, Tenant, csv_configuration

pb = public_api_pb2


async def _error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def test_configuration_lifecycle_keeps_every_version(tenant: Tenant) -> None:
    created = await tenant.configuration(
        name="Monthly sales", webhook_url="http://127.0.0.1:9/hook"
    )
    assert created.id.startswith("cfg_")
    assert created.version == 1
    assert created.webhook_url == "http://127.0.0.1:9/hook"

    patch = configuration_pb2.Configuration(
        id=created.id,
        description="changed",
        name="ignored: not in the mask",
    )
    updated = await tenant.configurations.UpdateConfiguration(
        pb.UpdateConfigurationRequest(
            configuration=patch,
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
            expected_version=1,
        ),
        metadata=tenant.metadata,
    )
    assert (updated.version, updated.name, updated.description) == (
        2,
        "Monthly sales",
        "changed",
    )
    # A stale expected version conflicts instead of overwriting.
    error = await _error(
        tenant.configurations.UpdateConfiguration(
            pb.UpdateConfigurationRequest(
                configuration=patch,
                update_mask=field_mask_pb2.FieldMask(paths=["description"]),
                expected_version=1,
            ),
            metadata=tenant.metadata,
        )
    )
    assert error.code() == grpc.StatusCode.ABORTED
    assert "version 2" in (error.details() or "")

    old = await tenant.configurations.GetConfiguration(
        pb.GetConfigurationRequest(id=created.id, version=1), metadata=tenant.metadata
    )
    assert old.version == 1 and not old.description
    versions = await tenant.configurations.ListConfigurationVersions(
        pb.ListConfigurationVersionsRequest(id=created.id, page_size=1),
        metadata=tenant.metadata,
    )
    assert [v.version for v in versions.versions] == [2]
    rest = await tenant.configurations.ListConfigurationVersions(
        pb.ListConfigurationVersionsRequest(
            id=created.id, page_size=1, page_token=versions.next_page_token
        ),
        metadata=tenant.metadata,
    )
    assert [v.version for v in rest.versions] == [1]
    assert not rest.next_page_token

    # A job may run a past version.
    job = await tenant.jobs.CreateJob(
        pb.CreateJobRequest(
            configuration_id=created.id, configuration_version=1, file_content=CSV
        ),
        metadata=tenant.metadata,
    )
    assert job.configuration_version == 1

    await tenant.configurations.DeleteConfiguration(
        pb.DeleteConfigurationRequest(id=created.id), metadata=tenant.metadata
    )
    error = await _error(
        tenant.configurations.GetConfiguration(
            pb.GetConfigurationRequest(id=created.id), metadata=tenant.metadata
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    # Its jobs stay readable.
    kept = await tenant.jobs.GetJob(
        pb.GetJobRequest(id=job.id), metadata=tenant.metadata
    )
    assert kept.configuration_id == created.id


async def test_list_configurations_searches_and_pages(tenant: Tenant) -> None:
    for name in ("Alpha report", "beta REPORT", "gamma", "100% done_x"):
        await tenant.configuration(name=name)
    found = await tenant.configurations.ListConfigurations(
        pb.ListConfigurationsRequest(name_contains="report"), metadata=tenant.metadata
    )
    assert sorted(c.name for c in found.configurations) == [
        "Alpha report",
        "beta REPORT",
    ]
    literal = await tenant.configurations.ListConfigurations(
        pb.ListConfigurationsRequest(name_contains="% done_"), metadata=tenant.metadata
    )
    assert [c.name for c in literal.configurations] == ["100% done_x"]
    seen = []
    token = ""
    while True:
        page = await tenant.configurations.ListConfigurations(
            pb.ListConfigurationsRequest(page_size=3, page_token=token),
            metadata=tenant.metadata,
        )
        seen += [c.id for c in page.configurations]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 4
    error = await _error(
        tenant.configurations.ListConfigurations(
            pb.ListConfigurationsRequest(page_size=1000), metadata=tenant.metadata
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("configuration", "words"),
    [
        (csv_configuration(name=""), "name is required"),
        (
            csv_configuration(
                conversion_type=configuration_pb2.CONVERSION_TYPE_UNSPECIFIED
            ),
            "conversionType is required",
        ),
        (csv_configuration(webhook_url="file:///etc/passwd"), "http"),
        (csv_configuration(webhook_url="http://10.1.2.3/hook"), "private"),
        (
            csv_configuration(
                rules=[
                    configuration_pb2.Rule(
                        id="sheet",
                        select_worksheet=configuration_pb2.SelectWorksheet(name="x"),
                    )
                ]
            ),
            "sheet",
        ),
        (
            csv_configuration(
                rules=[
                    configuration_pb2.Rule(
                        id=f"r{i}",
                        delete_rows=configuration_pb2.DeleteRows(
                            condition=configuration_pb2.DeleteRows.EMPTY
                        ),
                    )
                    for i in range(1001)
                ]
            ),
            "at most 1000 rules; this one has 1001",
        ),
    ],
)
async def test_invalid_configurations_are_refused_with_the_reason(
    tenant: Tenant, configuration: configuration_pb2.Configuration, words: str
) -> None:
    error = await _error(
        tenant.configurations.CreateConfiguration(
            pb.CreateConfigurationRequest(configuration=configuration),
            metadata=tenant.metadata,
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in (error.details() or ""), error.details()


async def test_update_mask_must_name_writable_fields(tenant: Tenant) -> None:
    created = await tenant.configuration()
    for paths in (["id"], ["nope"], ["version"]):
        error = await _error(
            tenant.configurations.UpdateConfiguration(
                pb.UpdateConfigurationRequest(
                    configuration={"id": created.id},
                    update_mask=field_mask_pb2.FieldMask(paths=paths),
                ),
                metadata=tenant.metadata,
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    # camelCase paths (what REST clients write) work too.
    updated = await tenant.configurations.UpdateConfiguration(
        pb.UpdateConfigurationRequest(
            configuration={"id": created.id, "webhook_url": "https://127.0.0.1/h"},
            update_mask=field_mask_pb2.FieldMask(paths=["webhookUrl"]),
        ),
        metadata=tenant.metadata,
    )
    assert updated.webhook_url == "https://127.0.0.1/h"
    assert updated.version == 2


async def test_test_configuration_previews_without_a_job(tenant: Tenant) -> None:
    created = await tenant.configuration()
    preview = await tenant.configurations.TestConfiguration(
        pb.TestConfigurationRequest(id=created.id, file_content=CSV, max_rows=2),
        metadata=tenant.metadata,
    )
    assert list(preview.after.header) == ["name", "amount"]
    assert len(preview.after.rows) == 2
    assert preview.after.total_rows == 3
    jobs = await tenant.jobs.ListJobs(pb.ListJobsRequest(), metadata=tenant.metadata)
    assert not jobs.jobs
    error = await _error(
        tenant.configurations.TestConfiguration(
            pb.TestConfigurationRequest(id=created.id), metadata=tenant.metadata
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_api_keys_are_listed_created_used_and_revoked(tenant: Tenant) -> None:
    made = await tenant.api_keys.CreateApiKey(
        pb.CreateApiKeyRequest(name="ci"), metadata=tenant.metadata
    )
    assert made.secret.startswith("mk_")
    assert made.api_key.prefix == made.secret[:10]
    assert not made.api_key.scopes
    # The new key works, with either header.
    for metadata in (
        (("x-api-key", made.secret),),
        (("authorization", f"bearer {made.secret}"),),
    ):
        await tenant.jobs.ListJobs(pb.ListJobsRequest(), metadata=metadata)
    listed = await tenant.api_keys.ListApiKeys(
        pb.ListApiKeysRequest(), metadata=tenant.metadata
    )
    by_id = {k.id: k for k in listed.api_keys}
    assert by_id[made.api_key.id].HasField("last_used_time")
    assert made.secret not in str(listed)
    assert len(listed.api_keys) == 2

    revoked = await tenant.api_keys.RevokeApiKey(
        pb.RevokeApiKeyRequest(id=made.api_key.id), metadata=tenant.metadata
    )
    assert revoked.HasField("revoke_time")
    error = await _error(
        tenant.jobs.ListJobs(
            pb.ListJobsRequest(), metadata=(("x-api-key", made.secret),)
        )
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    error = await _error(
        tenant.api_keys.CreateApiKey(
            pb.CreateApiKeyRequest(name=" "), metadata=tenant.metadata
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
