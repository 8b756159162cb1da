"""One job, one trace: the four services as subprocesses exporting OTLP.

The whole platform (`mutate.devstack.harness`) runs with
OTEL_EXPORTER_OTLP_ENDPOINT aimed at an in-test `OtlpReceiver` on 127.0.0.1
and JSON logs in files. The test sends its own `traceparent` to REST, so the
trace id is the test's, never one derived from the job id; every hop is then
checked by parent span id, not only by a shared trace id:

    test -> REST (gateway) -> gateway gRPC -> storage
                                           -> NATS -> worker -> storage
                                                      worker -> NATS -> notifier
                                                                notifier -> webhook
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from mutate.common.telemetry.otlpjson import SpanRecord
from mutate.common.telemetry.receiver import OtlpReceiver
from mutate.devstack import harness

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SERVICES = ("mutate-gateway", "mutate-storage", "mutate-transformer", "mutate-notifier")
CSV = b"name,amount\nalice,1\nbob,2\ncarol,3\n"
DROP_BOB = {
    "id": "drop-bob",
    "deleteRows": {"condition": "EQUALS", "column": "name", "value": "bob"},
}
TRACE_ENV = {
    # Small inputs travel inline in the job request; the worker's storage
    # read (a gRPC hop the trace must show) needs it to be stored.
    "MUTATE_INLINE_INPUT_MAX_BYTES": "0",
    "OTEL_BSP_SCHEDULE_DELAY": "100",
    "OTEL_METRICS_EXPORTER": "otlp",
    "OTEL_METRIC_EXPORT_INTERVAL": "500",
    "MUTATE_LOG_FORMAT": "json",
}


# --- a webhook receiver ---------------------------------------------------------


class WebhookReceiver:
    """Records every POST (headers and JSON body) on 127.0.0.1; answers 204."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], dict[str, Any]]] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._changed:
                    receiver.calls.append((headers, json.loads(body)))
                    receiver._changed.notify_all()
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def wait_for_job(self, job_id: str, *, timeout: float) -> dict[str, str]:
        """The headers of the first webhook about `job_id`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for headers, body in self.calls:
                    if body.get("data", body).get("jobId") == job_id or (
                        body.get("jobId") == job_id
                    ):
                        return headers
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no webhook for job {job_id}")
                self._changed.wait(left)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as otlp:
        yield otlp


@pytest.fixture(scope="module")
def webhooks() -> Iterator[WebhookReceiver]:
    hooks = WebhookReceiver()
    yield hooks
    hooks.stop()


@pytest.fixture(scope="module")
def platform(receiver: OtlpReceiver) -> Iterator[harness.PlatformHarness]:
    # Directly under the temp dir (see harness.start_platform on why).
    home = Path(tempfile.mkdtemp(prefix="mutate-trace-e2e-"))
    started = harness.start_platform(
        home, env={**TRACE_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
    )
    try:
        yield started
    finally:
        started.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def rest(platform: harness.PlatformHarness) -> Iterator[httpx.Client]:
    _, api_key, _ = platform.create_tenant()
    with httpx.Client(
        base_url=platform.rest_url,
        headers={"authorization": f"Bearer {api_key}"},
        timeout=30.0,
    ) as client:
        yield client


def _configuration(rest: httpx.Client, webhook_url: str, **fields: Any) -> str:
    body = {
        "name": f"trace {secrets.token_hex(4)}",
        "conversionType": "CSV_TO_CSV",
        "outputFormat": {"type": "CSV"},
        "webhookUrl": webhook_url,
        **fields,
    }
    response = rest.post("/v1/configurations", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def _create_job(
    rest: httpx.Client, configuration_id: str, data: bytes, file_name: str, mode: str
) -> tuple[dict[str, Any], str, str]:
    """POST /v1/jobs under the test's own trace: (job, trace id, parent id)."""
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    response = rest.post(
        "/v1/jobs",
        json={
            "configurationId": configuration_id,
            "fileContent": base64.b64encode(data).decode(),
            "fileName": file_name,
            "mode": mode,
        },
        headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
    )
    assert response.status_code == 200, response.text
    return response.json(), trace_id, parent_id


# --- reading the trace ----------------------------------------------------------------


class Trace:
    """The exported spans of one trace, with lookups by hop."""

    def __init__(self, spans: Sequence[SpanRecord]) -> None:
        self.spans = list(spans)
        self.by_id = {s.span_id: s for s in self.spans}

    def find(
        self,
        *,
        service: str,
        kind: str,
        name: str = "",
        parent: SpanRecord | None = None,
        under: SpanRecord | None = None,
        where: Callable[[SpanRecord], bool] = lambda s: True,
    ) -> list[SpanRecord]:
        return [
            s
            for s in self.spans
            if s.service == service
            and s.kind == kind
            and name in s.name
            and (parent is None or s.parent_span_id == parent.span_id)
            and (under is None or self.descends(s, under))
            and where(s)
        ]

    def one(self, **criteria: Any) -> SpanRecord:
        found = self.find(**criteria)
        assert found, f"no span {criteria} in:\n{self.describe()}"
        return found[0]

    def descends(self, span: SpanRecord, ancestor: SpanRecord) -> bool:
        while span.parent_span_id:
            if span.parent_span_id == ancestor.span_id:
                return True
            parent = self.by_id.get(span.parent_span_id)
            if parent is None:
                return False
            span = parent
        return False

    def describe(self) -> str:
        return "\n".join(
            f"{s.service:20} {s.kind:9} {s.name:50} {s.span_id} <- {s.parent_span_id}"
            for s in sorted(self.spans, key=lambda s: s.start_ns)
        )


def _wait_for_trace(
    receiver: OtlpReceiver,
    trace_id: str,
    ready: Callable[[Trace], bool],
    *,
    timeout: float = 30.0,
) -> Trace:
    def complete(spans: Sequence[SpanRecord]) -> bool:
        return ready(Trace([s for s in spans if s.trace_id == trace_id]))

    try:
        spans = receiver.wait_for(complete, timeout=timeout)
    except TimeoutError:
        spans = receiver.spans()
        found = Trace([s for s in spans if s.trace_id == trace_id])
        raise AssertionError(
            f"trace {trace_id} incomplete after {timeout}s:\n{found.describe()}"
        ) from None
    return Trace([s for s in spans if s.trace_id == trace_id])


def _has_webhook_post(trace: Trace) -> bool:
    """The webhook's POST and every service's part have been exported.

    A service's spans arrive in its own time (the worker's consumer span
    ends after its ack, possibly after the webhook went out).
    """
    return bool(
        trace.find(service="mutate-notifier", kind="client", name="POST")
        # The try encloses the POST, so it ends (and is exported) after it.
        and trace.find(service="mutate-notifier", kind="internal", name="webhook try")
        and {s.service for s in trace.spans} >= set(SERVICES)
        and trace.find(service="mutate-gateway", kind="server", name="POST /v1")
        and (
            trace.find(service="mutate-transformer", kind="consumer")
            or trace.find(service="mutate-transformer", kind="server")
        )
        and _servers_exported(trace)
    )


def _servers_exported(trace: Trace) -> bool:
    """Each gRPC client span's server span is there too (a server exports
    its spans in its own time, possibly after the caller's arrived)."""
    served = {s.parent_span_id for s in trace.spans if s.kind == "server"}
    return all(
        s.span_id in served
        for s in trace.spans
        if s.kind == "client" and s.name.startswith("/mutate.v1.")
    )


def _traceparent(headers: dict[str, str]) -> tuple[str, str]:
    _, trace_id, span_id, _ = headers["traceparent"].split("-")
    return trace_id, span_id


def _check_rest_hop(trace: Trace, parent_id: str) -> tuple[SpanRecord, SpanRecord]:
    """test -> REST -> gateway gRPC: the REST span and CreateJob's span."""
    rest = trace.one(
        service="mutate-gateway",
        kind="server",
        name="POST /v1/jobs",
        where=lambda s: s.parent_span_id == parent_id,
    )
    create = trace.one(
        service="mutate-gateway",
        kind="server",
        name="JobService/CreateJob",
        parent=rest,
    )
    return rest, create


def _check_grpc_hop(
    trace: Trace, *, caller: SpanRecord, service: str, method: str
) -> SpanRecord:
    """caller's client span -> the callee's server span; the server span."""
    client = trace.one(service=caller.service, kind="client", name=method, under=caller)
    return trace.one(service=service, kind="server", name=method, parent=client)


def _check_nats_hop(
    trace: Trace, *, producer_under: SpanRecord, consumer_service: str, name: str
) -> SpanRecord:
    """A producer span under `producer_under` -> its consumer; the consumer."""
    for producer in trace.find(
        service=producer_under.service,
        kind="producer",
        name=name,
        under=producer_under,
    ):
        consumers = trace.find(
            service=consumer_service, kind="consumer", parent=producer
        )
        if consumers:
            return consumers[0]
    raise AssertionError(
        f"no {consumer_service} consumer of a {name!r} publish under "
        f"{producer_under.name}:\n{trace.describe()}"
    )


def _check_webhook_hop(
    trace: Trace, headers: dict[str, str], *, trace_id: str, intake: SpanRecord
) -> None:
    """notifier intake -> webhook try -> POST, whose context the receiver got."""
    attempt = trace.one(
        service="mutate-notifier", kind="internal", name="webhook try", parent=intake
    )
    post = trace.one(
        service="mutate-notifier", kind="client", name="POST", parent=attempt
    )
    assert _traceparent(headers) == (trace_id, post.span_id)


# --- the tests ----------------------------------------------------------------------


def test_queued_job_is_one_trace_across_four_services(
    platform: harness.PlatformHarness,
    rest: httpx.Client,
    receiver: OtlpReceiver,
    webhooks: WebhookReceiver,
) -> None:
    configuration_id = _configuration(rest, webhooks.url, rules=[DROP_BOB])

    job, trace_id, parent_id = _create_job(
        rest, configuration_id, CSV, "people.csv", "ASYNC"
    )
    headers = webhooks.wait_for_job(job["id"], timeout=60)
    trace = _wait_for_trace(receiver, trace_id, _has_webhook_post)

    assert {s.service for s in trace.spans} >= set(SERVICES)
    _, create = _check_rest_hop(trace, parent_id)
    _check_grpc_hop(trace, caller=create, service="mutate-storage", method="PutObject")
    worker = _check_nats_hop(
        trace,
        producer_under=create,
        consumer_service="mutate-transformer",
        name="publish mutate.jobs",
    )
    assert worker.attributes["mutate.job_id"] == job["id"]
    _check_grpc_hop(trace, caller=worker, service="mutate-storage", method="GetObject")
    _check_grpc_hop(trace, caller=worker, service="mutate-storage", method="PutObject")
    intake = _check_nats_hop(
        trace,
        producer_under=worker,
        consumer_service="mutate-notifier",
        name="publish mutate.events",
    )
    _check_webhook_hop(trace, headers, trace_id=trace_id, intake=intake)
    # The engine's rule spans hang under the worker, with rows in and out.
    engine = trace.one(
        service="mutate-transformer",
        kind="internal",
        name="engine convert",
        under=worker,
    )
    assert engine.attributes["mutate.rows.out"] == 2
    rule = trace.one(
        service="mutate-transformer", kind="internal", name="rule", parent=engine
    )
    assert rule.attributes["mutate.rule.id"] == "drop-bob"
    assert rule.attributes["mutate.rule.type"] == "DELETE_ROWS"
    assert (rule.attributes["mutate.rows.in"], rule.attributes["mutate.rows.out"]) == (
        3,
        2,
    )
    assert engine.start_ns <= rule.start_ns <= rule.end_ns <= engine.end_ns
    assert not [s for s in trace.spans if s.is_error]


def test_sync_job_is_one_trace_across_four_services(
    platform: harness.PlatformHarness,
    rest: httpx.Client,
    receiver: OtlpReceiver,
    webhooks: WebhookReceiver,
) -> None:
    configuration_id = _configuration(rest, webhooks.url)

    job, trace_id, parent_id = _create_job(
        rest, configuration_id, CSV, "people.csv", "SYNC"
    )
    headers = webhooks.wait_for_job(job["id"], timeout=60)
    trace = _wait_for_trace(receiver, trace_id, _has_webhook_post)

    assert job["status"] == "COMPLETED"
    assert {s.service for s in trace.spans} >= set(SERVICES)
    _, create = _check_rest_hop(trace, parent_id)
    transform = _check_grpc_hop(
        trace, caller=create, service="mutate-transformer", method="Transform"
    )
    _check_grpc_hop(
        trace, caller=transform, service="mutate-storage", method="PutObject"
    )
    intake = _check_nats_hop(
        trace,
        producer_under=create,
        consumer_service="mutate-notifier",
        name="publish mutate.events",
    )
    _check_webhook_hop(trace, headers, trace_id=trace_id, intake=intake)


def test_failed_job_trace_shows_the_error(
    platform: harness.PlatformHarness,
    rest: httpx.Client,
    receiver: OtlpReceiver,
    webhooks: WebhookReceiver,
) -> None:
    configuration_id = _configuration(rest, webhooks.url, conversionType="XLSX_TO_CSV")

    job, trace_id, _ = _create_job(
        rest, configuration_id, b"this is not a workbook", "broken.xlsx", "ASYNC"
    )
    webhooks.wait_for_job(job["id"], timeout=60)
    trace = _wait_for_trace(receiver, trace_id, _has_webhook_post)

    worker = trace.one(
        service="mutate-transformer", kind="consumer", name="mutate.jobs"
    )
    engine = trace.one(
        service="mutate-transformer",
        kind="internal",
        name="engine convert",
        parent=worker,
    )
    assert engine.is_error, trace.describe()
    assert worker.is_error
    assert engine.status_message


def test_job_log_lines_carry_its_trace_and_span_ids(
    platform: harness.PlatformHarness,
    rest: httpx.Client,
    receiver: OtlpReceiver,
    webhooks: WebhookReceiver,
) -> None:
    configuration_id = _configuration(rest, webhooks.url)
    job, trace_id, _ = _create_job(rest, configuration_id, CSV, "people.csv", "ASYNC")
    webhooks.wait_for_job(job["id"], timeout=60)
    trace = _wait_for_trace(receiver, trace_id, _has_webhook_post)

    lines = _log_lines(platform, job["id"])

    services = {service for service, _ in lines}
    assert {"transformer", "notifier"} <= services, lines
    for service, record in lines:
        assert record.get("trace_id") == trace_id, (service, record)
        assert record.get("span_id") in trace.by_id, (service, record)


def test_services_export_the_job_metrics(
    platform: harness.PlatformHarness, receiver: OtlpReceiver
) -> None:
    """Runs after the jobs above: their counters reach the receiver."""
    wanted = {
        "mutate.jobs",
        "mutate.job.duration",
        "mutate.queue.lag",
        "mutate.webhook.attempts",
        "mutate.storage.io",
        "rpc.server.call.duration",
    }
    deadline = time.monotonic() + 20
    while True:
        names = _metric_names(receiver)
        if wanted <= names or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert wanted <= names, sorted(wanted - names)


def _metric_names(receiver: OtlpReceiver) -> set[str]:
    names: set[str] = set()
    for request in list(receiver.metric_requests):
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                names.update(m.name for m in scope.metrics)
    return names


def _log_lines(
    platform: harness.PlatformHarness, job_id: str
) -> list[tuple[str, dict[str, Any]]]:
    """(process name, JSON record) of every log line naming `job_id`."""
    found = []
    for process in platform.processes:
        for line in process.log_text().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("job_id") == job_id:
                    name = process.name.split("-")[0]
                    found.append(("transformer" if name == "worker" else name, record))
    return found
