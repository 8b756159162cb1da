"""Fixtures of the fault suite: platforms with short time constants, tenants.

Faults of processes (a worker, the notifier, the webhook receiver) share one
platform per module; faults of servers (NATS, S3, PostgreSQL) each take a
platform of their own from `platform_factory`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from mutate.devstack.harness import PlatformHarness, start_platform

from .support import TenantClient, new_tenant, platform_options, show_logs_on_failure


@pytest.fixture(scope="module")
def process_platform(devstack_dir: Path) -> Iterator[PlatformHarness]:
    """A platform with two queue workers, shared by a module's tests."""
    platform = start_platform(
        devstack_dir / f"faults-{uuid.uuid4().hex[:8]}", **platform_options(workers=2)
    )
    try:
        yield platform
    finally:
        platform.stop()


class MakeTenant(Protocol):
    def __call__(
        self, platform: PlatformHarness, *, receiver: bool = True
    ) -> TenantClient: ...


@pytest.fixture
def make_tenant(request: pytest.FixtureRequest) -> Iterator[MakeTenant]:
    """`make_tenant(platform)`: an organization with a client and a receiver."""
    made: list[TenantClient] = []

    def make(platform: PlatformHarness, *, receiver: bool = True) -> TenantClient:
        tenant = new_tenant(platform, receiver=receiver)
        made.append(tenant)
        return tenant

    yield make
    for tenant in made:
        show_logs_on_failure(request, tenant.platform)
        tenant.close()
