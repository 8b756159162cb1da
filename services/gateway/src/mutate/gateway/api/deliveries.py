"""DeliveryService: webhook deliveries and secrets, forwarded to the notifier.

The notifier owns deliveries and signing secrets; the gateway authenticates
the caller and forwards each call with the caller's organization, so one
organization never sees another's deliveries.
"""

from __future__ import annotations

from typing import Any, cast

import grpc

from mutate.common.errors import InvalidArgument
from mutate.gateway.api._auth import Auth
from mutate.gateway.backends import Notifier
from mutate.gateway.webhook_urls import WebhookUrlChecker
from mutate.v1 import public_api_pb2, public_api_pb2_grpc, webhook_pb2

pb = public_api_pb2
wh = webhook_pb2


class DeliveryForwarder:
    """The notifier client as the servicers use it."""

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier

    async def call(self, method: str, request: Any) -> Any:
        return await self._notifier.call(method, request)


class DeliveryServicer(public_api_pb2_grpc.DeliveryServiceServicer):
    def __init__(
        self,
        *,
        auth: Auth,
        forwarder: DeliveryForwarder,
        webhook_urls: WebhookUrlChecker,
    ) -> None:
        self._auth = auth
        self._forwarder = forwarder
        self._webhook_urls = webhook_urls

    async def ListDeliveries(
        self, request: pb.ListDeliveriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDeliveriesResponse:
        principal = await self._auth.principal(context)
        forwarded = wh.NotifierListDeliveriesRequest(
            organization_id=principal.organization_id,
            status=request.status,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        if request.HasField("since"):
            forwarded.since.CopyFrom(request.since)
        if request.HasField("until"):
            forwarded.until.CopyFrom(request.until)
        reply = await self._forwarder.call("ListDeliveries", forwarded)
        return pb.ListDeliveriesResponse(
            deliveries=reply.deliveries, next_page_token=reply.next_page_token
        )

    async def RedeliverDelivery(
        self, request: pb.RedeliverDeliveryRequest, context: grpc.aio.ServicerContext
    ) -> wh.Delivery:
        principal = await self._auth.principal(context)
        reply = await self._forwarder.call(
            "RedeliverDelivery",
            wh.NotifierRedeliverRequest(
                organization_id=principal.organization_id, id=request.id
            ),
        )
        return cast(wh.Delivery, reply)

    async def RecoverDeliveries(
        self, request: pb.RecoverDeliveriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecoverDeliveriesResponse:
        principal = await self._auth.principal(context)
        if not request.HasField("since"):
            raise InvalidArgument(
                "since is required: redeliver dead-lettered deliveries since when",
                field_violations=[("since", "required")],
            )
        reply = await self._forwarder.call(
            "RecoverDeliveries",
            wh.NotifierRecoverRequest(
                organization_id=principal.organization_id, since=request.since
            ),
        )
        return pb.RecoverDeliveriesResponse(redelivered=reply.redelivered)

    async def SendTestWebhook(
        self, request: pb.SendTestWebhookRequest, context: grpc.aio.ServicerContext
    ) -> wh.Delivery:
        principal = await self._auth.principal(context)
        if not request.url.strip():
            raise InvalidArgument(
                "url is required", field_violations=[("url", "required")]
            )
        url = await self._webhook_urls.check(request.url, field="url")
        reply = await self._forwarder.call(
            "SendTestWebhook",
            wh.NotifierSendTestRequest(
                organization_id=principal.organization_id, url=url
            ),
        )
        return cast(wh.Delivery, reply)

    async def RotateWebhookSecret(
        self, request: pb.RotateWebhookSecretRequest, context: grpc.aio.ServicerContext
    ) -> wh.SigningSecret:
        principal = await self._auth.principal(context)
        forwarded = wh.RotateSigningSecretRequest(
            organization_id=principal.organization_id
        )
        if request.HasField("overlap"):
            forwarded.overlap.CopyFrom(request.overlap)
        reply = await self._forwarder.call("RotateSigningSecret", forwarded)
        return cast(wh.SigningSecret, reply)
