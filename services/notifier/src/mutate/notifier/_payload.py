"""What a webhook says: job events turned into delivery rows and JSON bodies.

The body is camelCase JSON. The output itself is never inlined: a completed
job's body carries a presigned `downloadUrl` (and `expiresAt`), fetched fresh
from the storage service on every try, so it is added at send time and not
stored with the delivery.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
import uuid
from typing import Any

from google.protobuf import json_format, timestamp_pb2

from mutate.common import messaging
from mutate.v1 import events_pb2

TEST_EVENT_TYPE = "webhook.test"

# JetStream event type → (webhook event type, job status in the body). A
# dead-lettered job is reported as failed with its last error.
_EVENT_TYPES = {
    events_pb2.JobEvent.COMPLETED: ("job.completed", "completed"),
    events_pb2.JobEvent.FAILED: ("job.failed", "failed"),
    events_pb2.JobEvent.DEAD_LETTERED: ("job.failed", "failed"),
    events_pb2.JobEvent.CANCELLED: ("job.cancelled", "cancelled"),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class NewDelivery:
    """A delivery row to insert."""

    id: str
    organization_id: str
    job_id: str
    job_attempt: int
    event_type: str
    webhook_id: str
    url: str
    payload: dict[str, Any]
    output_key: str = ""
    output_file_name: str = ""
    traceparent: str = ""


def webhook_id(job_id: str, attempt: int, event_type: str) -> str:
    """`msg_…`, stable for `{jobId}.{attempt}.{type}` (the event's msg id)."""
    digest = hashlib.sha256(f"{job_id}.{attempt}.{event_type}".encode()).digest()
    return "msg_" + base64.b32encode(digest[:20]).decode("ascii").lower()


def new_delivery_id() -> str:
    return "dlv_" + uuid.uuid4().hex


def is_deliverable(event: events_pb2.JobEvent) -> bool:
    """A terminal event that names a webhook URL."""
    return event.type in _EVENT_TYPES and bool(event.webhook_url)


def from_event(event: events_pb2.JobEvent, *, traceparent: str = "") -> NewDelivery:
    """The delivery of one terminal job event (see `is_deliverable`)."""
    event_type, status = _EVENT_TYPES[event.type]
    payload: dict[str, Any] = {
        "type": event_type,
        "organizationId": event.organization_id,
        "jobId": event.job_id,
        "attempt": event.attempt,
        "status": status,
        "configurationId": event.configuration_id,
        "configurationVersion": event.configuration_version,
        "clientReference": event.client_reference or None,
        "completedAt": _time(event.time) if event.HasField("time") else None,
        "executionLog": [
            json_format.MessageToDict(entry) for entry in event.execution_log
        ],
        "warnings": list(event.warnings),
    }
    if event.type == events_pb2.JobEvent.COMPLETED and event.HasField("output"):
        out = event.output
        payload["output"] = {
            "fileName": out.file_name,
            "contentType": out.content_type,
            "bytes": out.bytes,
            "rows": out.rows,
            "columns": out.columns,
            "sha256": out.sha256,
        }
    if event.type in (events_pb2.JobEvent.FAILED, events_pb2.JobEvent.DEAD_LETTERED):
        payload["error"] = {
            "code": event.error.code,
            "message": event.error.message,
            "ruleId": event.error.rule_id or None,
            "retryable": event.error.retryable,
        }
    return NewDelivery(
        id=new_delivery_id(),
        organization_id=event.organization_id,
        job_id=event.job_id,
        job_attempt=event.attempt,
        event_type=event_type,
        webhook_id=webhook_id(
            event.job_id, event.attempt, messaging.event_type_name(event.type)
        ),
        url=event.webhook_url,
        payload=payload,
        output_key=event.output.key if event.HasField("output") else "",
        output_file_name=event.output.file_name if event.HasField("output") else "",
        traceparent=traceparent,
    )


def test_delivery(organization_id: str, url: str) -> NewDelivery:
    """A `webhook.test` delivery: a fresh message each time it is asked for."""
    now = dt.datetime.now(dt.UTC)
    return NewDelivery(
        id=new_delivery_id(),
        organization_id=organization_id,
        job_id="",
        job_attempt=0,
        event_type=TEST_EVENT_TYPE,
        webhook_id="msg_" + uuid.uuid4().hex,
        url=url,
        payload={
            "type": TEST_EVENT_TYPE,
            "organizationId": organization_id,
            "message": "A test webhook from Mutate.",
            "sentAt": now.isoformat().replace("+00:00", "Z"),
        },
    )


def body(
    payload: dict[str, Any],
    *,
    download_url: str | None = None,
    expires_at: dt.datetime | None = None,
) -> bytes:
    """The bytes that are signed and sent."""
    if payload.get("status") == "completed":
        payload = {
            **payload,
            "downloadUrl": download_url,
            "expiresAt": _iso(expires_at) if expires_at else None,
        }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _time(stamp: timestamp_pb2.Timestamp) -> str:
    return _iso(stamp.ToDatetime(tzinfo=dt.UTC))


def _iso(when: dt.datetime) -> str:
    return (
        when.astimezone(dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
