"""The admin command line, the start-up migration, and the limits and the
sweeper of an in-process gateway replica."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid

import grpc
import pytest

from mutate.devstack import _proc
from mutate.devstack import stack as stk
from mutate.gateway.db import Database
from mutate.v1 import job_pb2, public_api_pb2

from .conftest import Platform, ReplicaFactory, TenantFactory, tenant_on
from .helpers import CSV, Tenant, wait_for_status

pb = public_api_pb2
Job = job_pb2.Job


def _admin(platform: Platform, *args: str) -> subprocess.CompletedProcess[str]:
    env = stk.clean_environment()
    env.update(stk.service_environment(platform.info, "gateway"))
    return subprocess.run(
        [str(_proc.find_executable("mutate-gateway")), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_admin_creates_organizations_and_keys(
    platform: Platform, channel: grpc.aio.Channel
) -> None:
    name = f"acme-{uuid.uuid4().hex[:8]}"
    made = await asyncio.to_thread(
        _admin, platform, "admin", "create-org", "--name", name
    )
    assert made.returncode == 0, made.stderr
    lines = made.stdout.strip().splitlines()
    organization_id = lines[0].split()[1]
    key = lines[-1]
    assert organization_id.startswith("org_") and key.startswith("mk_")
    if platform.notifier:
        assert "whsec_" in made.stdout

    tenant = Tenant(organization_id, key, channel)
    stats = await tenant.queue.GetQueueStats(
        pb.GetQueueStatsRequest(), metadata=tenant.metadata
    )
    assert not stats.all_organizations

    again = await asyncio.to_thread(
        _admin, platform, "admin", "create-org", "--name", name
    )
    assert again.returncode == 1
    assert "exists" in again.stderr
    fresh = await asyncio.to_thread(
        _admin, platform, "admin", "create-org", "--name", name, "--if-missing"
    )
    assert fresh.returncode == 0, fresh.stderr
    assert organization_id in fresh.stdout
    assert fresh.stdout.strip().splitlines()[-1] not in (key, "")

    operator = await asyncio.to_thread(
        _admin,
        platform,
        "admin",
        "create-key",
        "--org",
        organization_id,
        "--name",
        "ops",
        "--operator",
    )
    assert operator.returncode == 0, operator.stderr
    ops = Tenant(organization_id, operator.stdout.strip().splitlines()[-1], channel)
    stats = await ops.queue.GetQueueStats(
        pb.GetQueueStatsRequest(), metadata=ops.metadata
    )
    assert stats.all_organizations

    missing = await asyncio.to_thread(
        _admin, platform, "admin", "create-key", "--org", "org_nope", "--name", "x"
    )
    assert missing.returncode == 1

    migrate = await asyncio.to_thread(_admin, platform, "migrate")
    assert migrate.returncode == 0
    assert "up to date" in migrate.stdout


async def test_rate_limit_answers_resource_exhausted_with_retry_info(
    make_replica: ReplicaFactory, make_tenant: TenantFactory
) -> None:
    replica = await make_replica(
        MUTATE_RATE_LIMIT_PER_SECOND="5", MUTATE_RATE_LIMIT_BURST="5"
    )
    tenant = await tenant_on(replica, make_tenant)
    codes = []
    for _ in range(8):
        try:
            await tenant.jobs.ListJobs(pb.ListJobsRequest(), metadata=tenant.metadata)
            codes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as exc:
            codes.append(exc.code())
            trailers = dict(exc.trailing_metadata() or ())
            assert "grpc-status-details-bin" in trailers
    assert codes[:5] == [grpc.StatusCode.OK] * 5
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes[5:]
    await tenant.channel.close()


async def test_queued_job_limit_and_the_sweeper(
    make_replica: ReplicaFactory, make_tenant: TenantFactory
) -> None:
    replica = await make_replica(
        MUTATE_MAX_QUEUED_JOBS="1", MUTATE_REQUEUE_AFTER_MS="0"
    )
    tenant = await tenant_on(replica, make_tenant)
    configuration = await tenant.configuration()
    assert replica.db is not None
    db: Database = replica.db
    # Pretend a replica died after inserting a row: pending, never handed on.
    first = await tenant.jobs.CreateJob(
        pb.CreateJobRequest(
            configuration_id=configuration.id, file_content=CSV, mode=Job.ASYNC
        ),
        metadata=tenant.metadata,
    )
    await db.execute(
        "UPDATE jobs SET status = 'pending', event_rank = 0, dispatched_at = NULL,"
        " attempt = attempt + 1 WHERE id = %s",
        (first.id,),
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await tenant.jobs.CreateJob(
            pb.CreateJobRequest(configuration_id=configuration.id, file_content=CSV),
            metadata=tenant.metadata,
        )
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "pending or running" in (info.value.details() or "")

    assert replica.sweeper is not None
    queued = await replica.sweeper.sweep()
    assert queued >= 1
    done = await wait_for_status(tenant, first.id, Job.COMPLETED)
    assert done.attempt == first.attempt + 1
    await tenant.channel.close()


def test_settings_refuse_nonsense() -> None:
    from mutate.common.settings import SettingsError, load
    from mutate.gateway.settings import GatewaySettings

    base = {"MUTATE_DATABASE_URL": "postgresql:///x"}
    load(GatewaySettings, base)
    for bad in (
        {"MUTATE_HTTP_PORT": "0"},
        {"MUTATE_SYNC_MAX_BYTES": str(2**40)},
        {"WEBHOOK_ALLOWED_NETWORKS": "not-a-net"},
        {"MUTATE_DOWNLOAD_URL_TTL_MS": str(8 * 24 * 3600 * 1000)},
    ):
        with pytest.raises(SettingsError):
            load(GatewaySettings, {**base, **bad})
    with pytest.raises(SettingsError):
        load(GatewaySettings, {})
    assert os.environ is not None
