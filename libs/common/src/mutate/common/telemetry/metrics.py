"""Every Mutate metric, declared once.

Services get a `Metrics` from `Telemetry.metrics` (built in `main`) and pass
it down; `NOOP_METRICS` is the default for code and tests that have none.
OpenTelemetry names are dotted with a unit; the Prometheus endpoint shows
them as, for example, `mutate_jobs_total` and `mutate_job_duration_seconds`.

| instrument | kind | unit | attributes |
| --- | --- | --- | --- |
| `mutate.jobs` | counter | {job} | `outcome`, `mode` |
| `mutate.job.duration` | histogram | s | `outcome`, `mode` |
| `mutate.queue.lag` | histogram | s | `messaging.destination.name` |
| `mutate.queue.pending` | gauge | {message} | `messaging.destination.name` |
| `mutate.webhook.attempts` | counter | {attempt} | `outcome` |
| `mutate.storage.io` | counter | By | `direction` (`in`, `out`) |
| `rpc.server.call.duration` | histogram | s | `rpc.method`, `rpc.grpc.status_code` |
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from opentelemetry import metrics as otel_metrics
from opentelemetry.metrics import Counter, Histogram, Meter, _Gauge

METER_NAME = "mutate"

# Seconds, from a fast RPC to a long queued conversion. The SDK's default
# buckets are meant for milliseconds.
DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
)

JobOutcome = Literal["completed", "failed", "cancelled", "dead_lettered"]
Direction = Literal["in", "out"]


@dataclasses.dataclass(frozen=True)
class Metrics:
    """The instruments, created from one meter."""

    jobs: Counter
    job_duration: Histogram
    queue_lag: Histogram
    queue_pending: _Gauge
    webhook_attempts: Counter
    storage_bytes: Counter
    rpc_server_duration: Histogram

    @classmethod
    def from_meter(cls, meter: Meter) -> Metrics:
        return cls(
            jobs=meter.create_counter(
                "mutate.jobs", unit="{job}", description="Jobs finished, by outcome."
            ),
            job_duration=meter.create_histogram(
                "mutate.job.duration",
                unit="s",
                description="From job creation to its terminal event.",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            ),
            queue_lag=meter.create_histogram(
                "mutate.queue.lag",
                unit="s",
                description="How long a message waited in JetStream before "
                "a consumer took it.",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            ),
            queue_pending=meter.create_gauge(
                "mutate.queue.pending",
                unit="{message}",
                description="Messages not yet delivered to the consumer.",
            ),
            webhook_attempts=meter.create_counter(
                "mutate.webhook.attempts",
                unit="{attempt}",
                description="Webhook tries, by outcome.",
            ),
            storage_bytes=meter.create_counter(
                "mutate.storage.io",
                unit="By",
                description="Bytes written to (in) and read from (out) storage.",
            ),
            rpc_server_duration=meter.create_histogram(
                "rpc.server.call.duration",
                unit="s",
                description="Duration of gRPC calls served.",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            ),
        )

    def job_finished(
        self, *, outcome: JobOutcome | str, mode: str, duration: float | None
    ) -> None:
        """Count a terminal job and, when known, how long it took."""
        attributes = {"outcome": outcome, "mode": mode}
        self.jobs.add(1, attributes)
        if duration is not None:
            self.job_duration.record(max(0.0, duration), attributes)

    def storage_transfer(self, *, direction: Direction, size: int) -> None:
        self.storage_bytes.add(size, {"direction": direction})

    def webhook_attempt(self, *, outcome: str) -> None:
        self.webhook_attempts.add(1, {"outcome": outcome})

    def message_waited(self, *, subject: str, seconds: float) -> None:
        self.queue_lag.record(
            max(0.0, seconds), {"messaging.destination.name": subject}
        )


NOOP_METRICS = Metrics.from_meter(otel_metrics.NoOpMeter(METER_NAME))


def global_metrics() -> Metrics:
    """Instruments on the global meter provider (a no-op until one is set).

    For code that cannot be handed `Telemetry.metrics`; the API's proxy
    meter forwards to the provider `setup_telemetry` installs later.
    """
    return Metrics.from_meter(otel_metrics.get_meter(METER_NAME))
