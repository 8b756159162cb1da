"""Test doubles for the REST transcoder: a real grpc.aio server with fake servicers.

`FakeGateway` stands in for the gateway's own servicers (not for NATS,
PostgreSQL or S3): every public method records what it received (request and
metadata) and answers from a small in-memory store, so a test can check that
an HTTP request became the right gRPC call and that the answer came back as
the right JSON. It runs behind mutate.common's GrpcServer, so errors carry the
same `grpc-status-details-bin` details the real gateway sends.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import httpx
from google.protobuf import empty_pb2, message_factory
from google.protobuf.message import Message

from mutate.common import errors
from mutate.common.grpc_server import GrpcServer, ServiceRegistration
from mutate.gateway.rest import RestServer, RestSettings, public_services, serve_rest
from mutate.v1 import configuration_pb2, job_pb2, public_api_pb2, webhook_pb2

API_KEY = "mk_test_key"


@dataclasses.dataclass
class Call:
    method: str
    request: Any
    metadata: dict[str, str]


class FakeGateway:
    """Test servicers of every public service; see the module docstring."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.configurations: dict[str, configuration_pb2.Configuration] = {}
        self.jobs: dict[str, job_pb2.Job] = {}
        self.uploaded: dict[str, bytes] = {}
        self.upload_chunks: list[int] = []
        # Test hooks: WatchJob states, and a gate a test can hold it on.
        self.watch_states = [job_pb2.Job.PENDING, job_pb2.Job.RUNNING]
        self.watch_gate: asyncio.Event | None = None
        self.watch_cancelled = asyncio.Event()

    # ------------------------------------------------------------ plumbing

    def last(self, method: str) -> Call:
        for call in reversed(self.calls):
            if call.method == method:
                return call
        raise AssertionError(f"{method} was not called; calls: {self.calls}")

    def _record(self, method: str, request: Any, context: Any) -> dict[str, str]:
        metadata = {
            k: v for k, v in context.invocation_metadata() if isinstance(v, str)
        }
        self.calls.append(Call(method, request, metadata))
        key = metadata.get("x-api-key") or metadata.get(
            "authorization", ""
        ).removeprefix("Bearer ")
        if key != API_KEY:
            raise errors.Unauthenticated("missing or unknown API key")
        return metadata

    def registrations(self) -> list[ServiceRegistration]:
        out = []
        for service in public_services():
            handlers = {}
            for method in service.methods:
                handlers[method.name] = self._handler(method)
            generic = grpc.method_handlers_generic_handler(service.full_name, handlers)
            out.append(
                ServiceRegistration(
                    name=service.full_name,
                    add_to_server=lambda _servicer, server, g=generic: (
                        server.add_generic_rpc_handlers((g,))
                    ),
                    servicer=None,
                )
            )
        return out

    def _handler(self, method: Any) -> grpc.RpcMethodHandler:
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        behaviour = getattr(self, f"do_{method.name}", None)

        async def default(request: Any, context: Any) -> Message:
            self._record(method.name, request, context)
            return response_class()

        impl = behaviour or default
        kwargs = {
            "request_deserializer": request_class.FromString,
            "response_serializer": response_class.SerializeToString,
        }
        if method.client_streaming:
            return grpc.stream_unary_rpc_method_handler(impl, **kwargs)
        if method.server_streaming:
            return grpc.unary_stream_rpc_method_handler(impl, **kwargs)
        return grpc.unary_unary_rpc_method_handler(impl, **kwargs)

    # ------------------------------------------------------------ configurations

    async def do_CreateConfiguration(self, request: Any, context: Any) -> Any:
        self._record("CreateConfiguration", request, context)
        configuration = configuration_pb2.Configuration()
        configuration.CopyFrom(request.configuration)
        configuration.id = f"cfg_{len(self.configurations) + 1}"
        configuration.version = 1
        configuration.create_time.FromSeconds(1_700_000_000)
        self.configurations[configuration.id] = configuration
        return configuration

    async def do_GetConfiguration(self, request: Any, context: Any) -> Any:
        self._record("GetConfiguration", request, context)
        found = self.configurations.get(request.id)
        if found is None:
            raise errors.NotFound(
                f"configuration {request.id} not found",
                reason="CONFIGURATION_NOT_FOUND",
            )
        return found

    async def do_ListConfigurations(self, request: Any, context: Any) -> Any:
        self._record("ListConfigurations", request, context)
        if request.page_size > 500:
            raise errors.InvalidArgument(
                "page_size must be at most 500",
                field_violations=[("page_size", "at most 500")],
            )
        return public_api_pb2.ListConfigurationsResponse(
            configurations=list(self.configurations.values())
        )

    async def do_UpdateConfiguration(self, request: Any, context: Any) -> Any:
        self._record("UpdateConfiguration", request, context)
        current = self.configurations.get(request.configuration.id)
        if current is None:
            raise errors.NotFound(f"configuration {request.configuration.id} not found")
        if request.expected_version and request.expected_version != current.version:
            raise errors.Conflict(
                f"expected version {request.expected_version}, "
                f"current is {current.version}"
            )
        try:
            request.update_mask.MergeMessage(
                request.configuration, current, replace_repeated_field=True
            )
        except (ValueError, KeyError) as exc:
            raise errors.InvalidArgument(f"update_mask: {exc}") from exc
        current.version += 1
        return current

    # ------------------------------------------------------------ jobs

    async def do_CreateJob(self, request: Any, context: Any) -> Any:
        self._record("CreateJob", request, context)
        if not request.configuration_id:
            raise errors.InvalidArgument(
                "configuration_id is required",
                field_violations=[("configuration_id", "required")],
            )
        return self._new_job(request, len(request.file_content))

    async def do_UploadJob(self, requests: Any, context: Any) -> Any:
        first = None
        content = bytearray()
        async for part in requests:
            if first is None:
                first = part.request
                self._record("UploadJob", first, context)
            else:
                self.upload_chunks.append(len(part.chunk))
                content += part.chunk
        assert first is not None
        job = self._new_job(first, len(content))
        self.uploaded[job.id] = bytes(content)
        return job

    def _new_job(self, request: Any, size: int) -> job_pb2.Job:
        job = job_pb2.Job(
            id=f"job_{len(self.jobs) + 1}",
            configuration_id=request.configuration_id,
            configuration_version=request.configuration_version or 1,
            status=job_pb2.Job.COMPLETED,
            mode=request.mode,
            input_file_name=request.file_name,
            input_bytes=size,
            output_rows=12,
            webhook_url=request.webhook_url,
            client_reference=request.client_reference,
            attempt=1,
        )
        job.create_time.FromSeconds(1_700_000_000)
        self.jobs[job.id] = job
        return job

    async def do_GetJob(self, request: Any, context: Any) -> Any:
        self._record("GetJob", request, context)
        if request.id not in self.jobs:
            raise errors.NotFound(f"job {request.id} not found")
        return self.jobs[request.id]

    async def do_RetryJob(self, request: Any, context: Any) -> Any:
        self._record("RetryJob", request, context)
        if request.id == "busy":
            raise errors.ResourceExhausted("too many queued jobs", retry_after=2.2)
        if request.id == "down":
            raise errors.Unavailable("queue unavailable", retry_after=0.5)
        raise errors.FailedPrecondition(f"job {request.id} is not failed")

    async def do_WatchJob(self, request: Any, context: Any) -> AsyncIterator[Any]:
        self._record("WatchJob", request, context)
        if request.id not in self.jobs:
            raise errors.NotFound(f"job {request.id} not found")
        job = job_pb2.Job()
        job.CopyFrom(self.jobs[request.id])
        try:
            for state in self.watch_states:
                job.status = state
                yield job
            if self.watch_gate is not None:
                await self.watch_gate.wait()
            if request.id == "job_fail":
                raise errors.Unavailable("event stream lost")
        except asyncio.CancelledError:
            self.watch_cancelled.set()
            raise

    async def do_GetJobDownload(self, request: Any, context: Any) -> Any:
        self._record("GetJobDownload", request, context)
        return public_api_pb2.Download(
            url=f"http://127.0.0.1:1/output/{request.id}", bytes=12
        )

    # ------------------------------------------------------------ others

    async def do_RotateWebhookSecret(self, request: Any, context: Any) -> Any:
        self._record("RotateWebhookSecret", request, context)
        return webhook_pb2.SigningSecret(secret="whsec_test")

    async def do_DeleteJob(self, request: Any, context: Any) -> Any:
        self._record("DeleteJob", request, context)
        return empty_pb2.Empty()


@dataclasses.dataclass
class RestStack:
    gateway: FakeGateway
    grpc_server: GrpcServer
    grpc_port: int
    rest: RestServer
    client: httpx.AsyncClient

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.rest.port}"


StackFactory = Callable[..., Any]


async def start_stack(**settings: Any) -> RestStack:
    """Fake gRPC servicers plus the REST server in front of them."""
    gateway = FakeGateway()
    grpc_server = GrpcServer(host="127.0.0.1", port=0, services=gateway.registrations())
    grpc_port = await grpc_server.start()
    rest = await serve_rest(
        host="127.0.0.1",
        port=0,
        grpc_target=f"127.0.0.1:{grpc_port}",
        settings=RestSettings(**settings),
    )
    client = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{rest.port}",
        headers={"x-api-key": API_KEY},
        timeout=10.0,
    )
    return RestStack(gateway, grpc_server, grpc_port, rest, client)


async def stop_stack(stack: RestStack) -> None:
    await stack.client.aclose()
    await stack.rest.stop(1.0)
    await stack.grpc_server.stop(0.5)


async def _serve_until_stdin_closes() -> None:
    """Run a stack in this process for benchmarks; print its ports as JSON."""
    import json
    import sys

    stack = await start_stack()
    print(json.dumps({"grpc": stack.grpc_port, "rest": stack.rest.port}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await stop_stack(stack)


if __name__ == "__main__":
    asyncio.run(_serve_until_stdin_closes())
