"""Faults of processes: no job lost, none completed twice, as a client sees it.

A queue worker SIGKILLed mid-job, the webhook receiver down for the first
tries, the notifier restarted between tries, and 200 concurrent CreateJob
calls that repeat 50 idempotency keys. One platform (two queue workers) for
the module; each test its own organization.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import time
import uuid

import nats
import pytest

from mutate.devstack.harness import PlatformHarness
from mutate.v1 import events_pb2

from .conftest import MakeTenant
from .support import (
    Delivery,
    assert_each_completed_once,
    assert_healthy,
    wait_until,
)

pytestmark = pytest.mark.slow

Event = events_pb2.JobEvent


def _events(platform: PlatformHarness, org_id: str) -> list[tuple[str, int, str]]:
    """(job id, event type, worker id) of every event of the organization."""

    async def read() -> list[tuple[str, int, str]]:
        nc = await nats.connect(
            platform.info.nats_url, connect_timeout=5, max_reconnect_attempts=0
        )
        found: list[tuple[str, int, str]] = []
        try:
            subscription = await nc.jetstream().subscribe(
                f"mutate.events.{org_id}.>", ordered_consumer=True
            )
            while True:
                try:
                    msg = await subscription.next_msg(timeout=0.5)
                except (nats.errors.TimeoutError, TimeoutError):
                    break
                event = Event.FromString(msg.data)
                found.append((event.job_id, event.type, event.worker_id))
                if msg.metadata.num_pending == 0:
                    break  # the stream as it was: do not wait for new events
            await subscription.unsubscribe()
        finally:
            await nc.close()
        return found

    return asyncio.run(read())


def test_worker_sigkilled_mid_job(
    process_platform: PlatformHarness, make_tenant: MakeTenant
) -> None:
    platform = process_platform
    tenant = make_tenant(platform)
    victim = platform.process("worker-1")
    victim_id = f"-{victim.pid}"
    job_ids = tenant.submit_many(12)

    def victim_is_busy() -> bool:
        events = _events(platform, tenant.org_id)
        done = {j for j, kind, _ in events if kind == Event.COMPLETED}
        return any(
            kind == Event.STARTED and worker.endswith(victim_id) and j not in done
            for j, kind, worker in events
        )

    wait_until(victim_is_busy, timeout=30, what="worker-1 to start a job")
    victim.kill()
    events = _events(platform, tenant.org_id)
    done = {j for j, kind, _ in events if kind == Event.COMPLETED}
    interrupted = {
        j
        for j, kind, worker in events
        if kind == Event.STARTED and worker.endswith(victim_id) and j not in done
    }
    assert interrupted, "the kill did not land mid-job"
    time.sleep(1.0)
    victim.start()

    assert_each_completed_once(tenant, job_ids)
    # The interrupted jobs were finished by another delivery (the survivor,
    # or the restarted worker), never by the dead process.
    finishers = {
        j: worker
        for j, kind, worker in _events(platform, tenant.org_id)
        if kind == Event.COMPLETED
    }
    for job_id in interrupted:
        assert not finishers[job_id].endswith(victim_id), finishers[job_id]
    assert_healthy(platform)


def test_webhook_receiver_down_for_the_first_tries(
    process_platform: PlatformHarness, make_tenant: MakeTenant
) -> None:
    tenant = make_tenant(process_platform, receiver=False)
    job_ids = tenant.submit_many(10)
    tenant.wait_terminal(job_ids, timeout=60)

    def tried_twice() -> bool:
        for job_id in job_ids:
            deliveries = tenant.client.list_job_deliveries(job_id).deliveries
            if not deliveries or deliveries[0].try_count < 2:
                return False
        return True

    # Connection refused, then retried with backoff: nothing is given up.
    wait_until(tried_twice, timeout=30, what="two refused tries of each webhook")
    for job_id in job_ids:
        (delivery,) = tenant.client.list_job_deliveries(job_id).deliveries
        assert delivery.status == Delivery.PENDING, delivery
        assert delivery.last_error, delivery
    assert not tenant.receiver.tries
    tenant.receiver.start()

    assert_each_completed_once(tenant, job_ids)
    for job_id in job_ids:
        (delivery,) = tenant.client.list_job_deliveries(job_id).deliveries
        assert delivery.try_count >= 3
        # Only the try that reached the receiver: one POST per webhook id.
        assert tenant.receiver.tries_of(delivery.webhook_id) == 1


def test_notifier_restarted_between_tries(
    process_platform: PlatformHarness, make_tenant: MakeTenant
) -> None:
    platform = process_platform
    tenant = make_tenant(platform)
    tenant.receiver.fail_all()
    job_ids = tenant.submit_many(10)
    tenant.wait_terminal(job_ids, timeout=60)
    wait_until(
        lambda: len({t.webhook_id for t in tenant.receiver.tries}) >= len(job_ids),
        timeout=30,
        what="a first (failed) try of every webhook",
    )
    notifier = platform.process("notifier")
    notifier.stop()
    stopped_at = time.time()
    tries_before = len(tenant.receiver.tries)
    time.sleep(1.5)
    assert len(tenant.receiver.tries) == tries_before, "tries while stopped"
    tenant.receiver.fail_all(False)
    notifier.start()
    restarted_at = time.time()

    assert_each_completed_once(tenant, job_ids)
    by_id = collections.defaultdict(list)
    for t in tenant.receiver.tries:
        by_id[t.webhook_id].append(t)
    assert len(by_id) == len(job_ids)
    for webhook_id, tries in by_id.items():
        answers = [t.answered for t in tries]
        assert answers[-1] == 200 and set(answers[:-1]) == {500}, (webhook_id, answers)
        # The retry schedule survived the restart, in PostgreSQL.
        assert tries[0].at < stopped_at < tries[-1].at, webhook_id
    assert min(t.at for t in tenant.receiver.tries if t.answered == 200) > stopped_at
    assert restarted_at > stopped_at
    assert_healthy(platform)


def test_200_concurrent_submits_with_duplicate_idempotency_keys(
    process_platform: PlatformHarness, make_tenant: MakeTenant
) -> None:
    tenant = make_tenant(process_platform)
    keys = [f"dup-{uuid.uuid4().hex}" for _ in range(50)]
    requests = [key for key in keys for _ in range(4)]
    assert len(requests) == 200

    def submit(key: str) -> tuple[str, str]:
        # The same request for one key: same name, file and webhook.
        return key, tenant.submit(mode="auto", key=key, name=f"{key}.csv").id

    with concurrent.futures.ThreadPoolExecutor(max_workers=200) as pool:
        results = list(pool.map(submit, requests))
    by_key: dict[str, set[str]] = collections.defaultdict(set)
    for key, job_id in results:
        by_key[key].add(job_id)
    assert all(len(ids) == 1 for ids in by_key.values()), by_key
    job_ids = sorted({job_id for ids in by_key.values() for job_id in ids})
    assert len(job_ids) == len(keys)
    listed: list[str] = []
    token = ""
    while True:
        page = tenant.client.list_jobs(page_size=100, page_token=token)
        listed += [j.id for j in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert sorted(listed) == job_ids

    assert_each_completed_once(tenant, job_ids, timeout=120)
