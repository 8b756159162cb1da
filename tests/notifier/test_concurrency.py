"""A slow receiver holds at most its own slots; the rest keep flowing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from mutate.common import topology, webhooks
from mutate.notifier._store import DeliveryStore
from mutate.v1 import events_pb2

from .conftest import (
    Receiver,
    Reply,
    StartNotifier,
    job_event,
    publish,
    running_receiver,
)


async def test_slow_endpoint_does_not_starve_the_others(
    start_notifier: StartNotifier, topology_ready: Any
) -> None:
    await start_notifier(
        WEBHOOK_SECRET=webhooks.generate_secret(),
        WEBHOOK_CONCURRENCY=4,
        WEBHOOK_ENDPOINT_CONCURRENCY=2,
        WEBHOOK_TIMEOUT=10_000,
    )
    async with running_receiver() as slow, running_receiver() as fast:
        slow.default("/slow", Reply(delay=1.5))
        for _ in range(6):
            await publish(
                topology_ready,
                job_event(events_pb2.JobEvent.FAILED, url=slow.url("/slow")),
            )
        await asyncio.sleep(0.3)
        started = time.monotonic()
        for _ in range(6):
            await publish(
                topology_ready,
                job_event(events_pb2.JobEvent.FAILED, url=fast.url("/fast")),
            )
        await fast.wait_for("/fast", 6, timeout=10)
        fast_done = time.monotonic() - started
        # The slow receiver got only its two slots at a time.
        assert fast_done < 1.5
        assert len(slow.calls_to("/slow")) <= 2
        await slow.wait_for("/slow", 4, timeout=10)


async def test_new_deliveries_are_tried_without_a_claim(
    start_notifier: StartNotifier,
    topology_ready: Any,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    claims = 0
    claim_due = DeliveryStore.claim_due

    async def counted(self: DeliveryStore, **kwargs: Any) -> Any:
        nonlocal claims
        claims += 1
        return await claim_due(self, **kwargs)

    monkeypatch.setattr(DeliveryStore, "claim_due", counted)
    # Polls too far apart to matter: only the hand-over can be this quick.
    notifier = await start_notifier(
        WEBHOOK_SECRET=webhooks.generate_secret(), WEBHOOK_POLL_INTERVAL_MS=60_000
    )
    await asyncio.sleep(0.2)
    before = claims
    event = job_event(events_pb2.JobEvent.FAILED, url=receiver.url("/direct"))
    await publish(topology_ready, event)
    # A repeat of the event (no de-duplication id): one delivery, no slot kept.
    subject = topology.event_subject("org_a", event.job_id, "failed")
    await topology_ready.publish(subject, event.SerializeToString())

    await receiver.wait_for("/direct", 1, timeout=10)
    await asyncio.sleep(0.3)
    assert len(receiver.calls_to("/direct")) == 1
    assert claims == before
    assert notifier.dispatcher is not None
    assert notifier.dispatcher.busy == 0


async def test_deliveries_past_the_free_slots_follow_without_waiting_for_a_poll(
    start_notifier: StartNotifier, topology_ready: Any, receiver: Receiver
) -> None:
    await start_notifier(
        WEBHOOK_SECRET=webhooks.generate_secret(),
        WEBHOOK_POLL_INTERVAL_MS=60_000,
        WEBHOOK_CONCURRENCY=1,
    )
    receiver.default("/queue", Reply(delay=0.2))
    for _ in range(4):
        await publish(
            topology_ready,
            job_event(events_pb2.JobEvent.FAILED, url=receiver.url("/queue")),
        )
    # One slot: the first is handed over, the rest claimed as it frees.
    calls = await receiver.wait_for("/queue", 4, timeout=10)
    assert len({c.headers["webhook-id"] for c in calls}) == 4
