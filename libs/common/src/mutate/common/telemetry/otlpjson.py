"""Spans as OTLP/JSON lines: the local trace file's format, and reading it.

A trace file holds one `ExportTraceServiceRequest` a line in the OTLP/JSON
encoding (ids in hex, enums as numbers), as the OpenTelemetry file-exporter
spec and the Collector's `file` exporter write it. Our file exporter and the
test receiver write it; `mutate.common.tracecli` reads it, and so can any
OTLP tool. `SpanRecord` is the flat view of one span that readers and tests
work with.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

logger = logging.getLogger(__name__)

_KINDS = {
    0: "unspecified",
    1: "internal",
    2: "server",
    3: "client",
    4: "producer",
    5: "consumer",
}
_STATUS = {0: "unset", 1: "ok", 2: "error"}
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SpanRecord:
    """One finished span, flattened from OTLP."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    service: str
    start_ns: int
    end_ns: int
    status: str
    status_message: str = ""
    attributes: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    events: tuple[tuple[str, Mapping[str, Any]], ...] = ()

    @property
    def duration(self) -> float:
        """Seconds from start to end."""
        return max(0, self.end_ns - self.start_ns) / 1e9

    @property
    def is_error(self) -> bool:
        return self.status == "error"


def trace_request_to_json(
    request: trace_service_pb2.ExportTraceServiceRequest,
) -> dict[str, Any]:
    """The OTLP/JSON form of a request: protobuf JSON with hex ids."""
    data = json_format.MessageToDict(request, use_integers_for_enums=True)
    for span in _raw_spans(data):
        _hex_ids(span)
        for link in span.get("links", ()):
            _hex_ids(link)
    return data


def _hex_ids(obj: dict[str, Any]) -> None:
    # Protobuf's JSON mapping writes bytes as base64; OTLP/JSON wants hex.
    for key in _ID_FIELDS:
        if obj.get(key):
            obj[key] = base64.b64decode(obj[key]).hex()


def _raw_spans(data: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for resource_spans in data.get("resourceSpans", ()):
        for scope_spans in resource_spans.get("scopeSpans", ()):
            yield from scope_spans.get("spans", ())


def records_from_json(data: Mapping[str, Any]) -> list[SpanRecord]:
    """Every span of one OTLP/JSON `ExportTraceServiceRequest`."""
    out = []
    for resource_spans in data.get("resourceSpans", ()):
        resource = attributes_from_json(
            resource_spans.get("resource", {}).get("attributes", ())
        )
        service = str(resource.get("service.name", ""))
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                out.append(_record(span, service))
    return out


def records_from_request(
    request: trace_service_pb2.ExportTraceServiceRequest,
) -> list[SpanRecord]:
    return records_from_json(trace_request_to_json(request))


def _record(span: Mapping[str, Any], service: str) -> SpanRecord:
    status = span.get("status", {})
    return SpanRecord(
        trace_id=span.get("traceId", ""),
        span_id=span.get("spanId", ""),
        parent_span_id=span.get("parentSpanId", ""),
        name=span.get("name", ""),
        kind=_enum(span.get("kind", 0), _KINDS, "SPAN_KIND_"),
        service=service,
        start_ns=int(span.get("startTimeUnixNano", 0)),
        end_ns=int(span.get("endTimeUnixNano", 0)),
        status=_enum(status.get("code", 0), _STATUS, "STATUS_CODE_"),
        status_message=status.get("message", ""),
        attributes=attributes_from_json(span.get("attributes", ())),
        events=tuple(
            (event.get("name", ""), attributes_from_json(event.get("attributes", ())))
            for event in span.get("events", ())
        ),
    )


def _enum(value: Any, names: Mapping[int, str], prefix: str) -> str:
    # Numbers per OTLP/JSON; names too, as some writers emit them.
    if isinstance(value, str) and not value.isdigit():
        return value.removeprefix(prefix).lower()
    return names.get(int(value), str(value))


def attributes_from_json(items: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    return {item["key"]: _any_value(item.get("value", {})) for item in items}


def _any_value(value: Mapping[str, Any]) -> Any:
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        return [_any_value(v) for v in value["arrayValue"].get("values", ())]
    if "kvlistValue" in value:
        return attributes_from_json(value["kvlistValue"].get("values", ()))
    if "bytesValue" in value:
        return base64.b64decode(value["bytesValue"]).hex()
    return None


def read_spans(path: str | Path) -> list[SpanRecord]:
    """All spans of a trace file; unreadable lines are skipped with a warning.

    A line being written while we read is the usual cause, so this is not an
    error: the next read sees it whole.
    """
    out: list[SpanRecord] = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                out.extend(records_from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                logger.warning(
                    "skipping unreadable trace line",
                    extra={"path": str(path), "line": number, "error": str(exc)},
                )
    return out
