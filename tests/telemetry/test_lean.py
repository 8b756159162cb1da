"""The cheaper span and propagation paths give what the SDK's give.

`LeanTracerProvider` makes the SDK's spans in fewer steps and
`_propagation` reads and writes `traceparent` directly (issue #8's cost
target); both must stay invisible in what is exported and propagated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry.context import Context, attach, detach
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceFlags, TraceState

from mutate.common.telemetry import _lean, _propagation
from mutate.common.telemetry._otlp import encode_spans as fast_encode_spans

REMOTE_SAMPLED = SpanContext(
    trace_id=0x0AF7651916CD43DD8448EB211C80319C,
    span_id=0xB7AD6B7169203331,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "value")]),
)
REMOTE_NOT_SAMPLED = SpanContext(
    trace_id=0x1AF7651916CD43DD8448EB211C80319C,
    span_id=0xC7AD6B7169203331,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.DEFAULT),
)


class _Counting(IdGenerator):
    """Ids 1, 2, 3, ... so that two providers make the same ones."""

    def __init__(self) -> None:
        self._next = 0

    def generate_span_id(self) -> int:
        self._next += 1
        return self._next

    def generate_trace_id(self) -> int:
        self._next += 1
        return (1 << 100) + self._next


def _scenario(provider: TracerProvider) -> list[ReadableSpan]:
    """Every span shape the services make, and some they do not."""
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("scoped", "1.0", schema_url="https://schema/1")
    at = iter(range(1_000_000, 10_000_000, 1000))
    for parent in (REMOTE_SAMPLED, REMOTE_NOT_SAMPLED, None):
        context = (
            trace.set_span_in_context(trace.NonRecordingSpan(parent))
            if parent is not None
            else None
        )
        server = tracer.start_span(
            "/mutate.v1.StorageService/PutObject",
            context,
            SpanKind.SERVER,
            {
                "rpc.system": "grpc",
                "port": 7,
                "ratio": 1.5,
                "ok": True,
                "long": "x" * 40,
                "list": ["a", "b"],
            },
            start_time=next(at),
        )
        inner = trace.set_span_in_context(server)
        server.set_attribute("rpc.grpc.status_code", 0)
        server.set_attribute("port", 8)  # replaced, keeps its value's type
        server.set_attribute("tuple", (1, 2))
        server.set_attributes({"a": "b", "c": 3})
        server.add_event("retry", {"attempt": 2}, timestamp=next(at))
        child = tracer.start_span("INSERT", inner, SpanKind.CLIENT, start_time=next(at))
        child.set_status(Status(StatusCode.ERROR, "boom"))
        child.update_name("INSERT jobs")
        child.end(end_time=next(at))
        child.set_attribute("late", 1)  # after end: ignored
        linked = tracer.start_span(
            "linked",
            inner,
            links=[Link(REMOTE_SAMPLED, {"why": "batch"})],
            start_time=next(at),
        )
        linked.add_link(REMOTE_NOT_SAMPLED, {"n": 1})
        linked.end(end_time=next(at))
        server.end(end_time=next(at))
        server.end()  # twice: a warning, nothing else
    return list(exporter.get_finished_spans())


def _encoded(spans: list[ReadableSpan]) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(encode_spans(spans).SerializeToString())


@pytest.mark.parametrize(
    "make_sampler",
    [
        lambda: ParentBased(ALWAYS_ON),
        lambda: ALWAYS_ON,
        lambda: ALWAYS_OFF,
        lambda: ParentBased(ALWAYS_OFF),
        lambda: ParentBased(TraceIdRatioBased(0.5)),
    ],
    ids=["parentbased-on", "on", "off", "parentbased-off", "ratio"],
)
@pytest.mark.parametrize(
    "limits",
    [SpanLimits(), SpanLimits(max_span_attributes=3, max_span_attribute_length=5)],
    ids=["default-limits", "tight-limits"],
)
def test_lean_spans_export_as_the_sdks(
    make_sampler: Callable[[], Sampler], limits: SpanLimits
) -> None:
    def provider(kind: type[TracerProvider]) -> TracerProvider:
        return kind(
            sampler=make_sampler(),
            resource=Resource({"service.name": "test"}),
            id_generator=_Counting(),
            span_limits=limits,
            shutdown_on_exit=False,
        )

    sdk_spans = _scenario(provider(TracerProvider))
    lean_spans = _scenario(provider(_lean.LeanTracerProvider))

    assert _encoded(lean_spans) == _encoded(sdk_spans)
    assert fast_encode_spans(lean_spans) == fast_encode_spans(sdk_spans)
    for lean, sdk in zip(lean_spans, sdk_spans, strict=True):
        assert lean.dropped_attributes == sdk.dropped_attributes
        assert lean.to_json() == sdk.to_json()


def test_provider_makes_lean_tracers() -> None:
    provider = _lean.LeanTracerProvider(shutdown_on_exit=False)
    tracer = provider.get_tracer("x")
    assert isinstance(tracer, _lean.LeanTracer)
    assert provider.get_tracer("x") is tracer
    assert _lean._self_check()


def test_recorded_exception_is_an_event_with_error_status() -> None:
    provider = _lean.LeanTracerProvider(shutdown_on_exit=False)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with (
        pytest.raises(ValueError),
        provider.get_tracer("x").start_as_current_span("failing"),
    ):
        raise ValueError("bad input")
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]


# --- propagation ------------------------------------------------------------------

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    "carrier",
    [
        {"traceparent": TRACEPARENT, "user-agent": "grpc-python"},
        {"traceparent": TRACEPARENT.replace("-01", "-00")},
        {"traceparent": TRACEPARENT.upper()},
        {"traceparent": f" {TRACEPARENT} "},
        {"traceparent": TRACEPARENT, "tracestate": "vendor=value"},
        {"traceparent": TRACEPARENT, "baggage": "user=alice"},
        {"traceparent": "00-" + "0" * 32 + "-b7ad6b7169203331-01"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01"},
        {"traceparent": "ff" + TRACEPARENT[2:]},
        {"traceparent": "01" + TRACEPARENT[2:] + "-extra"},
        {"traceparent": TRACEPARENT + "-extra"},
        {"traceparent": "garbage"},
        {"baggage": "user=alice"},
        {"authorization": "Bearer x"},
        {},
    ],
)
def test_extract_matches_the_global_propagator(carrier: dict[str, str]) -> None:
    fast = _propagation.extract(carrier)
    sdk = propagate.extract(carrier)
    assert trace.get_current_span(fast).get_span_context() == (
        trace.get_current_span(sdk).get_span_context()
    )
    assert baggage.get_all(fast) == baggage.get_all(sdk)


@contextlib.contextmanager
def _current(context: Context) -> Iterator[None]:
    token = attach(context)
    try:
        yield
    finally:
        detach(token)


@pytest.mark.parametrize("with_baggage", [False, True])
@pytest.mark.parametrize("parent", [REMOTE_SAMPLED, REMOTE_NOT_SAMPLED], ids=str)
def test_inject_matches_the_global_propagator(
    parent: SpanContext, with_baggage: bool
) -> None:
    context = baggage.set_baggage("user", "alice") if with_baggage else Context()
    span = trace.NonRecordingSpan(parent)
    with _current(context):
        fast: dict[str, str] = {}
        _propagation.inject(fast, span)
        sdk: dict[str, str] = {}
        propagate.inject(sdk, context=trace.set_span_in_context(span))
    assert fast == sdk


def test_another_global_propagator_is_used_as_it_is() -> None:
    only_trace = CompositePropagator([TraceContextTextMapPropagator()])
    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(only_trace)
    try:
        carrier = {"traceparent": TRACEPARENT, "baggage": "user=alice"}
        assert baggage.get_all(_propagation.extract(carrier)) == {}
        with _current(baggage.set_baggage("user", "alice")):
            out: dict[str, str] = {}
            _propagation.inject(out, trace.NonRecordingSpan(REMOTE_SAMPLED))
        assert "baggage" not in out
    finally:
        propagate.set_global_textmap(previous)
