"""`setup_telemetry`: the tracer and meter providers of one service process.

Called once from each service's `main`, before anything creates spans:

    telemetry = setup_telemetry("gateway", env=os.environ)
    server = GrpcServer(..., interceptors=telemetry.server_interceptors())
    ...
    telemetry.shutdown(timeout=settings.shutdown_grace)  # after SIGTERM

With nothing set no SDK provider is installed: spans are the API's no-op
spans (incoming trace context still passes through), nothing is printed and
no connection is opened.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

import grpc
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.version import __version__ as sdk_version

from mutate.common import settings as settings_mod
from mutate.common.telemetry import _grpc, _httpx
from mutate.common.telemetry._config import (
    TelemetrySettings,
    make_sampler,
    parse_pairs,
)
from mutate.common.telemetry._files import JsonLinesSpanExporter
from mutate.common.telemetry._lean import LeanTracerProvider
from mutate.common.telemetry.metrics import METER_NAME, NOOP_METRICS, Metrics

logger = logging.getLogger(__name__)


class TelemetryState(enum.Enum):
    ACTIVE = "active"
    SHUT_DOWN = "shut_down"


class Telemetry:
    """The providers, exporters and instruments `setup_telemetry` built."""

    def __init__(
        self,
        *,
        service_name: str,
        settings: TelemetrySettings,
        resource: Resource,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
        metrics_server: Any = None,
    ) -> None:
        self.service_name = service_name
        self.settings = settings
        self.resource = resource
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.metrics = (
            Metrics.from_meter(meter_provider.get_meter(METER_NAME))
            if meter_provider
            else NOOP_METRICS
        )
        self._metrics_server = metrics_server
        self.metrics_port: int = (
            metrics_server.server_port if metrics_server is not None else 0
        )
        self.state = TelemetryState.ACTIVE
        self._lock = threading.Lock()

    @property
    def tracing_enabled(self) -> bool:
        return self.tracer_provider is not None

    @property
    def metrics_enabled(self) -> bool:
        return self.meter_provider is not None

    def tracer(self, name: str) -> trace.Tracer:
        """A tracer from this process's provider (no-op when tracing is off)."""
        return trace.get_tracer(name, tracer_provider=self.tracer_provider)

    def server_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """For `GrpcServer(interceptors=...)`: server spans, then durations.

        Empty when telemetry is off: even with a no-op tracer, grpc.aio's
        Python interceptor path costs ~150 us a call (test_telemetry_bench),
        far from "next to nothing". A service with tracing off therefore
        does not pass trace context on between its gRPC hops.
        """
        interceptors: list[grpc.aio.ServerInterceptor] = []
        if self.tracing_enabled:
            interceptors.append(_grpc.aio_server_interceptor(self.tracer_provider))
        if self.metrics_enabled:
            interceptors.append(
                _grpc.DurationInterceptor(self.metrics.rpc_server_duration)
            )
        return interceptors

    def client_interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        """Client spans, for `mutate.common.telemetry.insecure_channel(...,
        interceptors=...)` (which applies them without grpc.aio's interceptor
        path) or any grpc.aio channel; empty when tracing is off (see
        `server_interceptors`)."""
        if not self.tracing_enabled:
            return []
        return _grpc.aio_client_interceptors(self.tracer_provider)

    def instrument_httpx_client(self, client: Any) -> None:
        """Trace the client's requests; nothing when tracing is off."""
        if self.tracing_enabled:
            _httpx.instrument_httpx_client(client, tracer_provider=self.tracer_provider)

    def force_flush(self, timeout: float) -> bool:
        """Export what is buffered, within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        ok = True
        if self.tracer_provider is not None:
            ok = self.tracer_provider.force_flush(_millis(deadline)) and ok
        if self.meter_provider is not None:
            ok = self.meter_provider.force_flush(_millis(deadline)) and ok
        return ok

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Flush and close exporters within `timeout` seconds; idempotent.

        Blocking: call it last on SIGTERM, after the server and consumers
        stopped (the spans of their final work are then in the queue).
        """
        with self._lock:
            if self.state is TelemetryState.SHUT_DOWN:
                return True
            self.state = TelemetryState.SHUT_DOWN
        deadline = time.monotonic() + timeout
        ok = True
        if self.tracer_provider is not None:
            ok = self.tracer_provider.force_flush(_millis(deadline)) and ok
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown(timeout_millis=_millis(deadline))
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        if not ok:
            logger.warning("telemetry flush timed out", extra={"timeout": timeout})
        return ok


def _millis(deadline: float) -> int:
    return max(1, int((deadline - time.monotonic()) * 1000))


def setup_telemetry(
    service_name: str,
    *,
    env: Mapping[str, str],
    install_global: bool = True,
) -> Telemetry:
    """Build tracing and metrics for one service from `OTEL_*` and `MUTATE_*`.

    `service_name` is the short name (`gateway`); spans carry
    `service.name=mutate-gateway` unless OTEL_SERVICE_NAME or
    OTEL_RESOURCE_ATTRIBUTES says otherwise. With `install_global` (what
    services want) the providers become OpenTelemetry's global ones, which
    module-level tracers and the messaging helpers use. Raises
    `SettingsError` for malformed variables.
    """
    config = settings_mod.load(TelemetrySettings, env)
    resource = make_resource(service_name, config)
    name = str(resource.attributes.get("service.name", service_name))
    if config.sdk_disabled:
        return Telemetry(
            service_name=name,
            settings=config,
            resource=resource,
            tracer_provider=None,
            meter_provider=None,
        )
    tracer_provider = _tracer_provider(config, resource) if config.tracing_on else None
    meter_provider, server = _meter_provider(config, resource)
    if install_global:
        _install_global(tracer_provider, meter_provider)
    telemetry = Telemetry(
        service_name=name,
        settings=config,
        resource=resource,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        metrics_server=server,
    )
    if tracer_provider or meter_provider:
        logger.info(
            "telemetry on",
            extra={
                "traces": ",".join(config.trace_exporters) or "none",
                "trace_file": config.trace_file or None,
                "metrics": ",".join(config.metric_exporters) or "none",
                "metrics_port": telemetry.metrics_port or None,
                "sampler": config.sampler,
            },
        )
    return telemetry


def make_resource(service_name: str, config: TelemetrySettings) -> Resource:
    """service.name: OTEL_SERVICE_NAME > OTEL_RESOURCE_ATTRIBUTES > ours."""
    attributes: dict[str, Any] = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": sdk_version,
        "service.namespace": "mutate",
        "service.name": f"mutate-{service_name}",
        "service.instance.id": f"{os.uname().nodename}-{os.getpid()}",
    }
    attributes.update(
        parse_pairs(config.resource_attributes, "OTEL_RESOURCE_ATTRIBUTES")
    )
    if config.service_name:
        attributes["service.name"] = config.service_name
    return Resource(attributes)


def _tracer_provider(config: TelemetrySettings, resource: Resource) -> TracerProvider:
    provider = LeanTracerProvider(
        resource=resource, sampler=make_sampler(config.sampler, config.sampler_arg)
    )
    for processor in _span_processors(config):
        provider.add_span_processor(processor)
    return provider


def _span_processors(config: TelemetrySettings) -> list[SpanProcessor]:
    exporters: list[SpanExporter] = []
    if "otlp" in config.trace_exporters:
        # Imported only when used: requests and the SDK's OTLP exporter.
        from mutate.common.telemetry._otlp import OtlpSpanExporter

        exporters.append(
            OtlpSpanExporter(
                endpoint=config.traces_url(),
                headers=parse_pairs(config.otlp_headers, "OTEL_EXPORTER_OTLP_HEADERS"),
                timeout=config.otlp_timeout,
            )
        )
    if "console" in config.trace_exporters:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        exporters.append(ConsoleSpanExporter())
    if config.trace_file:
        exporters.append(JsonLinesSpanExporter(config.trace_file))
    return [
        BatchSpanProcessor(
            exporter,
            max_queue_size=config.bsp_max_queue_size,
            schedule_delay_millis=config.bsp_schedule_delay * 1000,
            max_export_batch_size=min(
                config.bsp_max_export_batch_size, config.bsp_max_queue_size
            ),
        )
        for exporter in exporters
    ]


def _meter_provider(
    config: TelemetrySettings, resource: Resource
) -> tuple[MeterProvider | None, Any]:
    readers: list[MetricReader] = []
    server = None
    if config.metrics_port or "prometheus" in config.metric_exporters:
        reader, server = _prometheus(config)
        readers.append(reader)
    push = [n for n in config.metric_exporters if n != "prometheus"]
    if push:
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        for exporter in _metric_exporters(config, push):
            readers.append(
                PeriodicExportingMetricReader(
                    exporter,
                    export_interval_millis=config.metric_export_interval * 1000,
                )
            )
    if not readers:
        return None, None
    return MeterProvider(resource=resource, metric_readers=readers), server


def _metric_exporters(config: TelemetrySettings, names: list[str]) -> list[Any]:
    exporters: list[Any] = []
    if "otlp" in names:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter,
        )

        exporters.append(
            OTLPMetricExporter(
                endpoint=config.metrics_url(),
                headers=parse_pairs(config.otlp_headers, "OTEL_EXPORTER_OTLP_HEADERS"),
                timeout=config.otlp_timeout,
            )
        )
    if "console" in names:
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        exporters.append(ConsoleMetricExporter())
    return exporters


def _prometheus(config: TelemetrySettings) -> tuple[MetricReader, Any]:
    """A scrape endpoint on its own registry (not prometheus_client's global)."""
    import prometheus_client
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    registry = prometheus_client.CollectorRegistry(auto_describe=True)
    reader = PrometheusMetricReader(registry=registry)
    server = None
    if config.metrics_port:
        server, _thread = prometheus_client.start_http_server(
            config.metrics_port, addr=config.metrics_host, registry=registry
        )
    return reader, server


def _install_global(
    tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None
) -> None:
    # The API allows one global provider a process; a second set is ignored
    # with a warning, so say which one stays.
    if tracer_provider is not None:
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(tracer_provider)
        else:
            logger.warning("a tracer provider is already installed; keeping it")
    if meter_provider is not None:
        if isinstance(
            otel_metrics.get_meter_provider(),
            otel_metrics._internal._ProxyMeterProvider,
        ):
            otel_metrics.set_meter_provider(meter_provider)
        else:
            logger.warning("a meter provider is already installed; keeping it")
