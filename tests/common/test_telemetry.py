"""Telemetry set-up: env handling, exporters, receiver, Prometheus, trace CLI."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import urllib.request
from pathlib import Path

import pytest

from mutate.common import tracecli
from mutate.common.settings import SettingsError, describe
from mutate.common.telemetry import TelemetrySettings, setup_telemetry
from mutate.common.telemetry.otlpjson import read_spans
from mutate.common.telemetry.receiver import OtlpReceiver

FAST = {"OTEL_BSP_SCHEDULE_DELAY": "10"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Records every outgoing socket connection attempt."""
    attempts: list[object] = []
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: object) -> None:
        attempts.append(address)
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


def _spans_in(telemetry_tracer_names: list[str], telemetry) -> None:  # type: ignore[no-untyped-def]
    tracer = telemetry.tracer("test")
    for name in telemetry_tracer_names:
        with tracer.start_as_current_span(name):
            pass


def test_setup_with_nothing_set_is_a_no_op(capfd, no_connections) -> None:
    threads = threading.active_count()
    telemetry = setup_telemetry("gateway", env={}, install_global=False)

    assert not telemetry.tracing_enabled
    assert not telemetry.metrics_enabled
    assert telemetry.metrics_port == 0
    assert telemetry.server_interceptors() == []
    assert telemetry.client_interceptors() == []
    with telemetry.tracer("test").start_as_current_span("x") as span:
        assert not span.is_recording()
    telemetry.metrics.job_finished(outcome="completed", mode="sync", duration=1.0)
    assert telemetry.shutdown(timeout=1)

    assert threading.active_count() == threads
    assert no_connections == []
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_sdk_disabled_wins_over_exporters(tmp_path: Path, no_connections) -> None:
    path = tmp_path / "spans.jsonl"
    telemetry = setup_telemetry(
        "gateway",
        env={
            "OTEL_SDK_DISABLED": "true",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
            "MUTATE_TRACE_FILE": str(path),
            "MUTATE_METRICS_PORT": str(_free_port()),
        },
        install_global=False,
    )
    assert not telemetry.tracing_enabled
    assert not telemetry.metrics_enabled
    _spans_in(["a"], telemetry)
    telemetry.shutdown(1)
    assert not path.exists()
    assert no_connections == []


def test_exporter_none_keeps_trace_ids_and_exports_nothing(no_connections) -> None:
    telemetry = setup_telemetry(
        "gateway", env={"OTEL_TRACES_EXPORTER": "none"}, install_global=False
    )
    assert telemetry.tracing_enabled
    with telemetry.tracer("test").start_as_current_span("x") as span:
        assert span.get_span_context().is_valid
        assert span.is_recording()
    telemetry.shutdown(1)
    assert no_connections == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
        ("OTEL_METRICS_EXPORTER", "statsd"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_RESOURCE_ATTRIBUTES", "no-equals-sign"),
        ("MUTATE_METRICS_PORT", "70000"),
    ],
    ids=lambda v: v,
)
def test_malformed_variables_fail_at_start_up(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        setup_telemetry("gateway", env={name: value}, install_global=False)


def test_settings_are_described_for_docs() -> None:
    names = {info.env for info in describe(TelemetrySettings)}
    assert {"OTEL_SDK_DISABLED", "MUTATE_TRACE_FILE", "MUTATE_METRICS_HOST"} <= names
    doc = (Path(__file__).parents[2] / "docs" / "observability.md").read_text()
    missing = sorted(name for name in names if name not in doc)
    assert missing == []


def test_service_name_precedence() -> None:
    def name(env: dict[str, str]) -> str:
        telemetry = setup_telemetry("notifier", env=env, install_global=False)
        return str(telemetry.resource.attributes["service.name"])

    assert name({}) == "mutate-notifier"
    attrs = "service.name=from-attrs,deployment.environment=dev%20box"
    assert name({"OTEL_RESOURCE_ATTRIBUTES": attrs}) == "from-attrs"
    assert (
        name({"OTEL_RESOURCE_ATTRIBUTES": attrs, "OTEL_SERVICE_NAME": "named"})
        == "named"
    )
    telemetry = setup_telemetry(
        "notifier", env={"OTEL_RESOURCE_ATTRIBUTES": attrs}, install_global=False
    )
    assert telemetry.resource.attributes["deployment.environment"] == "dev box"


def test_trace_file_holds_otlp_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    telemetry = setup_telemetry(
        "storage", env={"MUTATE_TRACE_FILE": str(path), **FAST}, install_global=False
    )
    tracer = telemetry.tracer("test")
    with (
        tracer.start_as_current_span("parent", attributes={"mutate.job_id": "j1"}),
        tracer.start_as_current_span("child") as child,
    ):
        child_id = format(child.get_span_context().span_id, "016x")
    assert telemetry.shutdown(timeout=5)

    first = json.loads(path.read_text().splitlines()[0])
    span = first["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert len(span["traceId"]) == 32 and len(span["spanId"]) == 16
    spans = {s.name: s for s in read_spans(path)}
    assert spans["child"].span_id == child_id
    assert spans["child"].parent_span_id == spans["parent"].span_id
    assert spans["child"].service == "mutate-storage"
    assert spans["parent"].attributes["mutate.job_id"] == "j1"


def test_always_off_sampler_records_nothing(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    telemetry = setup_telemetry(
        "storage",
        env={"MUTATE_TRACE_FILE": str(path), "OTEL_TRACES_SAMPLER": "always_off"},
        install_global=False,
    )
    _spans_in(["a", "b"], telemetry)
    telemetry.shutdown(timeout=5)
    assert read_spans(path) == []


_CHILD = textwrap.dedent(
    """
    import os
    from mutate.common.telemetry import setup_telemetry

    telemetry = setup_telemetry("storage", env=os.environ)
    tracer = telemetry.tracer("child")
    with tracer.start_as_current_span("outer", attributes={"mutate.job_id": "j9"}):
        with tracer.start_as_current_span("inner"):
            pass
        try:
            with tracer.start_as_current_span("broken"):
                raise ValueError("disk on fire")
        except ValueError:
            pass
    telemetry.metrics.storage_transfer(direction="in", size=42)
    telemetry.shutdown(timeout=10)
    """
)


def test_receiver_gets_spans_and_metrics_from_a_subprocess(tmp_path: Path) -> None:
    with OtlpReceiver(path=tmp_path / "received.jsonl") as receiver:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_METRICS_EXPORTER": "otlp",
        }
        done = subprocess.run(
            [sys.executable, "-c", _CHILD],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        spans = receiver.wait_for(lambda s: len(s) >= 3, timeout=10)
        metric_requests = list(receiver.metric_requests)

    by_name = {s.name: s for s in spans}
    assert by_name["inner"].parent_span_id == by_name["outer"].span_id
    assert by_name["inner"].trace_id == by_name["outer"].trace_id
    assert by_name["outer"].service == "mutate-storage"
    assert by_name["broken"].is_error
    assert "disk on fire" in by_name["broken"].status_message
    assert [e for e, _ in by_name["broken"].events] == ["exception"]
    names = {
        metric.name
        for request in metric_requests
        for resource in request.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert "mutate.storage.io" in names
    # The receiver's file reads back the same spans.
    assert {s.span_id for s in read_spans(tmp_path / "received.jsonl")} == {
        s.span_id for s in spans
    }


def test_prometheus_scrape_endpoint() -> None:
    port = _free_port()
    telemetry = setup_telemetry(
        "transformer", env={"MUTATE_METRICS_PORT": str(port)}, install_global=False
    )
    try:
        assert telemetry.metrics_port == port
        assert not telemetry.tracing_enabled
        metrics = telemetry.metrics
        metrics.job_finished(outcome="completed", mode="async", duration=2.0)
        metrics.job_finished(outcome="failed", mode="sync", duration=None)
        metrics.storage_transfer(direction="out", size=1000)
        metrics.webhook_attempt(outcome="delivered")
        metrics.message_waited(subject="mutate.jobs.requests", seconds=0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as reply:
            text = reply.read().decode()
    finally:
        telemetry.shutdown(timeout=2)

    assert _sample(text, "mutate_jobs_total", mode="async", outcome="completed") == 1
    assert _sample(text, "mutate_jobs_total", mode="sync", outcome="failed") == 1
    assert _sample(text, "mutate_job_duration_seconds_sum", outcome="completed") == 2
    assert _sample(text, "mutate_job_duration_seconds_count", outcome="failed") is None
    assert _sample(text, "mutate_storage_io_bytes_total", direction="out") == 1000
    assert _sample(text, "mutate_webhook_attempts_total", outcome="delivered") == 1
    assert _sample(text, "mutate_queue_lag_seconds_sum") == pytest.approx(0.3)
    # Shut down: nothing listens any more.
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the first sample of `name` having all `labels`."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def _trace_file(tmp_path: Path) -> Path:
    path = tmp_path / "spans.jsonl"
    for service, job in (("gateway", "job-1"), ("gateway", "job-2")):
        telemetry = setup_telemetry(
            service, env={"MUTATE_TRACE_FILE": str(path)}, install_global=False
        )
        tracer = telemetry.tracer("test")
        with tracer.start_as_current_span(
            "POST /v1/jobs", attributes={"mutate.job_id": job}
        ):
            with tracer.start_as_current_span("mutate.v1.StorageService/PutObject"):
                pass
            try:
                with tracer.start_as_current_span("rule 1 delete_rows"):
                    raise RuntimeError("bad pattern")
            except RuntimeError:
                pass
        telemetry.shutdown(timeout=5)
    return path


def test_trace_cli_prints_the_span_tree_of_a_job(tmp_path: Path) -> None:
    path = _trace_file(tmp_path)
    out = io.StringIO()

    assert tracecli.main(["show", "job-1", "--file", str(path)], out=out) == 0

    lines = out.getvalue().splitlines()
    assert lines[0].startswith("trace ")
    assert "3 spans" in lines[0] and "errors: 1" in lines[0]
    assert "mutate-gateway" in lines[0]
    assert lines[2].split()[-2:] == ["/v1/jobs", "[internal]"]
    assert "├─ mutate.v1.StorageService/PutObject" in lines[3]
    assert "└─ rule 1 delete_rows" in lines[4]
    assert "✗ ERROR RuntimeError: bad pattern" in lines[4]
    assert lines[3].split()[1].endswith("ms")


def test_trace_cli_lists_and_reports_unknown_jobs(tmp_path: Path, capsys) -> None:
    path = _trace_file(tmp_path)
    out = io.StringIO()
    assert tracecli.main(["list", "--file", str(path)], out=out) == 0
    listed = out.getvalue().splitlines()
    assert len(listed) == 2
    assert "job=job-1" in listed[0] and "job=job-2" in listed[1]

    assert tracecli.main(["show", "nope", "--file", str(path)], out=out) == 1
    assert "no spans of job nope" in capsys.readouterr().err


def test_trace_cli_runs_as_a_module(tmp_path: Path) -> None:
    path = _trace_file(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "mutate.common.tracecli", "show", "job-2"],
        env={**os.environ, "MUTATE_TRACE_FILE": str(path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "rule 1 delete_rows" in done.stdout
