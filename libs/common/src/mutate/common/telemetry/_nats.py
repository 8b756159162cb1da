"""Producer and consumer spans for NATS messages (messaging semconv).

`producer_span` wraps a publish: a PRODUCER span whose context is injected
as `traceparent` into the message headers. `consumer_span` wraps the
handling of a received message: a CONSUMER span started as the CHILD of the
producer span found in the headers, so the hop shows as one parent link in
the trace (the issue's end-to-end test checks it).
Attribute names follow OpenTelemetry's messaging conventions (1.26+).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, MutableMapping
from typing import Any

from nats.aio.msg import Msg
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from mutate.common import logs
from mutate.common.telemetry import _propagation
from mutate.common.telemetry._spans import CurrentSpan

TRACER_NAME = "mutate.common.telemetry.nats"
# Same as mutate.common.messaging.JOB_ID_HEADER; messaging imports this
# module, so the name is repeated rather than imported.
JOB_ID_HEADER = "Mutate-Job-Id"
MSG_ID_HEADER = "Nats-Msg-Id"

JOB_ID_ATTRIBUTE = "mutate.job_id"


# A proxy: it binds to the global provider once there is one. Looked up
# once, as the SDK's get_tracer costs more than the span (~15 us).
_default_tracer = trace.get_tracer(TRACER_NAME)


def _tracer(tracer: trace.Tracer | None) -> trace.Tracer:
    return tracer or _default_tracer


def producer_span(
    subject: str,
    headers: MutableMapping[str, str],
    *,
    job_id: str = "",
    message_id: str = "",
    destination_template: str = "",
    body_size: int | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    tracer: trace.Tracer | None = None,
) -> contextlib.AbstractContextManager[trace.Span]:
    """A PRODUCER span around one publish; injects its context into `headers`.

    `destination_template` (e.g. `mutate.events.{organization}.{job}.{type}`)
    names the span when the subject carries ids, keeping names low in
    cardinality. An exception inside the block is recorded with ERROR status.
    """
    attrs: dict[str, AttributeValue] = {
        "messaging.system": "nats",
        "messaging.destination.name": subject,
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
    }
    if destination_template:
        attrs["messaging.destination.template"] = destination_template
    message_id = message_id or headers.get(MSG_ID_HEADER, "")
    if message_id:
        attrs["messaging.message.id"] = message_id
    if body_size is not None:
        attrs["messaging.message.body.size"] = body_size
    if job_id:
        attrs[JOB_ID_ATTRIBUTE] = job_id
    attrs.update(attributes or {})
    name = f"publish {destination_template or subject}"
    span = _tracer(tracer).start_span(
        name, kind=trace.SpanKind.PRODUCER, attributes=attrs
    )
    _propagation.inject(headers, span)
    return CurrentSpan(span)


def consumer_span(
    msg: Msg,
    *,
    consumer_group: str = "",
    destination_template: str = "",
    attributes: Mapping[str, AttributeValue] | None = None,
    tracer: trace.Tracer | None = None,
) -> contextlib.AbstractContextManager[trace.Span]:
    """A CONSUMER (process) span for one message, child of its producer.

    Inside the block the span is current and log records carry the job id
    from the `Mutate-Job-Id` header. An exception inside the block is
    recorded with ERROR status.
    """
    headers = dict(msg.headers or {})
    parent = _propagation.extract(headers)
    job_id = headers.get(JOB_ID_HEADER, "")
    attrs: dict[str, AttributeValue] = {
        "messaging.system": "nats",
        "messaging.destination.name": msg.subject,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.body.size": len(msg.data or b""),
    }
    if destination_template:
        attrs["messaging.destination.template"] = destination_template
    if consumer_group:
        attrs["messaging.consumer.group.name"] = consumer_group
    if headers.get(MSG_ID_HEADER):
        attrs["messaging.message.id"] = headers[MSG_ID_HEADER]
    if job_id:
        attrs[JOB_ID_ATTRIBUTE] = job_id
    attrs.update(_jetstream_attributes(msg))
    attrs.update(attributes or {})
    name = f"process {destination_template or msg.subject}"
    span = _tracer(tracer).start_span(
        name, context=parent, kind=trace.SpanKind.CONSUMER, attributes=attrs
    )
    return CurrentSpan(
        span, parent=parent, inner=logs.job_context(job_id) if job_id else None
    )


def _jetstream_attributes(msg: Msg) -> dict[str, AttributeValue]:
    metadata = _metadata(msg)
    if metadata is None:
        return {}
    return {
        "messaging.nats.stream": metadata.stream,
        "messaging.nats.stream_sequence": metadata.sequence.stream,
        "messaging.nats.delivery_count": metadata.num_delivered,
    }


def _metadata(msg: Msg) -> Any:
    # Core NATS messages have no JetStream reply subject to parse.
    if not msg.reply or not msg.reply.startswith("$JS.ACK."):
        return None
    try:
        return msg.metadata
    except Exception:  # noqa: BLE001 - a malformed reply subject is no span error
        return None


def message_age(msg: Msg) -> float | None:
    """Seconds since JetStream stored the message (queue lag), if known."""
    metadata = _metadata(msg)
    if metadata is None or metadata.timestamp is None:
        return None
    stored: float = metadata.timestamp.timestamp()
    return max(0.0, time.time() - stored)
