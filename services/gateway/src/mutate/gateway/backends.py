"""Clients of the services the gateway drives: transformer and notifier.

(Storage is `mutate.common.storage_client.StorageClient`, shared by every
service.) Each is a thin wrapper over the generated stub with a deadline on
every call; `_translated` is the one place where their gRPC errors become
domain errors (an unreachable dependency becomes `Unavailable` naming it).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any, cast

import grpc

from mutate.common.errors import from_rpc_error
from mutate.common.grpc_server import DEFAULT_MAX_MESSAGE_BYTES
from mutate.common.telemetry import insecure_channel
from mutate.v1 import (
    configuration_pb2,
    transformer_pb2,
    transformer_pb2_grpc,
    webhook_pb2,
    webhook_pb2_grpc,
)

logger = logging.getLogger(__name__)

_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", DEFAULT_MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
]


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc, what=what) from exc


def channel(
    address: str, *, interceptors: Sequence[grpc.aio.ClientInterceptor] = ()
) -> grpc.aio.Channel:
    """A channel to another service; `interceptors` add client spans."""
    return insecure_channel(
        address, options=_CHANNEL_OPTIONS, interceptors=list(interceptors) or None
    )


class Transformer:
    """The transformer's gRPC API: Transform, ValidateConfiguration, Preview."""

    def __init__(
        self,
        address: str,
        *,
        timeout: float,
        transform_timeout: float,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        self._channel = channel(address, interceptors=interceptors)
        self._stub = transformer_pb2_grpc.TransformerServiceStub(self._channel)
        self._timeout = timeout
        self._transform_timeout = transform_timeout

    async def close(self) -> None:
        await self._channel.close()

    async def transform(
        self, request: transformer_pb2.TransformRequest
    ) -> transformer_pb2.TransformResponse:
        with _translated("transformer"):
            reply = await self._stub.Transform(request, timeout=self._transform_timeout)
        return cast(transformer_pb2.TransformResponse, reply)

    async def validate(
        self, configuration: configuration_pb2.Configuration
    ) -> list[configuration_pb2.ConfigurationProblem]:
        with _translated("transformer"):
            reply = await self._stub.ValidateConfiguration(
                transformer_pb2.ValidateConfigurationRequest(
                    configuration=configuration
                ),
                timeout=self._timeout,
            )
        return list(reply.problems)

    async def preview(
        self, request: transformer_pb2.PreviewRequest
    ) -> transformer_pb2.PreviewResponse:
        with _translated("transformer"):
            reply = await self._stub.Preview(request, timeout=self._transform_timeout)
        return cast(transformer_pb2.PreviewResponse, reply)


class Notifier:
    """The notifier's internal API; every call names the organization."""

    def __init__(
        self,
        address: str,
        *,
        timeout: float,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        self._channel = channel(address, interceptors=interceptors)
        self._stub = webhook_pb2_grpc.NotifierServiceStub(self._channel)
        self._timeout = timeout

    async def close(self) -> None:
        await self._channel.close()

    async def call(self, method: str, request: Any) -> Any:
        """Forward one call (`ListDeliveries`, `RotateSigningSecret`, …)."""
        with _translated("notifier"):
            return await getattr(self._stub, method)(request, timeout=self._timeout)

    async def create_signing_secret(
        self, organization_id: str
    ) -> webhook_pb2.SigningSecret:
        reply = await self.call(
            "CreateSigningSecret",
            webhook_pb2.CreateSigningSecretRequest(organization_id=organization_id),
        )
        return cast(webhook_pb2.SigningSecret, reply)
