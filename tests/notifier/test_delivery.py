"""End to end: job events on real NATS become signed webhooks to a real
receiver on 127.0.0.1, every try recorded in real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from mutate.common import webhooks
from mutate.v1 import events_pb2, webhook_pb2

from .conftest import Receiver, Reply, StartNotifier, job_event, publish

FAILED = events_pb2.JobEvent.FAILED
Delivery = webhook_pb2.Delivery


async def wait_delivery(
    stub: Any,
    organization_id: str,
    job_id: str,
    *,
    status: int,
    timeout: float = 15.0,
) -> webhook_pb2.Delivery:
    """Poll ListDeliveries until the job's delivery reaches `status`."""
    async with asyncio.timeout(timeout):
        while True:
            reply = await stub.ListDeliveries(
                webhook_pb2.NotifierListDeliveriesRequest(
                    organization_id=organization_id, job_id=job_id
                )
            )
            if reply.deliveries and reply.deliveries[0].status == status:
                return reply.deliveries[0]
            await asyncio.sleep(0.05)


async def create_secret(stub: Any, organization_id: str) -> str:
    reply = await stub.CreateSigningSecret(
        webhook_pb2.CreateSigningSecretRequest(organization_id=organization_id)
    )
    secret: str = reply.secret
    return secret


async def test_failed_job_webhook_arrives_once_and_verifies(
    stub: Any, receiver: Receiver, topology_ready: Any
) -> None:
    secret = await create_secret(stub, "org_a")
    assert secret.startswith("whsec_")
    event = job_event(FAILED, url=receiver.url("/hook"))
    await publish(topology_ready, event)

    (call,) = await receiver.wait_for("/hook", 1)
    payload = Webhook(secret).verify(call.body, call.headers)
    assert payload["jobId"] == event.job_id
    assert payload["status"] == "failed"
    assert payload["type"] == "job.failed"
    assert payload["organizationId"] == "org_a"
    assert payload["attempt"] == 1
    assert payload["clientReference"] == "ref-42"
    assert payload["configurationId"] == "cfg_1"
    assert payload["error"]["code"] == "INVALID_FILE"
    assert payload["executionLog"][0]["ruleId"] == "r1"
    assert "downloadUrl" not in payload
    # Our helper agrees with the reference library.
    assert webhooks.verify(secret, call.headers, call.body) == payload

    delivery = await wait_delivery(
        stub, "org_a", event.job_id, status=Delivery.DELIVERED
    )
    assert delivery.try_count == 1
    assert delivery.tries[0].status_code == 200
    assert delivery.webhook_id == call.headers["webhook-id"]
    assert delivery.last_response_excerpt == "ok"
    await asyncio.sleep(0.3)
    assert len(receiver.calls_to("/hook")) == 1


async def test_dead_lettered_job_is_reported_failed(
    stub: Any, receiver: Receiver, topology_ready: Any
) -> None:
    await create_secret(stub, "org_a")
    event = job_event(events_pb2.JobEvent.DEAD_LETTERED, url=receiver.url("/dl"))
    await publish(topology_ready, event)
    (call,) = await receiver.wait_for("/dl", 1)
    payload = json.loads(call.body)
    assert payload["status"] == "failed"
    assert payload["error"]["message"] == "not a spreadsheet"


async def test_cancelled_job_is_reported_cancelled(
    stub: Any, receiver: Receiver, topology_ready: Any
) -> None:
    await create_secret(stub, "org_a")
    event = job_event(events_pb2.JobEvent.CANCELLED, url=receiver.url("/c"))
    await publish(topology_ready, event)
    (call,) = await receiver.wait_for("/c", 1)
    assert json.loads(call.body)["status"] == "cancelled"


async def test_rotation_sends_both_signatures_during_overlap(
    stub: Any, receiver: Receiver, topology_ready: Any
) -> None:
    old = await create_secret(stub, "org_a")
    rotated = await stub.RotateSigningSecret(
        webhook_pb2.RotateSigningSecretRequest(organization_id="org_a")
    )
    new = rotated.secret
    assert new != old and rotated.HasField("previous_expire_time")

    await publish(topology_ready, job_event(FAILED, url=receiver.url("/r1")))
    (call,) = await receiver.wait_for("/r1", 1)
    assert len(call.headers["webhook-signature"].split(" ")) == 2
    # A receiver holding either secret verifies the same message.
    Webhook(old).verify(call.body, call.headers)
    Webhook(new).verify(call.body, call.headers)

    # A rotation with no overlap: only the newest secret signs.
    newest = (
        await stub.RotateSigningSecret(
            webhook_pb2.RotateSigningSecretRequest(
                organization_id="org_a", overlap=duration_pb2.Duration(seconds=0)
            )
        )
    ).secret
    await publish(topology_ready, job_event(FAILED, url=receiver.url("/r2")))
    (call,) = await receiver.wait_for("/r2", 1)
    assert len(call.headers["webhook-signature"].split(" ")) == 1
    Webhook(newest).verify(call.body, call.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(call.body, call.headers)


async def test_installation_secret_signs_without_a_tenant_secret(
    start_notifier: StartNotifier, receiver: Receiver, topology_ready: Any
) -> None:
    secret = webhooks.generate_secret()
    await start_notifier(WEBHOOK_SECRET=secret)
    await publish(
        topology_ready,
        job_event(FAILED, url=receiver.url("/inst"), organization_id="org_x"),
    )
    (call,) = await receiver.wait_for("/inst", 1)
    Webhook(secret).verify(call.body, call.headers)


async def test_failing_twice_then_success_gets_three_tries_with_growing_gaps(
    stub: Any, receiver: Receiver, topology_ready: Any
) -> None:
    await create_secret(stub, "org_a")
    receiver.script("/flaky", [Reply(500, body=b"boom"), Reply(503)])
    event = job_event(FAILED, url=receiver.url("/flaky"))
    await publish(topology_ready, event)

    calls = await receiver.wait_for("/flaky", 3)
    gaps = [b.at - a.at for a, b in zip(calls, calls[1:], strict=False)]
    # Schedule: 150 ms, then 300 ms, each shortened by at most 10 % jitter.
    # A loaded machine can only make a gap longer, so each is checked against
    # its own floor rather than against the other (which load can reorder).
    assert gaps[0] >= 0.135
    assert gaps[1] >= 0.27
    assert len({c.headers["webhook-id"] for c in calls}) == 1

    delivery = await wait_delivery(
        stub, "org_a", event.job_id, status=Delivery.DELIVERED
    )
    assert delivery.try_count == 3
    assert [t.status_code for t in delivery.tries] == [500, 503, 200]
    assert [t.number for t in delivery.tries] == [1, 2, 3]
    assert delivery.tries[0].error == "HTTP 500"
    assert delivery.HasField("delivered_time")


async def test_always_failing_gets_max_tries_then_dead_letter(
    stub: Any, receiver: Receiver, topology_ready: Any
) -> None:
    await create_secret(stub, "org_a")
    receiver.default("/down", Reply(500, body=b"x" * 5000))
    event = job_event(FAILED, url=receiver.url("/down"))
    await publish(topology_ready, event)

    delivery = await wait_delivery(
        stub, "org_a", event.job_id, status=Delivery.DEAD_LETTERED
    )
    assert delivery.try_count == 4  # WEBHOOK_MAX_RETRIES in the fixture
    assert len(delivery.tries) == 4
    assert delivery.last_status_code == 500
    # Only a small excerpt of the response is read and kept.
    assert 0 < len(delivery.last_response_excerpt) <= 1024
    assert not delivery.HasField("next_try_time")
    await asyncio.sleep(0.5)
    assert len(receiver.calls_to("/down")) == 4

    stats = await stub.GetWebhookStats(
        webhook_pb2.NotifierStatsRequest(organization_id="org_a")
    )
    assert stats.dead_lettered == 1


async def test_repeated_terminal_event_is_one_delivery(
    stub: Any, receiver: Receiver, topology_ready: Any
) -> None:
    await create_secret(stub, "org_a")
    event = job_event(FAILED, url=receiver.url("/dup"))
    subject = f"mutate.events.org_a.{event.job_id}.failed"
    # Past JetStream's own de-duplication: no message id, so both arrive.
    await topology_ready.publish(subject, event.SerializeToString())
    await topology_ready.publish(subject, event.SerializeToString())
    # A second terminal event of the same attempt loses to the first.
    late = events_pb2.JobEvent()
    late.CopyFrom(event)
    late.type = events_pb2.JobEvent.DEAD_LETTERED
    await topology_ready.publish(
        f"mutate.events.org_a.{event.job_id}.dead_lettered", late.SerializeToString()
    )
    # A retry of the job is a new attempt and a new delivery.
    retry = events_pb2.JobEvent()
    retry.CopyFrom(event)
    retry.attempt = 2
    await publish(topology_ready, retry)

    await receiver.wait_for("/dup", 2)
    await asyncio.sleep(0.5)
    calls = receiver.calls_to("/dup")
    assert len(calls) == 2
    assert sorted(json.loads(c.body)["attempt"] for c in calls) == [1, 2]


async def test_410_gone_stops_at_once(
    stub: Any, receiver: Receiver, topology_ready: Any
) -> None:
    await create_secret(stub, "org_a")
    receiver.default("/gone", Reply(410))
    event = job_event(FAILED, url=receiver.url("/gone"))
    await publish(topology_ready, event)
    delivery = await wait_delivery(
        stub, "org_a", event.job_id, status=Delivery.DEAD_LETTERED
    )
    assert delivery.try_count == 1
    assert "410" in delivery.last_error


async def test_stop_header_stops_retries(
    stub: Any, receiver: Receiver, topology_ready: Any
) -> None:
    await create_secret(stub, "org_a")
    receiver.default("/stop", Reply(500, headers={webhooks.STOP_HEADER: "true"}))
    event = job_event(FAILED, url=receiver.url("/stop"))
    await publish(topology_ready, event)
    delivery = await wait_delivery(
        stub, "org_a", event.job_id, status=Delivery.DEAD_LETTERED
    )
    assert delivery.try_count == 1
    assert webhooks.STOP_HEADER in delivery.last_error


async def test_429_retry_after_is_honoured(
    stub: Any, receiver: Receiver, topology_ready: Any
) -> None:
    await create_secret(stub, "org_a")
    receiver.script("/busy", [Reply(429, headers={"Retry-After": "1"})])
    event = job_event(FAILED, url=receiver.url("/busy"))
    await publish(topology_ready, event)
    first, second = await receiver.wait_for("/busy", 2)
    # The schedule alone would have waited ~150 ms.
    assert second.at - first.at >= 0.95


async def test_redirects_are_not_followed(
    stub: Any, receiver: Receiver, topology_ready: Any
) -> None:
    await create_secret(stub, "org_a")
    receiver.default("/moved", Reply(302, headers={"Location": receiver.url("/to")}))
    event = job_event(FAILED, url=receiver.url("/moved"))
    await publish(topology_ready, event)
    await receiver.wait_for("/moved", 2)
    assert receiver.calls_to("/to") == []


async def test_no_url_no_delivery(
    stub: Any, receiver: Receiver, topology_ready: Any
) -> None:
    await create_secret(stub, "org_a")
    silent = job_event(FAILED, url="")
    await publish(topology_ready, silent)
    marker = job_event(FAILED, url=receiver.url("/after"))
    await publish(topology_ready, marker)
    await receiver.wait_for("/after", 1)
    reply = await stub.ListDeliveries(
        webhook_pb2.NotifierListDeliveriesRequest(
            organization_id="org_a", job_id=silent.job_id
        )
    )
    assert list(reply.deliveries) == []


async def test_localhost_name_is_checked_and_connected(
    stub: Any, receiver: Receiver, topology_ready: Any
) -> None:
    secret = await create_secret(stub, "org_a")
    event = job_event(FAILED, url=receiver.url("/named", host="localhost"))
    await publish(topology_ready, event)
    (call,) = await receiver.wait_for("/named", 1)
    assert call.headers["host"] == f"localhost:{receiver.port}"
    Webhook(secret).verify(call.body, call.headers)


async def test_redeliver_resends_signed_with_the_current_secret(
    stub: Any, receiver: Receiver, topology_ready: Any
) -> None:
    await create_secret(stub, "org_a")
    receiver.default("/re", Reply(410))
    event = job_event(FAILED, url=receiver.url("/re"))
    await publish(topology_ready, event)
    dead = await wait_delivery(
        stub, "org_a", event.job_id, status=Delivery.DEAD_LETTERED
    )

    new = (
        await stub.RotateSigningSecret(
            webhook_pb2.RotateSigningSecretRequest(
                organization_id="org_a", overlap=duration_pb2.Duration(seconds=0)
            )
        )
    ).secret
    receiver.default("/re", Reply(200))
    reply = await stub.RedeliverDelivery(
        webhook_pb2.NotifierRedeliverRequest(organization_id="org_a", id=dead.id)
    )
    assert reply.status == Delivery.PENDING
    first, second = await receiver.wait_for("/re", 2)
    Webhook(new).verify(second.body, second.headers)
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    done = await wait_delivery(stub, "org_a", event.job_id, status=Delivery.DELIVERED)
    assert done.try_count == 2


async def test_recover_redelivers_failed_deliveries_since_a_time(
    stub: Any, receiver: Receiver, topology_ready: Any
) -> None:
    await create_secret(stub, "org_a")
    since = timestamp_pb2.Timestamp()
    since.GetCurrentTime()
    receiver.default("/rec", Reply(410))
    events = [job_event(FAILED, url=receiver.url("/rec")) for _ in range(3)]
    for event in events:
        await publish(topology_ready, event)
    for event in events:
        await wait_delivery(stub, "org_a", event.job_id, status=Delivery.DEAD_LETTERED)

    receiver.default("/rec", Reply(200))
    reply = await stub.RecoverDeliveries(
        webhook_pb2.NotifierRecoverRequest(organization_id="org_a", since=since)
    )
    assert reply.redelivered == 3
    for event in events:
        await wait_delivery(stub, "org_a", event.job_id, status=Delivery.DELIVERED)
    # Another organization's recover touches nothing of org_a's.
    other = await stub.RecoverDeliveries(
        webhook_pb2.NotifierRecoverRequest(organization_id="org_b", since=since)
    )
    assert other.redelivered == 0


async def test_organizations_never_see_each_other(
    stub: Any, receiver: Receiver, topology_ready: Any
) -> None:
    await create_secret(stub, "org_a")
    await create_secret(stub, "org_b")
    event = job_event(FAILED, url=receiver.url("/iso"), organization_id="org_a")
    await publish(topology_ready, event)
    mine = await wait_delivery(stub, "org_a", event.job_id, status=Delivery.DELIVERED)

    listed = await stub.ListDeliveries(
        webhook_pb2.NotifierListDeliveriesRequest(organization_id="org_b")
    )
    assert list(listed.deliveries) == []
    for call in (
        stub.GetDelivery(
            webhook_pb2.NotifierGetDeliveryRequest(organization_id="org_b", id=mine.id)
        ),
        stub.RedeliverDelivery(
            webhook_pb2.NotifierRedeliverRequest(organization_id="org_b", id=mine.id)
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListDeliveries(webhook_pb2.NotifierListDeliveriesRequest())
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Each organization signs with its own secret.
    call = receiver.calls_to("/iso")[0]
    other_secret = await create_secret(stub, "org_b")
    with pytest.raises(WebhookVerificationError):
        Webhook(other_secret).verify(call.body, call.headers)


async def test_list_filters_and_pages(
    stub: Any, receiver: Receiver, topology_ready: Any
) -> None:
    await create_secret(stub, "org_a")
    receiver.script("/p-dead", [Reply(410)])
    for path in ("/p1", "/p2", "/p3", "/p-dead"):
        await publish(topology_ready, job_event(FAILED, url=receiver.url(path)))
    for path in ("/p1", "/p2", "/p3", "/p-dead"):
        await receiver.wait_for(path, 1)
    await asyncio.sleep(0.3)

    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListDeliveries(
            webhook_pb2.NotifierListDeliveriesRequest(
                organization_id="org_a", page_size=3, page_token=token
            )
        )
        seen += [d.id for d in page.deliveries]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 4
    dead = await stub.ListDeliveries(
        webhook_pb2.NotifierListDeliveriesRequest(
            organization_id="org_a", status=Delivery.DEAD_LETTERED
        )
    )
    assert [d.url for d in dead.deliveries] == [receiver.url("/p-dead")]


async def test_send_test_webhook(stub: Any, receiver: Receiver) -> None:
    secret = await create_secret(stub, "org_a")
    delivery = await stub.SendTestWebhook(
        webhook_pb2.NotifierSendTestRequest(
            organization_id="org_a", url=receiver.url("/test")
        )
    )
    assert delivery.status == Delivery.DELIVERED
    assert delivery.event_type == "webhook.test"
    (call,) = receiver.calls_to("/test")
    assert Webhook(secret).verify(call.body, call.headers)["type"] == "webhook.test"


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "ftp://127.0.0.1/x",
        "http://10.0.0.1/",
    ],
)
async def test_send_test_webhook_refuses_unsafe_urls(stub: Any, url: str) -> None:
    await create_secret(stub, "org_a")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.SendTestWebhook(
            webhook_pb2.NotifierSendTestRequest(organization_id="org_a", url=url)
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_stats_show_the_backlog(
    stub: Any, receiver: Receiver, topology_ready: Any
) -> None:
    await create_secret(stub, "org_a")
    receiver.default("/slowly", Reply(500))
    event = job_event(FAILED, url=receiver.url("/slowly"))
    await publish(topology_ready, event)
    await receiver.wait_for("/slowly", 1)
    stats = await stub.GetWebhookStats(webhook_pb2.NotifierStatsRequest())
    assert stats.pending >= 1
    assert stats.HasField("oldest_pending_time")
    none = await stub.GetWebhookStats(
        webhook_pb2.NotifierStatsRequest(organization_id=f"org_{uuid.uuid4().hex}")
    )
    assert none.pending == 0
