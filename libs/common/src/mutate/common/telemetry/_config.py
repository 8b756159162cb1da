"""What `setup_telemetry` reads: the standard `OTEL_*` variables and ours.

The variables keep their OpenTelemetry names and meanings (durations in ms,
`OTEL_TRACES_SAMPLER` names, `OTEL_RESOURCE_ATTRIBUTES` as `k=v,k=v`), with
one deliberate difference: with nothing set, nothing is exported and no
connection is tried. The SDK's own default would send spans to
localhost:4318; here the OTLP exporter needs an endpoint or an explicit
`OTEL_TRACES_EXPORTER=otlp`.
"""

from __future__ import annotations

import dataclasses
import urllib.parse

from opentelemetry.sdk.trace import sampling

from mutate.common.settings import SettingsError, setting

TRACES_EXPORTERS = frozenset({"otlp", "console", "none"})
METRICS_EXPORTERS = frozenset({"otlp", "console", "prometheus", "none"})
SUPPORTED_PROTOCOL = "http/protobuf"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TelemetrySettings:
    """Tracing and metrics switches of one service process."""

    sdk_disabled: bool = setting(
        "OTEL_SDK_DISABLED",
        False,
        help="true turns all telemetry off (no SDK, no spans, no metrics).",
    )
    service_name: str = setting(
        "OTEL_SERVICE_NAME",
        "",
        help="Service name on spans and metrics; default mutate-<service>.",
    )
    resource_attributes: str = setting(
        "OTEL_RESOURCE_ATTRIBUTES",
        "",
        help="Extra resource attributes, `key=value,key=value` (percent-encoded).",
    )
    traces_exporter: str = setting(
        "OTEL_TRACES_EXPORTER",
        "",
        help="Comma-separated: otlp, console, none. Unset: otlp when an OTLP "
        "endpoint is set, else none. `none` keeps trace ids (for logs) and "
        "exports nothing.",
    )
    metrics_exporter: str = setting(
        "OTEL_METRICS_EXPORTER",
        "",
        help="Comma-separated: otlp, console, prometheus, none. The Prometheus "
        "scrape endpoint is on whenever MUTATE_METRICS_PORT is set.",
    )
    otlp_endpoint: str = setting(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "",
        help="OTLP/HTTP base URL, e.g. http://collector:4318 (/v1/traces and "
        "/v1/metrics are appended).",
    )
    otlp_traces_endpoint: str = setting(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "",
        help="Full OTLP/HTTP URL for spans; overrides the base endpoint.",
    )
    otlp_metrics_endpoint: str = setting(
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "",
        help="Full OTLP/HTTP URL for metrics; overrides the base endpoint.",
    )
    otlp_protocol: str = setting(
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        SUPPORTED_PROTOCOL,
        help="Only http/protobuf is supported.",
    )
    otlp_headers: str = setting(
        "OTEL_EXPORTER_OTLP_HEADERS",
        "",
        help="Headers on every export, `key=value,key=value` (percent-encoded).",
        secret=True,
    )
    otlp_timeout: float = setting(
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        10.0,
        unit="ms",
        help="Timeout of one export request, in ms.",
    )
    sampler: str = setting(
        "OTEL_TRACES_SAMPLER",
        "parentbased_always_on",
        help="always_on, always_off, traceidratio, parentbased_always_on, "
        "parentbased_always_off, parentbased_traceidratio.",
    )
    sampler_arg: str = setting(
        "OTEL_TRACES_SAMPLER_ARG",
        "",
        help="The ratio (0..1) of the traceidratio samplers; default 1.0.",
    )
    bsp_schedule_delay: float = setting(
        "OTEL_BSP_SCHEDULE_DELAY",
        5.0,
        unit="ms",
        help="How long finished spans wait to be batched before export, in ms.",
    )
    bsp_max_queue_size: int = setting(
        "OTEL_BSP_MAX_QUEUE_SIZE",
        2048,
        help="Finished spans held for export; more are dropped.",
    )
    bsp_max_export_batch_size: int = setting(
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        512,
        help="Spans in one export request.",
    )
    metric_export_interval: float = setting(
        "OTEL_METRIC_EXPORT_INTERVAL",
        60.0,
        unit="ms",
        help="Interval between OTLP/console metric exports, in ms.",
    )
    trace_file: str = setting(
        "MUTATE_TRACE_FILE",
        "",
        help="Append finished spans to this file as OTLP/JSON lines, for "
        "`mutate-trace show` (no collector needed).",
    )
    metrics_host: str = setting(
        "MUTATE_METRICS_HOST",
        "127.0.0.1",
        help="Address the Prometheus scrape endpoint binds; 0.0.0.0 in a pod.",
    )
    metrics_port: int = setting(
        "MUTATE_METRICS_PORT",
        0,
        help="Prometheus scrape port; 0 turns the endpoint off.",
    )

    def __post_init__(self) -> None:
        unknown = set(self.trace_exporters) - TRACES_EXPORTERS
        if unknown:
            raise SettingsError(
                f"OTEL_TRACES_EXPORTER: unsupported {', '.join(sorted(unknown))}"
            )
        unknown = set(self.metric_exporters) - METRICS_EXPORTERS
        if unknown:
            raise SettingsError(
                f"OTEL_METRICS_EXPORTER: unsupported {', '.join(sorted(unknown))}"
            )
        if self.otlp_protocol != SUPPORTED_PROTOCOL:
            raise SettingsError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={self.otlp_protocol!r}: only "
                f"{SUPPORTED_PROTOCOL} is supported"
            )
        if not 0 <= self.metrics_port < 65536:
            raise SettingsError("MUTATE_METRICS_PORT must be a port number or 0")
        # Parse once here so a typo fails at start-up, not at first span.
        make_sampler(self.sampler, self.sampler_arg)
        parse_pairs(self.resource_attributes, "OTEL_RESOURCE_ATTRIBUTES")
        parse_pairs(self.otlp_headers, "OTEL_EXPORTER_OTLP_HEADERS")

    @property
    def trace_exporters(self) -> tuple[str, ...]:
        """The span exporters to install: explicit list, or otlp by endpoint."""
        names = _names(self.traces_exporter)
        if names:
            return names
        if self.otlp_endpoint or self.otlp_traces_endpoint:
            return ("otlp",)
        return ()

    @property
    def metric_exporters(self) -> tuple[str, ...]:
        """Push exporters only: OTLP metrics must be asked for by name."""
        return _names(self.metrics_exporter)

    @property
    def tracing_on(self) -> bool:
        """Whether an SDK tracer provider is installed at all."""
        if self.sdk_disabled:
            return False
        return bool(self.trace_file or self.trace_exporters or self.traces_exporter)

    def traces_url(self) -> str:
        if self.otlp_traces_endpoint:
            return self.otlp_traces_endpoint
        return _signal_url(self.otlp_endpoint, "v1/traces")

    def metrics_url(self) -> str:
        if self.otlp_metrics_endpoint:
            return self.otlp_metrics_endpoint
        return _signal_url(self.otlp_endpoint, "v1/metrics")


def _names(raw: str) -> tuple[str, ...]:
    names = tuple(p.strip().lower() for p in raw.split(",") if p.strip())
    return tuple(n for n in names if n != "none") if names else ()


def _signal_url(base: str, path: str) -> str:
    # Only reached when otlp was named explicitly without an endpoint: the
    # spec's default, which the operator then asked for.
    return f"{(base or 'http://localhost:4318').rstrip('/')}/{path}"


def parse_pairs(raw: str, name: str) -> dict[str, str]:
    """`k=v,k=v` with percent-encoded values, as the OTel spec writes them."""
    out: dict[str, str] = {}
    for part in raw.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"{name}: {part.strip()!r} is not key=value")
        out[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(value.strip())
    return out


def make_sampler(name: str, arg: str) -> sampling.Sampler:
    """The sampler an `OTEL_TRACES_SAMPLER` name stands for."""
    ratio = 1.0
    if arg.strip():
        try:
            ratio = float(arg)
        except ValueError:
            raise SettingsError(
                f"OTEL_TRACES_SAMPLER_ARG={arg!r} is not a number"
            ) from None
        if not 0.0 <= ratio <= 1.0:
            raise SettingsError("OTEL_TRACES_SAMPLER_ARG must be within 0..1")
    samplers: dict[str, sampling.Sampler] = {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "traceidratio": sampling.TraceIdRatioBased(ratio),
        "parentbased_always_on": sampling.ParentBased(sampling.ALWAYS_ON),
        "parentbased_always_off": sampling.ParentBased(sampling.ALWAYS_OFF),
        "parentbased_traceidratio": sampling.ParentBased(
            sampling.TraceIdRatioBased(ratio)
        ),
    }
    try:
        return samplers[name.strip().lower()]
    except KeyError:
        raise SettingsError(
            f"OTEL_TRACES_SAMPLER={name!r}: expected one of {', '.join(samplers)}"
        ) from None
