"""In-process span capture for tests: `with capture_spans() as spans:`.

OpenTelemetry allows one global tracer provider a process, and the proxy
tracers that modules create at import bind to it for good. So the first
capture installs one SDK provider for the rest of the process; its sampler
drops everything (non-recording spans, next to no cost) except while a
capture is open, when finished spans go to that capture's in-memory
exporter. The provider is the services' own (`LeanTracerProvider`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from mutate.common.telemetry._lean import LeanTracerProvider

_lock = threading.Lock()
_active: list[InMemorySpanExporter] = []


class _SwitchSampler(Sampler):
    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        sampler = ALWAYS_ON if _active else ALWAYS_OFF
        return sampler.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return "MutateTestSwitch"


class _FanOut(SpanProcessor):
    def on_start(
        self, span: Span, parent_context: otel_context.Context | None = None
    ) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        with _lock:
            exporters = list(_active)
        for exporter in exporters:
            exporter.export((span,))


_provider: TracerProvider | None = None


def _install() -> TracerProvider:
    global _provider
    with _lock:
        if _provider is None:
            current = trace.get_tracer_provider()
            if not isinstance(current, trace.ProxyTracerProvider):
                raise RuntimeError(
                    "capture_spans: another tracer provider is already global"
                )
            _provider = LeanTracerProvider(sampler=_SwitchSampler())
            _provider.add_span_processor(_FanOut())
            trace.set_tracer_provider(_provider)
        return _provider


@contextlib.contextmanager
def capture_spans() -> Iterator[InMemorySpanExporter]:
    """Record the spans finished inside the block; `.get_finished_spans()`."""
    _install()
    exporter = InMemorySpanExporter()
    with _lock:
        _active.append(exporter)
    try:
        yield exporter
    finally:
        with _lock:
            _active.remove(exporter)


def capture_tracer_provider() -> TracerProvider:
    """The process's capture provider, installed if needed."""
    return _install()
