"""Spans across real hops: NATS, gRPC, HTTP and PostgreSQL; logs join them."""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator

import grpc
import httpx
import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from mutate.common import errors, logs, messaging, topology
from mutate.common.grpc_server import GrpcServer, ServiceRegistration
from mutate.common.telemetry import (
    DurationInterceptor,
    Metrics,
    aio_client_interceptors,
    aio_server_interceptor,
    consumer_span,
    instrument_httpx_client,
    message_age,
    producer_span,
)
from mutate.common.telemetry.psycopg import TracedAsyncCursor
from mutate.common.telemetry.testing import capture_spans
from mutate.v1 import events_pb2, storage_pb2, storage_pb2_grpc


@pytest.fixture
def spans() -> Iterator[object]:
    with capture_spans() as exporter:
        yield exporter


def _finished(exporter) -> dict[str, ReadableSpan]:  # type: ignore[no-untyped-def]
    return {span.name: span for span in exporter.get_finished_spans()}


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent else None


# --- NATS -----------------------------------------------------------------


async def test_job_request_consumer_span_is_child_of_producer_span(
    spans, jetstream
) -> None:
    await topology.ensure(jetstream, topology.TopologySettings())
    tracer = trace.get_tracer("test")
    request = events_pb2.JobRequest(job_id="job1", organization_id="org1", attempt=2)

    with tracer.start_as_current_span("create job"):
        ack = await messaging.publish_job_request(jetstream, request)

    sub = await jetstream.pull_subscribe(
        topology.JOBS_SUBJECT, durable=topology.WORKERS_CONSUMER
    )
    (msg,) = await sub.fetch(1, timeout=5)
    with consumer_span(msg, consumer_group=topology.WORKERS_CONSUMER) as span:
        assert logs.current_job_id() == "job1"
        span.set_attribute("checked", True)
    await msg.ack()

    got = _finished(spans)
    parent = got["create job"]
    producer = got[f"publish {topology.JOBS_SUBJECT}"]
    consumer = got[f"process {topology.JOBS_SUBJECT}"]
    assert producer.kind is SpanKind.PRODUCER
    assert consumer.kind is SpanKind.CONSUMER
    assert _parent_id(producer) == parent.context.span_id
    assert _parent_id(consumer) == producer.context.span_id
    assert consumer.context.trace_id == parent.context.trace_id
    assert producer.attributes["messaging.system"] == "nats"
    assert producer.attributes["messaging.destination.name"] == topology.JOBS_SUBJECT
    assert producer.attributes["messaging.operation.name"] == "publish"
    assert producer.attributes["messaging.message.id"] == "job1.2"
    assert producer.attributes["mutate.job_id"] == "job1"
    assert producer.attributes["messaging.nats.stream_sequence"] == ack.seq
    assert consumer.attributes["messaging.operation.type"] == "process"
    assert consumer.attributes["messaging.consumer.group.name"] == "mutate-workers"
    assert consumer.attributes["messaging.nats.delivery_count"] == 1
    assert consumer.attributes["mutate.job_id"] == "job1"
    age = message_age(msg)
    assert age is not None and 0 <= age < 30


async def test_event_publish_is_named_by_template_and_errors_recorded(
    spans, jetstream, nats_client
) -> None:
    await topology.ensure(jetstream, topology.TopologySettings())
    event = events_pb2.JobEvent(
        job_id="job2",
        organization_id="org1",
        attempt=1,
        type=events_pb2.JobEvent.FAILED,
    )
    await messaging.publish_event(jetstream, event)
    subject = topology.event_subject("org1", "job2", "failed")
    sub = await jetstream.subscribe(subject, ordered_consumer=True)
    msg = await sub.next_msg(timeout=5)
    with pytest.raises(RuntimeError), consumer_span(msg):
        raise RuntimeError("cannot deliver")
    await sub.unsubscribe()

    template = messaging.EVENT_SUBJECT_TEMPLATE
    got = _finished(spans)
    producer = got[f"publish {template}"]
    consumer = got[f"process {subject}"]
    assert producer.attributes["messaging.destination.name"] == subject
    assert producer.attributes["mutate.event_type"] == "failed"
    assert _parent_id(consumer) == producer.context.span_id
    assert consumer.status.status_code is StatusCode.ERROR
    assert consumer.events[0].name == "exception"


async def test_producer_span_injects_into_core_nats_headers(spans, nats_client) -> None:
    sub = await nats_client.subscribe("telemetry.test")
    headers: dict[str, str] = {}
    with producer_span("telemetry.test", headers, job_id="j3") as span:
        await nats_client.publish("telemetry.test", b"x", headers=headers)
    msg = await sub.next_msg(timeout=5)
    with consumer_span(msg) as child:
        pass
    producer_id = format(span.get_span_context().span_id, "016x")
    assert msg.headers["traceparent"].split("-")[2] == producer_id
    assert child.parent is not None
    assert child.parent.span_id == span.get_span_context().span_id
    assert "messaging.nats.stream" not in child.attributes


# --- gRPC -----------------------------------------------------------------


class _Storage(storage_pb2_grpc.StorageServiceServicer):
    async def StatObject(self, request, context):  # noqa: N802
        if request.key == "missing":
            raise errors.NotFound("no such object")
        if request.key == "crash":
            raise RuntimeError("secret internal detail")
        with trace.get_tracer("test").start_as_current_span("inside handler"):
            return storage_pb2.ObjectInfo(size=7)

    async def GetObject(self, request, context):  # noqa: N802
        yield storage_pb2.GetObjectResponse(chunk=b"first")
        raise errors.DataLoss("checksum mismatch")


@pytest.fixture
def metric_reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
async def stub(
    spans, metric_reader: InMemoryMetricReader
) -> AsyncIterator[storage_pb2_grpc.StorageServiceStub]:
    meter = MeterProvider(metric_readers=[metric_reader]).get_meter("mutate")
    durations = Metrics.from_meter(meter).rpc_server_duration
    server = GrpcServer(
        host="127.0.0.1",
        port=0,
        services=[
            ServiceRegistration(
                name="mutate.v1.StorageService",
                add_to_server=storage_pb2_grpc.add_StorageServiceServicer_to_server,
                servicer=_Storage(),
            )
        ],
        interceptors=[aio_server_interceptor(), DurationInterceptor(durations)],
    )
    port = await server.start()
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", interceptors=aio_client_interceptors()
    )
    yield storage_pb2_grpc.StorageServiceStub(channel)
    await channel.close()
    await server.stop(0)


_METHOD = "/mutate.v1.StorageService/StatObject"


async def test_grpc_server_span_is_child_of_client_span(spans, stub) -> None:
    with trace.get_tracer("test").start_as_current_span("caller") as caller:
        reply = await stub.StatObject(storage_pb2.StatObjectRequest(key="k"))
    assert reply.size == 7

    client, server = await _client_server(spans, _METHOD)
    inside = _finished(spans)["inside handler"]
    assert _parent_id(client) == caller.get_span_context().span_id
    assert _parent_id(server) == client.context.span_id
    assert _parent_id(inside) == server.context.span_id
    assert server.context.trace_id == caller.get_span_context().trace_id
    assert server.attributes["rpc.method"] == "StatObject"
    assert server.status.status_code is not StatusCode.ERROR


async def _client_server(exporter, name: str) -> tuple[ReadableSpan, ReadableSpan]:  # type: ignore[no-untyped-def]
    # The server span may end a moment after the client has its answer.
    for _ in range(200):
        found = {s.kind: s for s in exporter.get_finished_spans() if s.name == name}
        if SpanKind.CLIENT in found and SpanKind.SERVER in found:
            return found[SpanKind.CLIENT], found[SpanKind.SERVER]
        await asyncio.sleep(0.01)
    raise AssertionError(f"no client and server span of {name}")


async def test_grpc_unhandled_error_marks_both_spans(spans, stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.StatObject(storage_pb2.StatObjectRequest(key="crash"))
    assert info.value.code() is grpc.StatusCode.INTERNAL

    client, server = await _client_server(spans, _METHOD)
    assert _parent_id(server) == client.context.span_id
    assert server.status.status_code is StatusCode.ERROR
    assert client.status.status_code is StatusCode.ERROR
    recorded = [e for e in server.events if e.name == "exception"]
    assert recorded[0].attributes["exception.type"] == "RuntimeError"


async def test_grpc_domain_error_is_recorded_on_server_span(spans, stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.StatObject(storage_pb2.StatObjectRequest(key="missing"))
    client, server = await _client_server(spans, _METHOD)
    # Semconv: NOT_FOUND is the caller's error, not the server's.
    assert server.status.status_code is StatusCode.UNSET
    assert server.attributes["rpc.grpc.status_code"] == 5
    assert client.status.status_code is StatusCode.ERROR
    assert any(e.name == "exception" for e in server.events)


async def test_grpc_stream_error_and_durations(
    spans, stub, metric_reader: InMemoryMetricReader
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.GetObject(storage_pb2.GetObjectRequest(key="k")):
            pass
    assert info.value.code() is grpc.StatusCode.DATA_LOSS
    await stub.StatObject(storage_pb2.StatObjectRequest(key="k"))

    client, server = await _client_server(spans, "/mutate.v1.StorageService/GetObject")
    assert server.status.status_code is StatusCode.ERROR
    assert _parent_id(server) == client.context.span_id

    points = {
        (p.attributes["rpc.method"], p.attributes["rpc.grpc.status_code"]): p
        for metric in _metrics(metric_reader, "rpc.server.call.duration")
        for p in metric.data.data_points
    }
    assert points[("GetObject", grpc.StatusCode.DATA_LOSS.value[0])].count == 1
    assert points[("StatObject", 0)].count == 1
    assert points[("StatObject", 0)].sum > 0


def _metrics(reader: InMemoryMetricReader, name: str) -> list[object]:
    data = reader.get_metrics_data()
    return [
        metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
    ]


# --- HTTP -----------------------------------------------------------------


@pytest.fixture
def webhook_receiver() -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(dict(self.headers))
            status = 500 if self.path == "/fail" else 204
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


async def test_httpx_client_span_propagates_to_the_receiver(
    spans, webhook_receiver
) -> None:
    url, seen = webhook_receiver
    async with httpx.AsyncClient(trust_env=False) as client:
        instrument_httpx_client(client)
        instrument_httpx_client(client)  # idempotent
        with trace.get_tracer("test").start_as_current_span("webhook try") as outer:
            await client.post(f"{url}/ok", content=b"{}")
            await client.post(f"{url}/fail", content=b"{}")

    posts = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert len(posts) == 2
    for span, headers in zip(posts, seen, strict=True):
        assert _parent_id(span) == outer.get_span_context().span_id
        traceparent = headers.get("traceparent") or headers["Traceparent"]
        assert traceparent.split("-")[2] == format(span.context.span_id, "016x")
    assert posts[0].status.status_code is not StatusCode.ERROR
    assert posts[1].status.status_code is StatusCode.ERROR


# --- PostgreSQL -----------------------------------------------------------


async def test_psycopg_statements_are_client_spans(spans, database_url) -> None:
    async with await psycopg.AsyncConnection.connect(
        database_url, autocommit=True, cursor_factory=TracedAsyncCursor
    ) as conn:
        with trace.get_tracer("test").start_as_current_span("handler") as outer:
            await conn.execute("CREATE TABLE t (n int)")
            async with conn.cursor() as cur:
                await cur.executemany("INSERT INTO t VALUES (%s)", [(1,), (2,)])
                await cur.execute("select sum(n) from t where n > %s", (0,))
                assert await cur.fetchone() == (3,)
            with pytest.raises(psycopg.errors.UndefinedTable):
                await conn.execute("SELECT * FROM missing")
        dbname = conn.info.dbname

    db = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert [s.name for s in db] == ["CREATE", "INSERT", "SELECT", "SELECT"]
    assert all(_parent_id(s) == outer.get_span_context().span_id for s in db)
    select = db[2]
    assert select.attributes["db.system"] == "postgresql"
    assert select.attributes["db.statement"] == "select sum(n) from t where n > %s"
    assert select.attributes["db.namespace"] == dbname
    assert db[3].status.status_code is StatusCode.ERROR


# --- logs -----------------------------------------------------------------


def test_log_lines_carry_the_current_trace_and_job(spans, capsys) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logs.configure("gateway", level="INFO", fmt="json")
        tracer = trace.get_tracer("test")
        with logs.job_context("job-7"), tracer.start_as_current_span("work") as span:
            logging.getLogger("mutate.test").info("converted", extra={"rows": 3})
        logging.getLogger("mutate.test").info("outside")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])

    inside, outside = (
        json.loads(line) for line in capsys.readouterr().err.splitlines()
    )
    context = span.get_span_context()
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert inside["job_id"] == "job-7"
    assert inside["rows"] == 3
    assert "trace_id" not in outside and "job_id" not in outside
