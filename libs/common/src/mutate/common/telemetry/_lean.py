"""`LeanTracerProvider`: the SDK's tracer provider, its spans made in fewer steps.

Issue #8 allows tracing 10% of the sync job path's throughput, and that path
makes 14 spans a job. The SDK's `Tracer.start_span` and `Span.end` cost
~15 us a span in a tight loop and two to four times that on the request
path, where caches are cold: keyword-argument chains through
`ReadableSpan.__init__`, an attribute-cleaning pass over our own plain
attribute dicts, a lock taken per attribute, the sampler's calls, a
`ReadableSpan` copy at `end()`. Here a span costs ~6 us in a tight loop.

What changes, and only that:

- `start_span` does the SDK's steps (parent, sampling decision, ids, flags,
  span processors' `on_start`) without the indirections. A sampler whose
  decision is fixed (always on or off, directly or as the `ParentBased`
  delegate for the parent: the SDK's default sampler) is not called, its
  decision is taken; any other sampler is asked as the SDK asks it. Spans
  with links, and tracers the configurator disabled, take the SDK's path;
- the span is the SDK's `Span` class with its fields set directly, its
  event and link lists made when the first is added;
- attributes that are already clean (str keys; str, bool, int or float
  values; within the limits), at the start or by `set_attribute`, are
  stored as they are; anything else goes through the SDK's
  `BoundedAttributes`;
- `end()` hands the span itself to the processors: after `end()` nothing in
  it can change, and the SDK's copy shares its attributes, events and links.

The processors, limits, exporters and every other span method are the
SDK's. When the first tracer is made, `_self_check` compares a lean span
with the SDK's; if the SDK's fields ever differ (another version), the
provider makes SDK tracers and says so once.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Mapping, Sequence
from time import time_ns
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Span, SpanLimits, Tracer, TracerProvider
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    StaticSampler,
)
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import (
    INVALID_SPAN,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
    get_current_span,
)
from opentelemetry.trace.span import TraceState
from opentelemetry.trace.status import Status, StatusCode
from opentelemetry.util import types

logger = logging.getLogger(__name__)

_PLAIN_VALUES = frozenset({str, bool, int, float})
_UNSET = Status(StatusCode.UNSET)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_SAMPLED_RANDOM = TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)
_NOT_SAMPLED_RANDOM = TraceFlags(TraceFlags.DEFAULT | TraceFlags.RANDOM_TRACE_ID)


def _attributes(
    attributes: Mapping[str, Any] | None, maxlen: int | None, max_value_len: int | None
) -> BoundedAttributes:
    """A mutable `BoundedAttributes` holding `attributes`, as the SDK's span
    makes it; clean ones are taken without the SDK's cleaning pass."""
    if attributes and (maxlen is None or len(attributes) <= maxlen):
        for key, value in attributes.items():
            kind = type(value)
            if kind not in _PLAIN_VALUES or type(key) is not str or not key:
                break
            if kind is str and max_value_len is not None and len(value) > max_value_len:
                break
        else:
            bounded = BoundedAttributes.__new__(BoundedAttributes)
            bounded._dict = dict(attributes)
            bounded.maxlen = maxlen
            bounded.dropped = 0
            bounded.max_value_len = max_value_len
            bounded._lock = threading.Lock()
            bounded._immutable = False
            return bounded
    return BoundedAttributes(
        maxlen, attributes, immutable=False, max_value_len=max_value_len
    )


# Events and links until a span gets its first: most get none. Never
# appended to (see LeanSpan._add_event); reads as an empty BoundedList.
_NONE_YET: BoundedList[Any] = BoundedList(0)


class LeanSpan(Span):
    """The SDK's span; `LeanTracer` fills it in, `end` skips the copy."""

    def _add_event(self, event: Any) -> None:
        with self._lock:
            if self._events is _NONE_YET:
                self._events = BoundedList(self._limits.max_events)
        super()._add_event(event)

    def _add_link(self, link: trace_api.Link) -> None:
        with self._lock:
            if self._links is _NONE_YET:
                self._links = BoundedList(self._limits.max_links)
        super()._add_link(link)

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        attributes = self._attributes
        if (
            type(value) in _PLAIN_VALUES
            and type(key) is str
            and key
            and type(attributes) is BoundedAttributes
            and (
                attributes.max_value_len is None
                or type(value) is not str
                or len(value) <= attributes.max_value_len
            )
        ):
            # A clean value: stored as BoundedAttributes.__setitem__ would;
            # a full span (the oldest dropped) takes the SDK's path below.
            with self._lock:
                if self._end_time is None:
                    items = attributes._dict
                    if key in items:
                        del items[key]
                        items[key] = value
                        return
                    if attributes.maxlen is None or len(items) < attributes.maxlen:
                        items[key] = value
                        return
        super().set_attribute(key, value)

    def end(self, end_time: int | None = None) -> None:
        with self._lock:
            if self._start_time is None:
                raise RuntimeError("Calling end() on a not started span.")
            if self._end_time is not None:
                logger.warning("Calling end() on an ended span.")
                return
            self._end_time = end_time if end_time is not None else time_ns()
            self._attributes._immutable = True  # type: ignore[union-attr]
        if self._record_end_metrics:
            self._record_end_metrics()
        self._span_processor._on_ending(self)
        self._span_processor.on_end(self)


def _span_template(tracer: Tracer) -> dict[str, Any]:
    """The fields `Span.__init__` sets that are the same for every span of
    `tracer` (the others are set per span in `LeanTracer.start_span`)."""
    return {
        "_instrumentation_info": tracer.instrumentation_info,
        "_instrumentation_scope": tracer._instrumentation_scope,
        "_end_time": None,
        "_events": _NONE_YET,
        "_links": _NONE_YET,
        "_resource": tracer.resource,
        "_status": _UNSET,
        "_sampler": tracer.sampler,
        "_trace_config": None,
        "_span_processor": tracer.span_processor,
        "_limits": tracer._span_limits,
    }


def _static_decision(
    sampler: Sampler, parent: SpanContext | None
) -> tuple[Decision, TraceState | None] | None:
    """What `sampler.should_sample` decides, when that is fixed: a
    `StaticSampler` (always on or off), directly or as the `ParentBased`
    delegate the parent selects (the SDK's defaults). None: ask the sampler."""
    if type(sampler) is ParentBased:
        if parent is None:
            sampler = sampler._root
        elif parent.is_remote:
            sampler = (
                sampler._remote_parent_sampled
                if parent.trace_flags.sampled
                else sampler._remote_parent_not_sampled
            )
        else:
            sampler = (
                sampler._local_parent_sampled
                if parent.trace_flags.sampled
                else sampler._local_parent_not_sampled
            )
    if type(sampler) is not StaticSampler:
        return None
    return sampler._decision, parent.trace_state if parent is not None else None


class LeanTracer(Tracer):
    """The SDK's tracer with a shorter `start_span` (see the module docstring)."""

    _lean_template: dict[str, Any] | None = None

    def _set_resource(self, resource: Resource) -> None:
        super()._set_resource(resource)
        self._lean_template = None

    def start_span(
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[trace_api.Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace_api.Span:
        if links or not self._tracer_config.is_enabled:
            return super().start_span(
                name,
                context,
                kind,
                attributes,
                links,
                start_time,
                record_exception,
                set_status_on_exception,
            )
        parent: SpanContext | None = get_current_span(context).get_span_context()
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = self.id_generator.generate_trace_id()
            random_trace_id = self.id_generator.is_trace_id_random()
        else:
            trace_id = parent.trace_id
            random_trace_id = parent.trace_flags.random_trace_id
        static = _static_decision(self.sampler, parent)
        if static is None:
            result = self.sampler.should_sample(
                context, trace_id, name, kind, attributes, links
            )
            decision, trace_state = result.decision, result.trace_state
            attributes = result.attributes
        else:
            decision, trace_state = static
        if decision is Decision.RECORD_AND_SAMPLE:
            flags = _SAMPLED_RANDOM if random_trace_id else _SAMPLED
        else:
            flags = _NOT_SAMPLED_RANDOM if random_trace_id else _NOT_SAMPLED
        span_context = SpanContext(
            trace_id,
            self.id_generator.generate_span_id(),
            is_remote=False,
            trace_flags=flags,
            trace_state=trace_state,
        )
        record_end_metrics = self._tracer_metrics.start_span(parent, decision)
        if decision is Decision.DROP:
            return NonRecordingSpan(context=span_context)
        template = self._lean_template
        if template is None:
            template = self._lean_template = _span_template(self)
        limits: SpanLimits = template["_limits"]
        # What Span.__init__ (and ReadableSpan.__init__) would set; Span.__new__
        # only refuses the Span class itself.
        span: LeanSpan = object.__new__(LeanSpan)
        fields = span.__dict__
        fields.update(template)
        fields["_name"] = name
        fields["_context"] = span_context
        fields["_kind"] = kind
        fields["_parent"] = parent
        fields["_attributes"] = _attributes(
            attributes, limits.max_span_attributes, limits.max_span_attribute_length
        )
        fields["_record_exception"] = record_exception
        fields["_set_status_on_exception"] = set_status_on_exception
        fields["_lock"] = threading.Lock()
        fields["_record_end_metrics"] = record_end_metrics
        fields["_start_time"] = start_time if start_time is not None else time_ns()
        self.span_processor.on_start(span, parent_context=context)
        return span


class LeanTracerProvider(TracerProvider):
    """The SDK's provider, whose tracers are `LeanTracer`s when the SDK's
    span fields are the ones `LeanTracer.start_span` sets."""

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace_api.Tracer:
        tracer = super().get_tracer(*args, **kwargs)
        if type(tracer) is Tracer and _lean_spans_match():
            # Same fields, one method more; the SDK keeps it in its cache.
            tracer.__class__ = LeanTracer
        return tracer


@functools.cache
def _lean_spans_match() -> bool:
    """Whether a lean span has exactly the fields and values the SDK's has
    (checked once, when the first tracer is made)."""
    if _self_check():
        return True
    logger.warning("OpenTelemetry SDK internals changed: using the SDK's tracers")
    return False


def _self_check() -> bool:
    try:
        provider = TracerProvider(sampler=ALWAYS_ON, shutdown_on_exit=False)
        sdk_tracer = provider.get_tracer("mutate.self-check")
        attributes: dict[str, types.AttributeValue] = {
            "a": "x",
            "b": 1,
            "c": True,
            "d": 1.5,
        }
        parent = trace_api.set_span_in_context(INVALID_SPAN)
        sdk_span = sdk_tracer.start_span("s", parent, SpanKind.CLIENT, attributes)
        lean_tracer = LeanTracer.__new__(LeanTracer)
        lean_tracer.__dict__.update(vars(sdk_tracer))
        lean_span = lean_tracer.start_span("s", parent, SpanKind.CLIENT, attributes)
        plain = BoundedAttributes(3, {"a": "x"}, immutable=False)
        quick = _attributes({"a": "x"}, 3, None)
        ok = (
            vars(sdk_span).keys() == vars(lean_span).keys()
            and vars(plain).keys() == vars(quick).keys()
            and isinstance(lean_span, Span)
            and _attributes_of(sdk_span) == _attributes_of(lean_span)
        )
        lean = vars(lean_span)
        for key, value in vars(sdk_span).items():
            if key in _UNCOMPARED:
                continue
            if key == "_start_time":
                ok = ok and isinstance(lean[key], int)
            elif key == "_status":
                ok = ok and (value.status_code, value.description) == (
                    lean[key].status_code,
                    lean[key].description,
                )
            else:
                ok = ok and lean[key] == value
        sdk_span.end()
        lean_span.end()
        provider.shutdown()
        return bool(ok)
    except Exception:  # noqa: BLE001 - any mismatch means: use the SDK's path
        logger.debug("lean span self-check failed", exc_info=True)
        return False


def _attributes_of(span: trace_api.Span) -> dict[str, Any]:
    return dict(span.attributes or {}) if isinstance(span, Span) else {}


# Per span by nature (ids, locks, containers compared above by content).
_UNCOMPARED = frozenset(
    {"_context", "_attributes", "_events", "_links", "_lock", "_record_end_metrics"}
)
