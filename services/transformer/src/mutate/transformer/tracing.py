"""Spans of a conversion: one for the engine run, one for each rule applied.

The engine runs in a spawned child process that has no tracer of its own.
Rather than export from every child, the parent makes the spans after the
fact from what the child sends back: the engine's run time and the
execution log, whose entries carry each rule's id, type, rows before and
after and duration. The spans are children of the span current in the
caller (the worker's consumer span, or the Transform server span).

TODO: the log has each rule's duration but not its start, so rule spans are
laid end to end from the engine's start: durations are exact, start offsets
approximate (the engine's parsing before the first rule is not separated).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from mutate.v1 import configuration_pb2, job_pb2

tracer = trace.get_tracer("mutate.transformer.engine")

_Entry = configuration_pb2.ExecutionLogEntry


@contextlib.contextmanager
def engine_span(file_name: str) -> Iterator[trace.Span]:
    """An INTERNAL span around one conversion in the pool."""
    with tracer.start_as_current_span(
        "engine convert",
        attributes={"mutate.input.file_name": file_name},
    ) as span:
        yield span


def record_outcome(
    span: trace.Span,
    *,
    entries: Sequence[_Entry],
    engine_seconds: float,
    rows: int,
    error: job_pb2.JobError | None,
) -> None:
    """Rule spans under `span`, and the conversion's result on it."""
    if not span.is_recording():
        return
    span.set_attributes(
        {
            "mutate.engine.seconds": engine_seconds,
            "mutate.rows.out": rows,
            "mutate.rules": len(entries),
        }
    )
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, f"{error.code}: {error.message}"))
        span.set_attribute("mutate.error.code", error.code)
    parent = trace.set_span_in_context(span)
    cursor = time.time_ns() - int(engine_seconds * 1e9)
    for index, entry in enumerate(entries, start=1):
        duration = int(entry.duration_ms * 1e6)
        _rule_span(entry, index, parent, start=cursor, end=cursor + duration)
        cursor += duration


def _rule_span(
    entry: _Entry, index: int, parent: object, *, start: int, end: int
) -> None:
    rule_type = configuration_pb2.RuleType.Name(entry.rule_type)
    span = tracer.start_span(
        f"rule {entry.rule_id or index} {rule_type.lower()}",
        context=parent,  # type: ignore[arg-type]
        start_time=start,
        attributes={
            "mutate.rule.id": entry.rule_id,
            "mutate.rule.type": rule_type,
            "mutate.rule.index": index,
            "mutate.rows.in": entry.rows_before,
            "mutate.rows.out": entry.rows_after,
            "mutate.columns.in": entry.columns_before,
            "mutate.columns.out": entry.columns_after,
        },
    )
    if entry.outcome == _Entry.ERROR:
        span.set_status(Status(StatusCode.ERROR, entry.message))
    elif entry.message:
        span.set_attribute("mutate.rule.message", entry.message)
    span.end(end_time=end)
