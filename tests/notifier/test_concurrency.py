"""A slow receiver holds at most its own slots; the rest keep flowing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mutate.common import webhooks
from mutate.v1 import events_pb2

from .conftest import Reply, StartNotifier, job_event, publish, running_receiver


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
