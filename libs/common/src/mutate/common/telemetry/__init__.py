"""OpenTelemetry for the Mutate services: set-up, spans, metrics, local view.

- `setup_telemetry(service, env=os.environ)` in each `main` builds tracing
  and metrics from the standard `OTEL_*` variables (and `MUTATE_TRACE_FILE`,
  `MUTATE_METRICS_PORT`); with nothing set it costs next to nothing.
- gRPC: `Telemetry.server_interceptors()` / `client_interceptors()`; make
  channels with `insecure_channel(..., interceptors=client_interceptors())`.
- NATS: `producer_span` / `consumer_span` (W3C context in message headers);
  `mutate.common.messaging` publishes inside a producer span already.
- httpx: `instrument_httpx_client`; psycopg: `mutate.common.telemetry.psycopg`.
- Metrics: `mutate.common.telemetry.metrics.Metrics` (`Telemetry.metrics`).
- Local view: `MUTATE_TRACE_FILE` + `python -m mutate.common.tracecli`.
"""

from __future__ import annotations

from mutate.common.telemetry._config import TelemetrySettings
from mutate.common.telemetry._grpc import (
    DurationInterceptor,
    TracedChannel,
    aio_client_interceptors,
    aio_server_interceptor,
    insecure_channel,
)
from mutate.common.telemetry._httpx import instrument_httpx_client
from mutate.common.telemetry._nats import (
    JOB_ID_ATTRIBUTE,
    consumer_span,
    message_age,
    producer_span,
)
from mutate.common.telemetry._setup import Telemetry, TelemetryState, setup_telemetry
from mutate.common.telemetry.metrics import NOOP_METRICS, Metrics

__all__ = [
    "JOB_ID_ATTRIBUTE",
    "NOOP_METRICS",
    "DurationInterceptor",
    "Metrics",
    "Telemetry",
    "TelemetrySettings",
    "TelemetryState",
    "TracedChannel",
    "aio_client_interceptors",
    "aio_server_interceptor",
    "consumer_span",
    "insecure_channel",
    "instrument_httpx_client",
    "message_age",
    "producer_span",
    "setup_telemetry",
]
