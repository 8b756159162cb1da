"""mutate.v1.NotifierService: the gateway's way into deliveries and secrets.

Every call but the operator's stats names the caller's organization, and
every query is scoped to it: one organization never sees another's
deliveries. Errors are raised as mutate.common.errors; the server's
interceptor turns them into status codes.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from mutate.common import netguard
from mutate.common.errors import InvalidArgument
from mutate.notifier import _payload
from mutate.notifier._dispatcher import Dispatcher
from mutate.notifier._keys import IssuedSecret, SigningKeys
from mutate.notifier._store import (
    DELIVERED,
    PENDING,
    DeliveryRow,
    DeliveryStore,
    ListFilter,
    TryRow,
)
from mutate.v1 import webhook_pb2, webhook_pb2_grpc

logger = logging.getLogger(__name__)

MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50

_STATUS_TO_PROTO = {
    PENDING: webhook_pb2.Delivery.PENDING,
    DELIVERED: webhook_pb2.Delivery.DELIVERED,
    "dead_lettered": webhook_pb2.Delivery.DEAD_LETTERED,
}
_STATUS_FROM_PROTO = {v: k for k, v in _STATUS_TO_PROTO.items()}


class NotifierService(webhook_pb2_grpc.NotifierServiceServicer):
    def __init__(
        self,
        *,
        store: DeliveryStore,
        keys: SigningKeys,
        dispatcher: Dispatcher,
        policy: netguard.NetworkPolicy,
        resolver: netguard.Resolver,
        try_limit: int,
        rotation_overlap: float,
        test_lease: float,
    ) -> None:
        self._store = store
        self._keys = keys
        self._dispatcher = dispatcher
        self._policy = policy
        self._resolver = resolver
        self._try_limit = try_limit
        self._rotation_overlap = rotation_overlap
        self._test_lease = test_lease

    async def CreateSigningSecret(
        self,
        request: webhook_pb2.CreateSigningSecretRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> webhook_pb2.SigningSecret:
        issued = await self._keys.create(_organization(request.organization_id))
        return _secret_proto(issued)

    async def RotateSigningSecret(
        self,
        request: webhook_pb2.RotateSigningSecretRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> webhook_pb2.SigningSecret:
        overlap = self._rotation_overlap
        if request.HasField("overlap"):
            overlap = request.overlap.ToTimedelta().total_seconds()
            if overlap < 0:
                raise InvalidArgument(
                    "overlap must not be negative",
                    field_violations=[("overlap", "negative")],
                )
        issued = await self._keys.rotate(
            _organization(request.organization_id), overlap=overlap
        )
        return _secret_proto(issued)

    async def ListDeliveries(
        self,
        request: webhook_pb2.NotifierListDeliveriesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> webhook_pb2.NotifierListDeliveriesResponse:
        if request.page_size < 0:
            raise InvalidArgument(
                "page_size must not be negative",
                field_violations=[("page_size", "negative")],
            )
        status = ""
        if request.status:
            if request.status not in _STATUS_FROM_PROTO:
                raise InvalidArgument("unknown delivery status")
            status = _STATUS_FROM_PROTO[request.status]
        query = ListFilter(
            organization_id=_organization(request.organization_id),
            job_id=request.job_id,
            status=status,
            since=_time_or_none(request, "since"),
            until=_time_or_none(request, "until"),
            page_size=min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
            page_token=request.page_token,
        )
        rows, token = await self._store.list(query)
        tries = await self._store.tries([r.id for r in rows])
        return webhook_pb2.NotifierListDeliveriesResponse(
            deliveries=[_delivery_proto(r, tries[r.id]) for r in rows],
            next_page_token=token,
        )

    async def GetDelivery(
        self,
        request: webhook_pb2.NotifierGetDeliveryRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> webhook_pb2.Delivery:
        return await self._delivery(
            _organization(request.organization_id), _id(request.id)
        )

    async def RedeliverDelivery(
        self,
        request: webhook_pb2.NotifierRedeliverRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> webhook_pb2.Delivery:
        # The next try signs afresh with the organization's current secret.
        row = await self._store.redeliver(
            _organization(request.organization_id),
            _id(request.id),
            tries=self._try_limit,
        )
        self._dispatcher.wake()
        logger.info("redelivery requested", extra={"delivery_id": row.id})
        return await self._delivery(row.organization_id, row.id)

    async def RecoverDeliveries(
        self,
        request: webhook_pb2.NotifierRecoverRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> webhook_pb2.NotifierRecoverResponse:
        if not request.HasField("since"):
            raise InvalidArgument(
                "since is required", field_violations=[("since", "required")]
            )
        count = await self._store.recover(
            _organization(request.organization_id),
            since=request.since.ToDatetime(tzinfo=dt.UTC),
            tries=self._try_limit,
        )
        self._dispatcher.wake()
        logger.info(
            "dead-lettered deliveries recovered",
            extra={"organization_id": request.organization_id, "count": count},
        )
        return webhook_pb2.NotifierRecoverResponse(redelivered=count)

    async def SendTestWebhook(
        self,
        request: webhook_pb2.NotifierSendTestRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> webhook_pb2.Delivery:
        organization_id = _organization(request.organization_id)
        await netguard.check_url(
            request.url, policy=self._policy, resolver=self._resolver
        )
        new = _payload.test_delivery(organization_id, request.url)
        # Inserted already leased, so the scheduler leaves the first try to
        # us; later tries, if any, follow the usual schedule.
        row = await self._store.insert_locked(
            new, try_limit=self._try_limit, lock_for=self._test_lease
        )
        await self._dispatcher.attempt(row)
        return await self._delivery(organization_id, row.id)

    async def GetWebhookStats(
        self,
        request: webhook_pb2.NotifierStatsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> webhook_pb2.WebhookStats:
        stats = await self._store.stats(request.organization_id)
        out = webhook_pb2.WebhookStats(
            pending=stats.pending,
            dead_lettered=stats.dead_lettered,
            delivered_last_hour=stats.delivered_last_hour,
        )
        if stats.oldest_pending is not None:
            out.oldest_pending_time.FromDatetime(stats.oldest_pending)
        return out

    async def _delivery(
        self, organization_id: str, delivery_id: str
    ) -> webhook_pb2.Delivery:
        row = await self._store.get(organization_id, delivery_id)
        tries = await self._store.tries([row.id])
        return _delivery_proto(row, tries[row.id])


def _organization(organization_id: str) -> str:
    if not organization_id:
        raise InvalidArgument(
            "organization_id is required",
            field_violations=[("organization_id", "required")],
        )
    return organization_id


def _id(delivery_id: str) -> str:
    if not delivery_id:
        raise InvalidArgument("id is required", field_violations=[("id", "required")])
    return delivery_id


def _time_or_none(message: Any, field: str) -> dt.datetime | None:
    if not message.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, field)
    return stamp.ToDatetime(tzinfo=dt.UTC)


def _stamp(when: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


def _secret_proto(issued: IssuedSecret) -> webhook_pb2.SigningSecret:
    out = webhook_pb2.SigningSecret(
        secret=issued.secret,
        create_time=_stamp(issued.row.rotated_at or issued.row.created_at),
    )
    if issued.row.previous_expires_at is not None:
        out.previous_expire_time.CopyFrom(_stamp(issued.row.previous_expires_at))
    return out


def _delivery_proto(row: DeliveryRow, tries: list[TryRow]) -> webhook_pb2.Delivery:
    out = webhook_pb2.Delivery(
        id=row.id,
        job_id=row.job_id,
        job_attempt=row.job_attempt,
        event_type=row.event_type,
        webhook_id=row.webhook_id,
        url=row.url,
        status=_STATUS_TO_PROTO[row.status],
        try_count=row.try_count,
        last_status_code=row.last_status_code or 0,
        last_response_excerpt=row.last_response_excerpt,
        last_error=row.last_error,
        create_time=_stamp(row.created_at),
    )
    for field, value in (
        ("last_try_time", row.last_try_at),
        ("next_try_time", row.next_try_at if row.status == PENDING else None),
        ("delivered_time", row.delivered_at),
    ):
        if value is not None:
            getattr(out, field).CopyFrom(_stamp(value))
    for t in tries:
        out.tries.add(
            number=t.number,
            time=_stamp(t.tried_at),
            status_code=t.status_code or 0,
            error=t.error,
            duration_ms=t.duration_ms,
        )
    return out
