"""Fixtures of the abuse suite: one platform for all of it, and its health.

The platform runs with a low cell limit (so a workbook that really holds too
many cells is cheap to build) and a small REST body limit; everything else is
as deployed. After every test the platform must still be healthy: every
service SERVING, REST /readyz 200, and a good job (sync and queued) completes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mutate.devstack.harness import PlatformHarness, start_platform

from ..faults.support import (
    Job,
    TenantClient,
    assert_healthy,
    new_tenant,
    show_logs_on_failure,
)

# Above what calamine_issue_174.xlsx holds (49,174 cell elements, 2 data rows,
# a dimension of A1:XFD1048576), below what the dense workbook holds.
MAX_CELLS = 60_000
MAX_BODY_BYTES = 1024 * 1024
ABUSE_SERVICE_ENV = {
    "transformer": {"MUTATE_LIMIT_MAX_CELLS": str(MAX_CELLS)},
    "gateway": {"MUTATE_HTTP_MAX_BODY_BYTES": str(MAX_BODY_BYTES)},
    "notifier": {
        "WEBHOOK_BACKOFF_BASE_MS": "200",
        "WEBHOOK_BACKOFF_MAX_MS": "1000",
        "WEBHOOK_POLL_INTERVAL_MS": "100",
        "WEBHOOK_FETCH_WAIT_MS": "200",
    },
}


@pytest.fixture(scope="package")
def abuse_platform(devstack_dir: Path) -> Iterator[PlatformHarness]:
    platform = start_platform(
        devstack_dir / f"abuse-{uuid.uuid4().hex[:8]}",
        per_service_env=ABUSE_SERVICE_ENV,
    )
    try:
        yield platform
    finally:
        platform.stop()


@pytest.fixture
def tenant(
    request: pytest.FixtureRequest, abuse_platform: PlatformHarness
) -> Iterator[TenantClient]:
    """An organization with a client, a CSV configuration and a receiver."""
    made = new_tenant(abuse_platform)
    yield made
    show_logs_on_failure(request, abuse_platform)
    made.close()


@pytest.fixture
def other(abuse_platform: PlatformHarness) -> Iterator[TenantClient]:
    """A second organization."""
    made = new_tenant(abuse_platform)
    yield made
    made.close()


@pytest.fixture(autouse=True)
def stays_healthy(
    request: pytest.FixtureRequest, abuse_platform: PlatformHarness
) -> Iterator[None]:
    """After each abuse: all services healthy and the next good job completes."""
    yield
    report = getattr(request.node, "_mutate_report_call", None)
    if report is None or report.failed:
        return
    assert_healthy(abuse_platform)
    probe = new_tenant(abuse_platform)
    try:
        job_ids = []
        for mode in ("auto", "async"):
            job = probe.submit(mode=mode)
            final = probe.client.wait(job.id, timeout=60)
            assert final.status == probe.client.get_job(job.id).status
            assert final.status == Job.COMPLETED, final
            job_ids.append(job.id)
        download = probe.client.get_download(job.id)
        assert httpx.get(download.url, timeout=10).content.startswith(b"name,")
        probe.receiver.wait_delivered(job_ids, timeout=30)
    finally:
        probe.close()
