"""CLIENT spans for PostgreSQL statements run through psycopg 3.

`opentelemetry-instrumentation-psycopg` is not used: its newest release
(0.66b1) pins `opentelemetry-instrumentation==0.66b1`, which conflicts with
the 0.66b2 that the gRPC and httpx instrumentations need. This is the small
part we need: a cursor class that wraps `execute`/`executemany` in a span.
Pass it as the connection's `cursor_factory`, e.g. in a pool's `kwargs`:

    AsyncConnectionPool(url, kwargs={"cursor_factory": TracedAsyncCursor, ...})

`connection.execute(...)` goes through the cursor factory too.

Statements run outside any span (background loops) make no span: a
statement is traced only as part of a trace that is already there. Span
name and attributes are worked out once per statement text and connection.

TODO: `cursor.stream()`, `copy()` and server-side cursors are not traced.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

import psycopg
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.util.types import AttributeValue
from psycopg import sql
from psycopg.rows import Row

TRACER_NAME = "mutate.common.telemetry.psycopg"
_MAX_STATEMENT = 4096
# Statements remembered per connection; cleared when full.
_STATEMENT_CACHE_SIZE = 512

_tracer = trace.get_tracer(TRACER_NAME)
# Per connection: its server attributes, and per statement text the span
# name and every attribute (the same few statements run over and over).
_known: weakref.WeakKeyDictionary[
    Any,
    tuple[dict[str, AttributeValue], dict[str, tuple[str, dict[str, AttributeValue]]]],
] = weakref.WeakKeyDictionary()


def _operation(text: str) -> str:
    word = text.lstrip(" \t\r\n(").split(None, 1)[:1]
    return word[0].upper() if word else ""


def _statement(query: Any, context: Any) -> str:
    if isinstance(query, str):
        return query
    if isinstance(query, bytes):
        return query.decode("utf-8", "replace")
    if isinstance(query, sql.Composable):
        return query.as_string(context)
    return str(query)


def _statement_attributes(text: str) -> tuple[str, dict[str, AttributeValue]]:
    operation = _operation(text)
    statement = text[:_MAX_STATEMENT]
    return operation or "postgresql", {
        "db.operation.name": operation,
        "db.statement": statement,
        "db.query.text": statement,
    }


def _server_attributes(connection: Any) -> dict[str, AttributeValue]:
    info = connection.info
    return {
        "db.system": "postgresql",
        "db.system.name": "postgresql",
        "db.namespace": info.dbname,
        "server.address": info.host,
        "server.port": info.port,
    }


def _span_info(connection: Any, text: str) -> tuple[str, dict[str, AttributeValue]]:
    """Span name and all attributes of `text` run on `connection`, worked
    out once per connection and statement."""
    known = _known.get(connection)
    if known is None:
        known = _known[connection] = (_server_attributes(connection), {})
    server, statements = known
    info = statements.get(text)
    if info is None:
        name, attributes = _statement_attributes(text)
        info = (name, {**server, **attributes})
        if len(statements) >= _STATEMENT_CACHE_SIZE:
            statements.clear()
        statements[text] = info
    return info


def _start(cursor: psycopg.AsyncCursor[Any], query: Any) -> Span | None:
    """A CLIENT span for a statement, or None outside any trace.

    Background polls (the notifier's claim loop, the gateway's sweeper)
    would otherwise make a one-span trace per statement. Not made current:
    nothing runs under a statement.
    """
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    name, attributes = _span_info(cursor.connection, _statement(query, cursor))
    return _tracer.start_span(name, kind=trace.SpanKind.CLIENT, attributes=attributes)


def _end(span: Span, exc: BaseException | None) -> None:
    if isinstance(exc, Exception) and span.is_recording():
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
    span.end()


class TracedAsyncCursor(psycopg.AsyncCursor[Row]):
    """An AsyncCursor whose statements are CLIENT spans (`db.*` attributes)."""

    async def execute(
        self, query: Any, params: Any = None, **kwargs: Any
    ) -> TracedAsyncCursor[Row]:
        span = _start(self, query)
        if span is None:
            await super().execute(query, params, **kwargs)
            return self
        try:
            await super().execute(query, params, **kwargs)
        except BaseException as exc:
            _end(span, exc)
            raise
        _end(span, None)
        return self

    async def executemany(
        self, query: Any, params_seq: Iterable[Any], **kwargs: Any
    ) -> None:
        span = _start(self, query)
        if span is None:
            await super().executemany(query, params_seq, **kwargs)
            return
        try:
            await super().executemany(query, params_seq, **kwargs)
        except BaseException as exc:
            _end(span, exc)
            raise
        _end(span, None)


def traced_connection_kwargs() -> dict[str, Any]:
    """Connection keyword arguments that turn statement tracing on."""
    return {"cursor_factory": TracedAsyncCursor}
