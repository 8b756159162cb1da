"""A completed job's webhook carries a fresh download URL that fetches the
output, through the real storage service on real S3."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import grpc
import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from mutate.common.storage_client import StorageClient
from mutate.v1 import events_pb2, webhook_pb2, webhook_pb2_grpc

from .conftest import Receiver, StartNotifier, job_event, publish

pytestmark = pytest.mark.slow


async def test_completed_webhook_carries_a_download_url_that_fetches_the_output(
    start_service: Any,
    stack_info: Any,
    start_notifier: StartNotifier,
    receiver: Receiver,
    topology_ready: Any,
) -> None:
    start_service("storage")
    storage_address = stack_info.address("storage")
    key = "output/org_a/job_dl1/out.csv"
    async with StorageClient(storage_address) as storage:
        await storage.put_bytes(key, b"a,b\n1,2\n", "text/csv")

    notifier = await start_notifier(MUTATE_STORAGE_ADDRESS=storage_address)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{notifier.port}") as channel:
        stub = webhook_pb2_grpc.NotifierServiceStub(channel)
        secret = (
            await stub.CreateSigningSecret(
                webhook_pb2.CreateSigningSecretRequest(organization_id="org_a")
            )
        ).secret
        event = job_event(
            events_pb2.JobEvent.COMPLETED,
            url=receiver.url("/done"),
            job_id="job_dl1",
            output_key=key,
        )
        await publish(topology_ready, event)
        (call,) = await receiver.wait_for("/done", 1)

    payload = Webhook(secret).verify(call.body, call.headers)
    assert payload["status"] == "completed"
    assert payload["type"] == "job.completed"
    assert payload["output"]["fileName"] == "out.csv"
    assert "key" not in payload["output"]
    expires = dt.datetime.fromisoformat(payload["expiresAt"].replace("Z", "+00:00"))
    assert expires > dt.datetime.now(dt.UTC)
    # The output itself is never inlined; the link fetches it.
    assert "1,2" not in json.dumps(payload)
    async with httpx.AsyncClient() as client:
        response = await client.get(payload["downloadUrl"])
    assert response.status_code == 200
    assert response.content == b"a,b\n1,2\n"
