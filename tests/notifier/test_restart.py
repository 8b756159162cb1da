"""Retries live in PostgreSQL: a notifier killed between tries resumes them."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from mutate.common import webhooks
from mutate.v1 import events_pb2, webhook_pb2, webhook_pb2_grpc

from .conftest import Receiver, Reply, job_event, publish

pytestmark = pytest.mark.slow


def notifier_command() -> list[str]:
    script = Path(sys.executable).parent / "mutate-notifier"
    return [str(script if script.exists() else shutil.which("mutate-notifier"))]


async def wait_delivery(address: str, job_id: str, done: Callable[[Any], bool]) -> Any:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = webhook_pb2_grpc.NotifierServiceStub(channel)
        async with asyncio.timeout(20):
            while True:
                reply = await stub.ListDeliveries(
                    webhook_pb2.NotifierListDeliveriesRequest(
                        organization_id="org_a", job_id=job_id
                    )
                )
                if reply.deliveries and done(reply.deliveries[0]):
                    return reply.deliveries[0]
                await asyncio.sleep(0.05)


async def test_killed_notifier_resumes_tries_after_restart(
    start_process: Any,
    notifier_env: dict[str, str],
    receiver: Receiver,
    topology_ready: Any,
) -> None:
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MUTATE_", "WEBHOOK_"))
        },
        **notifier_env,
        "WEBHOOK_BACKOFF_BASE_MS": "2000",
        "WEBHOOK_BACKOFF_FACTOR": "1",
        "WEBHOOK_BACKOFF_JITTER": "0",
        "WEBHOOK_MAX_RETRIES": "3",
        "WEBHOOK_SECRET": webhooks.generate_secret(),
    }
    address = f"127.0.0.1:{notifier_env['MUTATE_GRPC_PORT']}"
    process = await asyncio.to_thread(
        start_process, "notifier", notifier_command(), health_address=address, env=env
    )
    receiver.default("/resume", Reply(500))
    event = job_event(events_pb2.JobEvent.FAILED, url=receiver.url("/resume"))
    await publish(topology_ready, event)
    (first,) = await receiver.wait_for("/resume", 1)
    # The first try is recorded before the notifier dies.
    delivery = await wait_delivery(address, event.job_id, lambda d: d.try_count == 1)
    assert delivery.status == webhook_pb2.Delivery.PENDING

    # Dies between the first and the second try, with nothing in memory.
    await asyncio.to_thread(process.kill)
    await asyncio.sleep(2.5)
    assert len(receiver.calls_to("/resume")) == 1

    receiver.default("/resume", Reply(200))
    await asyncio.to_thread(process.start)
    calls = await receiver.wait_for("/resume", 2, timeout=20)
    assert calls[1].headers["webhook-id"] == first.headers["webhook-id"]

    delivery = await wait_delivery(
        address,
        event.job_id,
        lambda d: d.status == webhook_pb2.Delivery.DELIVERED,
    )
    assert [t.status_code for t in delivery.tries] == [500, 200]
    await asyncio.to_thread(process.stop)
