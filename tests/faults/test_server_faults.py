"""Faults of servers: NATS restarted, S3 stopped for 10 s, PostgreSQL restarted.

Each test has a platform of its own (a restart must not disturb others). Jobs
are submitted before the fault (some waiting in the queue, some mid-job) and
during it (the client retries what the platform cannot take yet); afterwards
every job has completed exactly once, as the client sees it.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from typing import Any

import pytest

from mutate.client import NO_RETRY, ApiError, MutateClient
from mutate.devstack.harness import PlatformHarness

from .conftest import MakeTenant
from .support import (
    TenantClient,
    assert_each_completed_once,
    assert_healthy,
    platform_options,
)

pytestmark = pytest.mark.slow


def _during(fault: Callable[[], object], tenant: TenantClient, count: int) -> list[str]:
    """Run `fault` while `count` jobs are submitted one after another."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        submitted = pool.submit(tenant.submit_many, count)
        fault()
        return submitted.result(timeout=120)


def test_nats_restarted_while_jobs_wait(
    platform_factory: Any, make_tenant: MakeTenant
) -> None:
    platform: PlatformHarness = platform_factory(**platform_options())
    tenant = make_tenant(platform)
    # One worker, one engine process, 400 ms a job: most of these wait.
    before = tenant.submit_many(12)
    during = _during(platform.nats.restart, tenant, 4)
    after = tenant.submit_many(2)
    assert_each_completed_once(tenant, before + during + after)
    assert_healthy(platform)


def test_s3_stopped_for_ten_seconds(
    platform_factory: Any, make_tenant: MakeTenant
) -> None:
    platform: PlatformHarness = platform_factory(**platform_options())
    tenant = make_tenant(platform)
    before = tenant.submit_many(12)
    outage: dict[str, float] = {}

    def outage_of_ten_seconds() -> None:
        platform.s3.stop()
        outage["down"] = time.monotonic()
        time.sleep(10.0)
        outage["up"] = time.monotonic()
        platform.s3.start()

    during = _during(outage_of_ten_seconds, tenant, 4)
    assert outage["up"] - outage["down"] >= 10.0
    assert_each_completed_once(tenant, before + during, timeout=120)
    assert_healthy(platform)
    # Outputs are really there: a fresh download of each works.
    for job_id in before + during:
        assert tenant.client.get_download(job_id).url


def test_postgres_restarted(platform_factory: Any, make_tenant: MakeTenant) -> None:
    """Down for 8 s: the gateway serves again within seconds of its return.

    (psycopg_pool's reconnection backoff doubles up to 300 s by default; the
    gateway bounds it by MUTATE_DATABASE_TIMEOUT_MS, 2 s here.)
    """
    platform: PlatformHarness = platform_factory(
        **platform_options(
            service_env={"gateway": {"MUTATE_DATABASE_TIMEOUT_MS": "2000"}}
        )
    )
    tenant = make_tenant(platform)
    before = tenant.submit_many(12)
    probe = MutateClient(platform.gateway_address, tenant.api_key, retries=NO_RETRY)
    times: dict[str, float] = {}

    def restart() -> None:
        platform.postgres.stop()
        time.sleep(8.0)
        platform.postgres.start()
        times["up"] = time.monotonic()
        # How long until the gateway answers from the database again.
        while time.monotonic() - times["up"] < 60:
            try:
                probe.get_job(before[0])
            except ApiError:
                time.sleep(0.1)
                continue
            times["serving"] = time.monotonic()
            return

    try:
        during = _during(restart, tenant, 4)
    finally:
        probe.close()
    assert times["serving"] - times["up"] < 4.0, times
    after = tenant.submit_many(2)
    assert_each_completed_once(tenant, before + during + after)
    assert_healthy(platform)
