"""The fast OTLP span encoder writes what the SDK's encoder writes."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import (
    encode_spans as sdk_encode_spans,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.span import TraceFlags, TraceState

from mutate.common.telemetry._otlp import OtlpSpanExporter, _Encoder, encode_spans
from mutate.common.telemetry.receiver import OtlpReceiver

REMOTE = SpanContext(
    trace_id=0x0AF7651916CD43DD8448EB211C80319C,
    span_id=0xB7AD6B7169203331,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "value"), ("other", "x")]),
)


def _spans(resource: Resource) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    scoped = provider.get_tracer("scoped", "1.2.3", schema_url="https://schema/1")
    plain = provider.get_tracer("plain")
    remote_parent = trace.set_span_in_context(trace.NonRecordingSpan(REMOTE))
    with scoped.start_as_current_span(
        "/mutate.v1.StorageService/PutObject",
        context=remote_parent,
        kind=SpanKind.SERVER,
        attributes={
            "rpc.system": "grpc",
            "int": 7,
            "negative": -3,
            "big": 2**62,
            "float": 1.5,
            "true": True,
            "false": False,
            "empty": "",
            "unicode": "größe ✓",
            "strings": ("a", "b"),
            "ints": [1, 2, 3],
            "bools": (True, False),
        },
    ) as server:
        server.add_event("retry", {"attempt": 2}, timestamp=1_700_000_000_000_000_000)
        server.add_event("bare")
        with plain.start_as_current_span(
            "INSERT", kind=SpanKind.CLIENT, links=[Link(REMOTE, {"why": "batch"})]
        ) as child:
            child.set_status(Status(StatusCode.ERROR, "boom"))
        for kind in SpanKind:
            plain.start_span(f"kind {kind.name}", kind=kind).end()
        ok = plain.start_span("ok")
        ok.set_status(Status(StatusCode.OK))
        ok.end()
        try:
            with plain.start_as_current_span("failing"):
                raise ValueError("bad input")
        except ValueError:
            pass
    return list(exporter.get_finished_spans())


def _decoded(data: bytes) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(data)


def _sdk(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    return _decoded(sdk_encode_spans(spans).SerializeToString())


def test_encoding_matches_the_sdk_encoder() -> None:
    resource = Resource({"service.name": "mutate-test", "n": 1}, "https://r/1")
    spans = _spans(resource)

    ours = _decoded(encode_spans(spans))

    assert ours == _sdk(spans)
    assert len(ours.resource_spans[0].scope_spans) == 2
    assert sum(len(s.spans) for s in ours.resource_spans[0].scope_spans) == len(spans)


def test_cached_encodings_stay_right_across_batches() -> None:
    encoder = _Encoder()
    first = _spans(Resource({"service.name": "a"}))
    second = _spans(Resource({"service.name": "b"}))
    for batch in (first, second, first[:3], second[2:], first + second):
        assert _decoded(encoder.encode(batch)) == _sdk(batch)


def test_exporter_posts_spans_the_receiver_decodes() -> None:
    spans = _spans(Resource({"service.name": "mutate-export-test"}))
    with OtlpReceiver() as receiver:
        exporter = OtlpSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")
        try:
            assert exporter.export(spans).name == "SUCCESS"
        finally:
            exporter.shutdown()
        received = receiver.wait_for(lambda got: len(got) >= len(spans), timeout=10)

    assert sorted(s.name for s in received) == sorted(s.name for s in spans)
    server = next(s for s in received if s.name.endswith("PutObject"))
    assert server.parent_span_id == format(REMOTE.span_id, "016x")
    assert server.service == "mutate-export-test"
