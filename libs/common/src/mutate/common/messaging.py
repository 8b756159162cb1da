"""Publishing and reading Mutate messages on JetStream.

Every message carries the job id, organization and attempt in headers and the
W3C trace context (`traceparent`) of a PRODUCER span around the publish, so a
consumer continues the producer's trace (`telemetry.consumer_span`) and tags
its logs without decoding the body first.
"""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf import timestamp_pb2
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import PubAck
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from mutate.common import topology
from mutate.common.telemetry import producer_span
from mutate.v1 import events_pb2

JOB_ID_HEADER = "Mutate-Job-Id"
ORGANIZATION_HEADER = "Mutate-Organization-Id"
ATTEMPT_HEADER = "Mutate-Attempt"
MSG_ID_HEADER = "Nats-Msg-Id"
# Span name of event publishes: the subject without its ids.
EVENT_SUBJECT_TEMPLATE = (
    f"{topology.EVENTS_SUBJECT_PREFIX}.{{organization}}.{{job}}.{{type}}"
)

_EVENT_TYPE_NAMES = {
    events_pb2.JobEvent.STARTED: "started",
    events_pb2.JobEvent.PROGRESS: "progress",
    events_pb2.JobEvent.COMPLETED: "completed",
    events_pb2.JobEvent.FAILED: "failed",
    events_pb2.JobEvent.DEAD_LETTERED: "dead_lettered",
    events_pb2.JobEvent.CANCELLED: "cancelled",
}
TERMINAL_EVENTS = frozenset(
    {
        events_pb2.JobEvent.COMPLETED,
        events_pb2.JobEvent.FAILED,
        events_pb2.JobEvent.DEAD_LETTERED,
        events_pb2.JobEvent.CANCELLED,
    }
)


def event_type_name(event_type: int) -> str:
    """`completed`, `dead_lettered`, …: the subject token of an event type."""
    return _EVENT_TYPE_NAMES[events_pb2.JobEvent.Type.ValueType(event_type)]


def job_headers(
    *, job_id: str, organization_id: str, attempt: int, msg_id: str | None = None
) -> dict[str, str]:
    """Headers with job identity and the current trace context injected."""
    headers = {
        JOB_ID_HEADER: job_id,
        ORGANIZATION_HEADER: organization_id,
        ATTEMPT_HEADER: str(attempt),
    }
    if msg_id:
        headers[MSG_ID_HEADER] = msg_id
    propagate.inject(headers)
    return headers


def trace_context(headers: Mapping[str, str] | None) -> otel_context.Context:
    """The producer's trace context, to start the consumer span in."""
    return propagate.extract(dict(headers or {}))


async def publish_job_request(
    js: JetStreamContext, request: events_pb2.JobRequest, *, timeout: float = 5.0
) -> PubAck:
    """Queue one attempt of a job; a repeat of the same attempt is dropped."""
    headers = job_headers(
        job_id=request.job_id,
        organization_id=request.organization_id,
        attempt=request.attempt,
        msg_id=topology.request_message_id(request.job_id, request.attempt),
    )
    body = request.SerializeToString()
    with producer_span(
        topology.JOBS_SUBJECT,
        headers,
        job_id=request.job_id,
        body_size=len(body),
        attributes=_span_attributes(request.organization_id, request.attempt),
    ) as span:
        ack = await js.publish(
            topology.JOBS_SUBJECT, body, headers=headers, timeout=timeout
        )
        _record_ack(span, ack)
        return ack


def _span_attributes(organization_id: str, attempt: int) -> dict[str, str | int]:
    return {"mutate.organization_id": organization_id, "mutate.attempt": attempt}


def _record_ack(span: trace.Span, ack: PubAck) -> None:
    span.set_attribute("messaging.nats.stream_sequence", ack.seq)
    if ack.duplicate:
        # JetStream dropped it as a repeat of an earlier publish.
        span.set_attribute("messaging.nats.duplicate", True)


def event_message_id(event: events_pb2.JobEvent) -> str:
    """`{jobId}.{attempt}.{type}`; progress events add their percentage."""
    name = event_type_name(event.type)
    base = f"{event.job_id}.{event.attempt}.{name}"
    if event.type == events_pb2.JobEvent.PROGRESS:
        return f"{base}.{event.progress_percent}"
    return base


async def publish_event(
    js: JetStreamContext, event: events_pb2.JobEvent, *, timeout: float = 5.0
) -> PubAck:
    """Publish a job event on its subject, de-duplicated by event id."""
    if not event.HasField("time"):
        event.time.GetCurrentTime()
    subject = topology.event_subject(
        event.organization_id, event.job_id, event_type_name(event.type)
    )
    headers = job_headers(
        job_id=event.job_id,
        organization_id=event.organization_id,
        attempt=event.attempt,
        msg_id=event_message_id(event),
    )
    body = event.SerializeToString()
    with producer_span(
        subject,
        headers,
        job_id=event.job_id,
        destination_template=EVENT_SUBJECT_TEMPLATE,
        body_size=len(body),
        attributes={
            **_span_attributes(event.organization_id, event.attempt),
            "mutate.event_type": event_type_name(event.type),
        },
    ) as span:
        ack = await js.publish(subject, body, headers=headers, timeout=timeout)
        _record_ack(span, ack)
        return ack


def decode_event(msg: Msg) -> events_pb2.JobEvent:
    event = events_pb2.JobEvent()
    event.ParseFromString(msg.data)
    return event


def decode_job_request(msg: Msg) -> events_pb2.JobRequest:
    request = events_pb2.JobRequest()
    request.ParseFromString(msg.data)
    return request


def now_timestamp() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp
