"""QueueService: queue figures, dead-lettered jobs and their redrive.

An organization's keys see their own jobs (figures derived from the job
rows); keys with the operator scope see the whole queue (JetStream's own
figures of the shared worker consumer, and every organization's jobs).
"""

from __future__ import annotations

import datetime as dt
import logging

import grpc
import nats.errors
from nats.js import JetStreamContext

from mutate.common import topology
from mutate.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    MutateError,
    NotFound,
    Unavailable,
)
from mutate.gateway import convert
from mutate.gateway.api._auth import Auth
from mutate.gateway.api.deliveries import DeliveryForwarder
from mutate.gateway.job_store import JobFilter, JobStore
from mutate.gateway.jobs import JobManager
from mutate.gateway.pagination import MAX_PAGE_SIZE
from mutate.v1 import public_api_pb2, public_api_pb2_grpc, webhook_pb2

logger = logging.getLogger(__name__)
pb = public_api_pb2


class QueueServicer(public_api_pb2_grpc.QueueServiceServicer):
    def __init__(
        self,
        *,
        auth: Auth,
        store: JobStore,
        manager: JobManager,
        js: JetStreamContext,
        deliveries: DeliveryForwarder,
    ) -> None:
        self._auth = auth
        self._store = store
        self._manager = manager
        self._js = js
        self._deliveries = deliveries

    async def GetQueueStats(
        self, request: pb.GetQueueStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.QueueStats:
        principal = await self._auth.principal(context)
        scope = None if principal.is_operator else principal.organization_id
        counts = await self._store.status_counts(scope)
        stats = pb.QueueStats(
            jobs_by_status={s: counts.get(s, 0) for s in convert.STATUS_VALUES},
            dead_lettered=counts.get("dead_lettered", 0),
            all_organizations=scope is None,
        )
        if scope is None:
            try:
                info = await self._js.consumer_info(
                    topology.JOBS_STREAM, topology.WORKERS_CONSUMER
                )
            except (TimeoutError, nats.errors.Error) as exc:
                raise Unavailable("cannot read the queue's figures from NATS") from exc
            stats.messages_waiting = info.num_pending or 0
            stats.messages_in_flight = info.num_ack_pending or 0
            stats.messages_redelivered = info.num_redelivered or 0
        else:
            # TODO: per-organization redelivery counts need the workers to
            # report them; JetStream only counts the whole consumer.
            stats.messages_waiting = counts.get("pending", 0)
            stats.messages_in_flight = counts.get("running", 0)
        oldest = await self._store.oldest_pending(scope)
        if oldest is not None:
            age = max(dt.datetime.now(dt.UTC) - oldest, dt.timedelta(0))
            stats.oldest_waiting_age.FromTimedelta(age)
        try:
            webhooks = await self._deliveries.call(
                "GetWebhookStats",
                webhook_pb2.NotifierStatsRequest(organization_id=scope or ""),
            )
            stats.webhooks.CopyFrom(webhooks)
        except MutateError as exc:
            # Queue figures are still worth answering without webhook ones.
            logger.info("webhook figures unavailable", extra={"error": exc.message})
        return stats

    async def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListJobsResponse:
        principal = await self._auth.principal(context)
        scope = None if principal.is_operator else principal.organization_id
        rows, token = await self._store.list_jobs(
            scope,
            JobFilter(status="dead_lettered"),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListJobsResponse(
            jobs=[convert.job(r) for r in rows], next_page_token=token
        )

    async def RedriveDeadLetters(
        self, request: pb.RedriveDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> pb.RedriveDeadLettersResponse:
        principal = await self._auth.principal(context)
        scope = None if principal.is_operator else principal.organization_id
        if len(request.job_ids) > MAX_PAGE_SIZE:
            raise InvalidArgument(
                f"at most {MAX_PAGE_SIZE} job ids a call",
                field_violations=[("job_ids", "too many")],
            )
        if request.job_ids:
            targets = []
            for job_id in dict.fromkeys(request.job_ids):
                row = await self._store.find(job_id, scope)
                if row is None:
                    raise NotFound(f"job {job_id} not found", reason="JOB_NOT_FOUND")
                if row["status"] != "dead_lettered":
                    raise FailedPrecondition(
                        f"job {job_id} is {row['status']}, not dead-lettered",
                        reason="JOB_NOT_DEAD_LETTERED",
                    )
                targets.append(row)
        else:
            targets = await self._store.dead_lettered_ids(scope, limit=MAX_PAGE_SIZE)
        jobs = [
            await self._manager.retry(
                principal, row["id"], organization_id=row["organization_id"]
            )
            for row in targets
        ]
        return pb.RedriveDeadLettersResponse(jobs=jobs)
