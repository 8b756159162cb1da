"""The gRPC service: Transform, ValidateConfiguration, Preview, limits."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mutate.common import keys
from mutate.common.grpc_server import GrpcServer
from mutate.common.storage_client import StorageClient
from mutate.devstack import _proc
from mutate.devstack import stack as stk
from mutate.transformer.app import _services
from mutate.transformer.engine import Limits
from mutate.transformer.pool import EnginePool
from mutate.transformer.settings import TransformerSettings
from mutate.v1 import configuration_pb2, transformer_pb2, transformer_pb2_grpc

from .conftest import StartWorker, Upload
from .helpers import CORRUPT_XLSX, CSV_SMALL, ORG, csv_configuration, new_job_id

SYNC_MAX = 64 * 1024

Stub = transformer_pb2_grpc.TransformerServiceStub


@contextlib.asynccontextmanager
async def _server(
    platform: stk.StackInfo, **settings: Any
) -> AsyncIterator[tuple[Stub, grpc.aio.Channel]]:
    values = {
        "grpc_port": _proc.free_port(),
        "sync_max_bytes": SYNC_MAX,
        "engine_processes": 1,
        "storage_address": platform.address("storage"),
        **settings,
    }
    config = TransformerSettings(**values)
    pool = EnginePool(
        processes=1,
        limits=Limits(),
        kill_grace=0.3,
        test_delay=config.test_engine_delay,
    )
    await pool.start()
    storage = StorageClient(config.storage_address, timeout=5.0)
    server = GrpcServer(
        host="127.0.0.1",
        port=config.grpc_port,
        services=_services(config, pool, storage),
    )
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{config.grpc_port}")
    try:
        yield Stub(channel), channel
    finally:
        await channel.close()
        await server.stop(0)
        await storage.close()
        await pool.close()


@pytest_asyncio.fixture
async def stub(platform: stk.StackInfo) -> AsyncIterator[Stub]:
    async with _server(platform) as (client, _):
        yield client


def _request(job_id: str, **fields: Any) -> transformer_pb2.TransformRequest:
    return transformer_pb2.TransformRequest(
        job_id=job_id,
        organization_id=ORG,
        attempt=1,
        configuration=csv_configuration(),
        input_file_name="data.csv",
        output_key=keys.output_key(ORG, job_id, "data.csv"),
        **fields,
    )


async def test_transform_inline_bytes_stores_the_output(
    stub: Stub, storage: StorageClient
) -> None:
    job_id = new_job_id()
    response = await stub.Transform(_request(job_id, input_data=CSV_SMALL))

    assert not response.HasField("error")
    assert response.output.key == keys.output_key(ORG, job_id, "data.csv")
    assert response.output.file_name == "data.csv"
    assert response.output.rows == 3
    assert response.output.bytes == len(CSV_SMALL)
    assert response.input_bytes == len(CSV_SMALL)
    assert response.engine_ms > 0
    assert await storage.get_bytes(response.output.key) == CSV_SMALL


async def test_transform_reads_the_input_from_storage(
    stub: Stub, storage: StorageClient, upload: Upload
) -> None:
    job_id = new_job_id()
    key = await upload(job_id, CSV_SMALL)

    response = await stub.Transform(_request(job_id, input_key=key))

    assert response.output.rows == 3
    assert await storage.get_bytes(response.output.key) == CSV_SMALL


async def test_transform_derives_the_output_key_from_the_job(stub: Stub) -> None:
    job_id = new_job_id()
    request = _request(job_id, input_data=CSV_SMALL)
    request.ClearField("output_key")
    request.input_file_name = "report.txt"

    response = await stub.Transform(request)

    assert response.output.key == keys.output_key(ORG, job_id, "report.csv")


async def test_transform_refuses_input_over_the_sync_limit(stub: Stub) -> None:
    big = b"a,b\n" + b"1,2\n" * (SYNC_MAX // 4 + 1)

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Transform(_request(new_job_id(), input_data=big))

    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "MUTATE_SYNC_MAX_BYTES" in (info.value.details() or "")


async def test_transform_refuses_a_stored_input_over_the_sync_limit(
    stub: Stub, upload: Upload
) -> None:
    job_id = new_job_id()
    key = await upload(job_id, b"x" * (SYNC_MAX + 1))

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Transform(_request(job_id, input_key=key))

    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_transform_of_a_bad_file_answers_with_an_error(stub: Stub) -> None:
    request = _request(new_job_id(), input_data=CORRUPT_XLSX)
    request.input_file_name = "book.xlsx"
    request.configuration.conversion_type = configuration_pb2.XLSX_TO_CSV

    response = await stub.Transform(request)

    assert response.HasField("error")
    assert response.error.code
    assert "book.xlsx" in response.error.message
    assert not response.HasField("output")


async def test_transform_needs_a_configuration_and_an_input(stub: Stub) -> None:
    request = _request(new_job_id(), input_data=CSV_SMALL)
    request.ClearField("configuration")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Transform(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Transform(_request(new_job_id()))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_transform_with_storage_down_is_unavailable(
    platform: stk.StackInfo,
) -> None:
    closed = f"127.0.0.1:{_proc.free_port()}"
    async with _server(platform, storage_address=closed) as (client, _):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.Transform(_request(new_job_id(), input_data=CSV_SMALL))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_transform_honours_the_deadline(platform: stk.StackInfo) -> None:
    async with _server(platform, test_engine_delay=5.0) as (client, _):
        clock = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.Transform(
                _request(new_job_id(), input_data=CSV_SMALL), timeout=0.5
            )
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - clock < 2.0
        # The engine process was told to stop: it is free again long before
        # the 5 s the abandoned conversion would have taken.
        clock = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.Transform(
                _request(new_job_id(), input_data=CSV_SMALL), timeout=0.5
            )
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await client.ValidateConfiguration(
            transformer_pb2.ValidateConfigurationRequest(
                configuration=csv_configuration()
            ),
            timeout=2.0,
        )
        assert time.monotonic() - clock < 3.0


async def test_validate_configuration_lists_problems(stub: Stub) -> None:
    good = await stub.ValidateConfiguration(
        transformer_pb2.ValidateConfigurationRequest(configuration=csv_configuration())
    )
    assert list(good.problems) == []

    bad = csv_configuration()
    bad.read_options.csv_delimiter = ";;"
    response = await stub.ValidateConfiguration(
        transformer_pb2.ValidateConfigurationRequest(configuration=bad)
    )
    assert [p.field for p in response.problems] == ["readOptions.csvDelimiter"]


async def test_preview_shows_rows_before_and_after(stub: Stub) -> None:
    response = await stub.Preview(
        transformer_pb2.PreviewRequest(
            configuration=csv_configuration(),
            input_data=CSV_SMALL,
            input_file_name="data.csv",
            max_rows=2,
        )
    )

    assert not response.HasField("error")
    assert list(response.after.header) == ["name", "amount"]
    assert len(response.after.rows) == 2
    assert response.after.total_rows == 3


async def test_preview_refuses_too_many_rows_and_big_inputs(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Preview(
            transformer_pb2.PreviewRequest(
                configuration=csv_configuration(), input_data=CSV_SMALL, max_rows=5000
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Preview(
            transformer_pb2.PreviewRequest(
                configuration=csv_configuration(), input_data=b"x" * (SYNC_MAX + 1)
            )
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.slow
async def test_serve_with_worker_runs_both_roles_in_one_process(
    js: Any,
    start_worker: StartWorker,
    upload: Upload,
    events: Any,
    storage: StorageClient,
) -> None:
    from .helpers import job_request, publish_jobs

    process = start_worker("both", args=("serve", "--with-worker"))
    assert process.health_address is not None
    channel = grpc.aio.insecure_channel(process.health_address)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(
            health_pb2.HealthCheckRequest(service="mutate.v1.TransformerService")
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        sync = await Stub(channel).Transform(
            _request(new_job_id(), input_data=CSV_SMALL)
        )
        assert sync.output.rows == 3
    finally:
        await channel.close()

    job_id = new_job_id()
    await publish_jobs(
        js, [job_request(job_id, input_key=await upload(job_id, CSV_SMALL))]
    )
    await events.wait_terminal(job_id, timeout=20)
    assert events.types(job_id) == ["started", "completed"]
