"""The shared gRPC server: health, reflection and the error interceptor."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mutate.common import errors
from mutate.common.grpc_server import (
    STATUS_DETAILS_KEY,
    GrpcServer,
    ServiceRegistration,
)
from mutate.v1 import storage_pb2, storage_pb2_grpc


class _Failing(storage_pb2_grpc.StorageServiceServicer):
    """Raises a different error from each method."""

    async def StatObject(self, request, context):  # noqa: N802
        if request.key == "missing":
            raise errors.NotFound("object missing not found")
        if request.key == "bad":
            raise errors.InvalidArgument(
                "key is not valid", field_violations=[("key", "must not be 'bad'")]
            )
        if request.key == "busy":
            raise errors.ResourceExhausted("slow down", retry_after=2.5)
        raise RuntimeError("secret internal detail")

    async def GetObject(self, request, context):  # noqa: N802
        yield storage_pb2.GetObjectResponse(chunk=b"first")
        raise errors.DataLoss("checksum mismatch")


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = GrpcServer(
        host="127.0.0.1",
        port=0,
        services=[
            ServiceRegistration(
                name="mutate.v1.StorageService",
                add_to_server=storage_pb2_grpc.add_StorageServiceServicer_to_server,
                servicer=_Failing(),
            )
        ],
    )
    port = await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as open_channel:
        yield open_channel
    await server.stop(0)


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> storage_pb2_grpc.StorageServiceStub:
    return storage_pb2_grpc.StorageServiceStub(channel)


def _details(exc: grpc.aio.AioRpcError) -> status_pb2.Status:
    raw = dict(exc.trailing_metadata() or ())[STATUS_DETAILS_KEY]
    return status_pb2.Status.FromString(raw)


async def test_domain_errors_become_status_codes(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.StatObject(storage_pb2.StatObjectRequest(key="missing"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "object missing not found"


async def test_field_violations_travel_as_bad_request(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.StatObject(storage_pb2.StatObjectRequest(key="bad"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = error_details_pb2.BadRequest()
    assert _details(info.value).details[0].Unpack(bad)
    assert bad.field_violations[0].field == "key"


async def test_retry_after_travels_as_retry_info(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.StatObject(storage_pb2.StatObjectRequest(key="busy"))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry = error_details_pb2.RetryInfo()
    assert _details(info.value).details[0].Unpack(retry)
    assert retry.retry_delay.ToMilliseconds() == 2500


async def test_unexpected_errors_hide_their_text(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.StatObject(storage_pb2.StatObjectRequest(key="boom"))
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in info.value.details()


async def test_streaming_errors_after_first_message(stub) -> None:
    call = stub.GetObject(storage_pb2.GetObjectRequest(key="k"))
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for message in call:
            received.append(message.chunk)
    assert received == [b"first"]
    assert info.value.code() == grpc.StatusCode.DATA_LOSS


async def test_health_and_reflection_are_served(channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(
        health_pb2.HealthCheckRequest(service="mutate.v1.StorageService")
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = reflect.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    response = await call.read()
    await call.done_writing()
    names = {s.name for s in response.list_services_response.service}
    assert {"mutate.v1.StorageService", "grpc.health.v1.Health"} <= names
