"""W3C trace context in and out of gRPC metadata and NATS headers, cheaply.

`propagate.extract` / `inject` go through the global composite propagator
(trace context, then baggage): a getter and a setter object per header, a
regular expression, a context per propagator. On the job path that runs
eight times a job. When the global propagator is OpenTelemetry's default
and the message is the plain case (a version-00 `traceparent`, no
`tracestate`, no baggage), these functions read and write that one header
directly, with the same result; anything else goes to the global
propagator as before, so `OTEL_PROPAGATORS` and baggage keep working.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping

from opentelemetry import baggage, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
BAGGAGE = "baggage"

# Version 00 exactly (lower-case hex, nothing after the flags); other
# versions, upper case and padding are left to the SDK's parser.
_TRACEPARENT_00 = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16

_default_checked: tuple[object, bool] = (None, False)


def _is_default(propagator: object) -> bool:
    """Whether the global propagator is the default (trace context, baggage)."""
    global _default_checked
    known, default = _default_checked
    if propagator is not known:
        members = getattr(propagator, "_propagators", None)
        default = (
            type(propagator) is CompositePropagator
            and isinstance(members, (list, tuple))
            and [type(member) for member in members]
            == [TraceContextTextMapPropagator, W3CBaggagePropagator]
        )
        _default_checked = (propagator, default)
    return default


def extract(carrier: Mapping[str, str]) -> Context:
    """The context `propagate.extract(carrier)` would return."""
    if (
        TRACESTATE in carrier
        or BAGGAGE in carrier
        or not _is_default(propagate.get_global_textmap())
    ):
        return propagate.extract(carrier)
    header = carrier.get(TRACEPARENT)
    if header is None:
        return Context()  # what both default propagators leave
    match = _TRACEPARENT_00.fullmatch(header) if isinstance(header, str) else None
    if match is None:
        return propagate.extract(carrier)
    trace_id, span_id, flags = match.groups()
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return Context()
    parent = SpanContext(
        int(trace_id, 16),
        int(span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(int(flags, 16)),
    )
    return trace.set_span_in_context(NonRecordingSpan(parent), Context())


def inject(carrier: MutableMapping[str, str], span: Span) -> None:
    """What `propagate.inject(carrier, context=set_span_in_context(span))`
    writes: the span's context (and the current baggage)."""
    span_context = span.get_span_context()
    if (
        span_context.is_valid
        and not span_context.trace_state
        and _is_default(propagate.get_global_textmap())
        and not baggage.get_all()
    ):
        carrier[TRACEPARENT] = (
            f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}"
            f"-{span_context.trace_flags:02x}"
        )
        return
    propagate.inject(carrier, context=trace.set_span_in_context(span))
