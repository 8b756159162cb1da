"""Logging set-up: JSON lines in production, readable text in a terminal.

Every record carries `job_id` (from a context variable set around job work)
and the current OpenTelemetry `trace_id` and `span_id`, so log lines and
traces join. Libraries never attach handlers; only `configure` does, from
`main`.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace

_job_id: contextvars.ContextVar[str] = contextvars.ContextVar("job_id", default="")

# Attributes every LogRecord has; anything else came in through `extra=`.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "job_id",
    "trace_id",
    "span_id",
    "service",
}


@contextlib.contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Tag every log record inside the block with `job_id`."""
    token = _job_id.set(job_id)
    try:
        yield
    finally:
        _job_id.reset(token)


def current_job_id() -> str:
    return _job_id.get()


class _ContextFilter(logging.Filter):
    """Adds job id, trace id and span id to each record."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self._service
        if not getattr(record, "job_id", ""):
            record.job_id = _job_id.get()
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.trace_id = format(ctx.trace_id, "032x")
            record.span_id = format(ctx.span_id, "016x")
        else:
            record.trace_id = ""
            record.span_id = ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line with the context fields and any `extra=` keys."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": getattr(record, "service", ""),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("job_id", "trace_id", "span_id"):
            value = getattr(record, key, "")
            if value:
                out[key] = value
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time level logger message key=value…` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        parts = [
            f"{stamp}.{int(record.msecs):03d}",
            f"{record.levelname:<7}",
            f"{getattr(record, 'service', '')}:{record.name}",
            record.getMessage(),
        ]
        for key in ("job_id", "trace_id"):
            value = getattr(record, key, "")
            if value:
                parts.append(f"{key}={value}")
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                parts.append(f"{key}={value}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(service: str, *, level: str = "INFO", fmt: str = "json") -> None:
    """Install the one stderr handler of a service process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter(service))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Chatty libraries stay at WARNING unless asked otherwise.
    for name in ("nats", "httpx", "httpcore", "urllib3", "minio", "psycopg.pool"):
        logging.getLogger(name).setLevel(
            max(logging.WARNING, logging.getLogger().level)
        )
