"""The full-platform harness itself: workers, settings, tenants, faults."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from mutate.devstack.harness import parse_create_org
from mutate.devstack.processes import ProcessState, check_health
from mutate.devstack.pytest_plugin import PlatformFactory
from mutate.v1 import job_pb2

from .support import REPO_ROOT, Api, load_configuration

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CONFIG = REPO_ROOT / "examples" / "configurations" / "kansas-csv-cleanup.json"
CSV = b"state,county,acquisition_cost,item_name\nKS,ALLEN,1,a\nKS,BOURBON,2,b\n"


def test_parse_create_org() -> None:
    output = (
        "organization_id: org_abc\n"
        "webhook_secret (shown once): whsec_Zm9v\n"
        "api_key_id: key_1 name=default scopes=-\n"
        "api key (shown once, on the next line):\n"
        "mk_secret\n"
    )
    org, key, secret = parse_create_org(output)
    assert (org, key, secret) == ("org_abc", "mk_secret", "whsec_Zm9v")
    assert parse_create_org("organization_id: org_x (exists)\nmk_y\n") == (
        "org_x",
        "mk_y",
        None,
    )


def test_platform_with_two_workers_survives_a_killed_worker(
    platform_factory: PlatformFactory,
) -> None:
    platform = platform_factory(
        workers=2,
        per_service_env={"worker": {"MUTATE_WORKER_CONCURRENCY": "3"}},
    )
    names = [p.name for p in platform.processes]
    assert names == [
        "storage",
        "transformer",
        "worker-1",
        "worker-2",
        "notifier",
        "gateway",
    ]
    # Settings reach the processes they were meant for, and only those.
    assert platform.service_env("worker")["MUTATE_WORKER_CONCURRENCY"] == "3"
    assert "MUTATE_WORKER_CONCURRENCY" not in platform.service_env("transformer")
    assert platform.process("worker-1").env["MUTATE_WORKER_CONCURRENCY"] == "3"
    assert platform.rest_url.startswith("http://127.0.0.1:")

    org_id, api_key, secret = platform.create_tenant()
    assert org_id.startswith("org_") and api_key.startswith("mk_")
    assert secret is not None and secret.startswith("whsec_")

    worker = platform.process("worker-1")
    worker.kill()
    assert worker.state is ProcessState.STOPPED and not worker.is_alive()
    # The other worker still works the queue.
    status = asyncio.run(_one_queued_job(platform.gateway_address, api_key))
    assert status == job_pb2.Job.COMPLETED

    worker.start()
    assert worker.is_alive()
    assert check_health(worker.health_address or "")


async def _one_queued_job(address: str, api_key: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        api = Api(channel, api_key)
        try:
            config_id = await api.create_configuration(load_configuration(CONFIG))
            job = await api.submit(config_id, CSV, "ks.csv", mode=job_pb2.Job.ASYNC)
            job = await api.wait(job, timeout=60)
            return int(job.status)
        finally:
            await api.close()
