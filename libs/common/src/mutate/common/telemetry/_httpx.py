"""Client spans for webhook tries: `opentelemetry-instrumentation-httpx`.

Instrumenting one client (not the httpx module) keeps it to the clients we
choose: the notifier's webhook sender, whose requests then carry
`traceparent` to the receiver and show as CLIENT spans with the status code.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace


def instrument_httpx_client(
    client: Any, *, tracer_provider: trace.TracerProvider | None = None
) -> None:
    """Trace every request of an `httpx.Client` or `httpx.AsyncClient`.

    Works with custom transports (it wraps the transport the client holds),
    so call it after the client is built. Idempotent.
    """
    # Imported here: httpx is a dependency of the notifier only.
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    if getattr(client, "_is_instrumented_by_opentelemetry", False):
        return
    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=tracer_provider)
