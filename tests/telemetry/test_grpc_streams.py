"""Client spans of streamed gRPC calls, as the services make them.

StorageClient.put_stream sends with `call.write()`; the instrumentation's
own client-streaming interceptor waited for the call's status before handing
the call back, so such a put never finished. `aio_client_interceptors`
replaces it; these tests pin that down on a real (in-process) gRPC server,
both on grpc.aio's interceptor path and through `insecure_channel` (the
services' way: a `TracedChannel`, no interceptor path).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from mutate.common import errors
from mutate.common.storage_client import StorageClient
from mutate.common.telemetry import (
    TracedChannel,
    aio_client_interceptors,
    aio_server_interceptor,
    insecure_channel,
)
from mutate.common.telemetry.testing import capture_spans
from mutate.v1 import storage_pb2, storage_pb2_grpc

pytestmark = pytest.mark.timeout(30)


class _Storage(storage_pb2_grpc.StorageServiceServicer):
    def __init__(self) -> None:
        self.stat_metadata: list[dict[str, str]] = []

    async def StatObject(  # noqa: N802 - gRPC's naming
        self, request: storage_pb2.StatObjectRequest, context: grpc.aio.ServicerContext
    ) -> storage_pb2.ObjectInfo:
        self.stat_metadata.append(dict(context.invocation_metadata() or ()))
        return storage_pb2.ObjectInfo(key=request.key, size=1)

    async def PutObject(  # noqa: N802 - gRPC's naming
        self,
        request_iterator: AsyncIterator[storage_pb2.PutObjectRequest],
        context: grpc.aio.ServicerContext,
    ) -> storage_pb2.ObjectInfo:
        size = 0
        key = ""
        async for request in request_iterator:
            if request.WhichOneof("part") == "header":
                key = request.header.key
            else:
                size += len(request.chunk)
        if key.endswith("refused"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "refused")
        return storage_pb2.ObjectInfo(key=key, size=size)


@pytest.fixture
async def servicer() -> AsyncIterator[_Storage]:
    yield _Storage()


@pytest.fixture(params=["traced-channel", "interceptors"])
async def channel(
    request: pytest.FixtureRequest, servicer: _Storage
) -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(interceptors=[aio_server_interceptor()])
    storage_pb2_grpc.add_StorageServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    address = f"127.0.0.1:{port}"
    channel: grpc.aio.Channel
    if request.param == "traced-channel":
        channel = insecure_channel(address, interceptors=aio_client_interceptors())
        assert isinstance(channel, TracedChannel)
    else:
        channel = grpc.aio.insecure_channel(
            address, interceptors=aio_client_interceptors()
        )
    yield channel
    await channel.close()
    await server.stop(0)


@pytest.fixture
async def storage(channel: grpc.aio.Channel) -> AsyncIterator[StorageClient]:
    client = StorageClient(channel, timeout=5, stream_timeout=5, chunk_bytes=4)
    yield client
    await client.close()


async def test_put_stream_is_traced_and_finishes(storage: StorageClient) -> None:
    with capture_spans() as exporter:
        info = await storage.put_bytes("input/org/job/data.csv", b"0123456789")
        # The client span ends from the call's done callback, a moment later.
        spans = await _finished_spans(exporter, lambda spans: len(spans) >= 2)

    assert info.size == 10
    client = [s for s in spans if s.kind.name == "CLIENT"]
    server = [s for s in spans if s.kind.name == "SERVER"]
    assert [s.name for s in client] == ["/mutate.v1.StorageService/PutObject"]
    assert server[0].parent is not None
    assert server[0].parent.span_id == client[0].context.span_id
    assert client[0].attributes["rpc.grpc.status_code"] == 0


async def test_refused_put_stream_marks_the_client_span(
    storage: StorageClient,
) -> None:
    with capture_spans() as exporter:
        with pytest.raises(errors.InvalidArgument):
            await storage.put_bytes("input/org/job/refused", b"0123456789")
        spans = await _finished_spans(
            exporter, lambda spans: any(s.kind.name == "CLIENT" for s in spans)
        )

    client = [s for s in spans if s.kind.name == "CLIENT"]
    assert client and client[0].status.status_code.name == "ERROR"


async def test_unary_call_is_traced_and_keeps_caller_metadata(
    channel: grpc.aio.Channel, servicer: _Storage
) -> None:
    stub = storage_pb2_grpc.StorageServiceStub(channel)
    with capture_spans() as exporter:
        info = await stub.StatObject(
            storage_pb2.StatObjectRequest(key="k"),
            metadata=(("x-caller", "me"),),
            timeout=5,
        )
        spans = await _finished_spans(exporter, lambda spans: len(spans) >= 2)

    assert info.key == "k"
    client = [s for s in spans if s.kind.name == "CLIENT"]
    server = [s for s in spans if s.kind.name == "SERVER"]
    assert [s.name for s in client] == ["/mutate.v1.StorageService/StatObject"]
    assert server[0].parent is not None
    assert server[0].parent.span_id == client[0].context.span_id
    assert client[0].attributes["rpc.grpc.status_code"] == 0
    (metadata,) = servicer.stat_metadata
    assert metadata["x-caller"] == "me"
    assert metadata["traceparent"].split("-")[2] == format(
        client[0].context.span_id, "016x"
    )


async def _finished_spans(
    exporter: InMemorySpanExporter, enough: Callable[[Sequence[ReadableSpan]], bool]
) -> Sequence[ReadableSpan]:
    """The finished spans once `enough` holds for them (or after ~1 s)."""
    for _ in range(100):
        spans = exporter.get_finished_spans()
        if enough(spans):
            return spans
        await asyncio.sleep(0.01)
    return exporter.get_finished_spans()
