"""The span exporter behind `MUTATE_TRACE_FILE`: OTLP/JSON lines on disk.

Each export appends one line with one `os.write` on an `O_APPEND` descriptor,
so the four services of the local platform can share one file: on a local
Linux file system appends of whole lines do not interleave.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from mutate.common.telemetry.otlpjson import trace_request_to_json

logger = logging.getLogger(__name__)


class JsonLinesSpanExporter(SpanExporter):
    """Appends finished spans to a file, one OTLP/JSON request a line."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(
            self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
        )
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        data = trace_request_to_json(encode_spans(spans))
        line = json.dumps(data, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            if self._fd is None:
                return SpanExportResult.FAILURE
            try:
                os.write(self._fd, line)
            except OSError as exc:
                logger.warning(
                    "cannot write spans to trace file",
                    extra={"path": str(self.path), "error": str(exc)},
                )
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        # Every export is one write(2); nothing is buffered here.
        return True

    def shutdown(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
