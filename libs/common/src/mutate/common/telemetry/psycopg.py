"""CLIENT spans for PostgreSQL statements run through psycopg 3.

`opentelemetry-instrumentation-psycopg` is not used: its newest release
(0.66b1) pins `opentelemetry-instrumentation==0.66b1`, which conflicts with
the 0.66b2 that the gRPC and httpx instrumentations need. This is the small
part we need: a cursor class that wraps `execute`/`executemany` in a span.
Pass it as the connection's `cursor_factory`, e.g. in a pool's `kwargs`:

    AsyncConnectionPool(url, kwargs={"cursor_factory": TracedAsyncCursor, ...})

`connection.execute(...)` goes through the cursor factory too.

Statements run outside any span (background loops) make no span: a
statement is traced only as part of a trace that is already there.

TODO: `cursor.stream()`, `copy()` and server-side cursors are not traced.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import psycopg
from opentelemetry import trace
from psycopg import sql
from psycopg.rows import Row

TRACER_NAME = "mutate.common.telemetry.psycopg"
_MAX_STATEMENT = 4096

_tracer = trace.get_tracer(TRACER_NAME)


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


@contextlib.contextmanager
def _db_span(cursor: psycopg.AsyncCursor[Any], query: Any) -> Iterator[None]:
    # Only inside a trace: background polls (the notifier's claim loop, the
    # gateway's sweeper) would otherwise make a one-span trace per statement.
    if not trace.get_current_span().get_span_context().is_valid:
        yield
        return
    # The statement is only rendered when the span records: free when off.
    with _tracer.start_as_current_span(
        "postgresql", kind=trace.SpanKind.CLIENT
    ) as span:
        if span.is_recording():
            text = _statement(query, cursor)
            operation = _operation(text)
            info = cursor.connection.info
            if operation:
                span.update_name(operation)
            span.set_attributes(
                {
                    "db.system": "postgresql",
                    "db.system.name": "postgresql",
                    "db.namespace": info.dbname,
                    "db.operation.name": operation,
                    "db.statement": text[:_MAX_STATEMENT],
                    "db.query.text": text[:_MAX_STATEMENT],
                    "server.address": info.host,
                    "server.port": info.port,
                }
            )
        yield


class TracedAsyncCursor(psycopg.AsyncCursor[Row]):
    """An AsyncCursor whose statements are CLIENT spans (`db.*` attributes)."""

    async def execute(
        self, query: Any, params: Any = None, **kwargs: Any
    ) -> TracedAsyncCursor[Row]:
        with _db_span(self, query):
            await super().execute(query, params, **kwargs)
        return self

    async def executemany(
        self, query: Any, params_seq: Iterable[Any], **kwargs: Any
    ) -> None:
        with _db_span(self, query):
            await super().executemany(query, params_seq, **kwargs)


def traced_connection_kwargs() -> dict[str, Any]:
    """Connection keyword arguments that turn statement tracing on."""
    return {"cursor_factory": TracedAsyncCursor}
