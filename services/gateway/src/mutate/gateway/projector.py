"""The job-event projector: a durable consumer that keeps job rows current.

It pulls from the shared durable consumer (topology.PROJECTOR_CONSUMER), so
several gateway replicas split the work, applies each fetched batch through
`projection.apply_events` (ordered by attempt and event; stale or repeated
events change nothing) in one round trip and one commit, and acks only after
that commit. A database outage naks with a delay; the events come back.

Each event still gets its consumer span; in a batch of several it covers the
event's ack, not the statements the batch shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from typing import Any

import nats.errors
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from mutate.common import messaging, topology
from mutate.common.errors import Unavailable
from mutate.common.logs import job_context
from mutate.common.telemetry import NOOP_METRICS, Metrics, consumer_span
from mutate.gateway.db import Database, Row
from mutate.gateway.projection import (
    COUNTED_COLUMNS,
    GATEWAY_WORKER_ID,
    apply_event,
    apply_events,
    count_finished,
)
from mutate.v1.events_pb2 import JobEvent

logger = logging.getLogger(__name__)


class ProjectorState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Projector:
    def __init__(
        self,
        *,
        js: JetStreamContext,
        db: Database,
        batch: int,
        fetch_wait: float,
        retry_delay: float,
        metrics: Metrics = NOOP_METRICS,
    ) -> None:
        self._js = js
        self._metrics = metrics
        self._db = db
        self._batch = batch
        self._fetch_wait = fetch_wait
        self._retry_delay = retry_delay
        self._task: asyncio.Task[None] | None = None
        self.state = ProjectorState.NEW
        self.applied = 0

    async def start(self) -> None:
        subscription = await self._js.pull_subscribe_bind(
            durable=topology.PROJECTOR_CONSUMER, stream=topology.EVENTS_STREAM
        )
        self.state = ProjectorState.RUNNING
        self._task = asyncio.create_task(self._run(subscription), name="projector")

    async def stop(self, timeout: float) -> None:
        """Finish the batch in hand (bounded by `timeout`), then stop."""
        if self._task is None or self.state is not ProjectorState.RUNNING:
            return
        self.state = ProjectorState.STOPPING
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.state = ProjectorState.STOPPED

    async def _run(self, subscription: JetStreamContext.PullSubscription) -> None:
        try:
            while self.state is ProjectorState.RUNNING:
                try:
                    msgs = await subscription.fetch(
                        self._batch, timeout=self._fetch_wait
                    )
                except (nats.errors.TimeoutError, TimeoutError):
                    # nats-py raises either, depending on where the wait ended.
                    continue
                except nats.errors.Error:
                    logger.warning("projector fetch failed; retrying", exc_info=True)
                    await asyncio.sleep(self._retry_delay)
                    continue
                try:
                    await self._project_batch(msgs)
                except Exception:
                    # Unacked, the events come back after the ack wait.
                    logger.exception("events not projected")
        finally:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()

    async def _project_batch(self, msgs: list[Msg]) -> None:
        """Apply a fetched batch in one round trip and commit, then ack it.

        A batch the database refuses (an event it cannot store) is applied
        again one event at a time, so only that event stays unacked.
        """
        batch: list[tuple[Msg, JobEvent]] = []
        for msg in msgs:
            event = await self._decode(msg)
            if event is not None:
                batch.append((msg, event))
        if len(batch) == 1:
            await self._project(*batch[0])
            return
        if not batch:
            return
        try:
            async with self._db.connection() as conn:
                rows = await apply_events(
                    conn, [event for _, event in batch], columns=COUNTED_COLUMNS
                )
        except Unavailable:
            logger.warning(
                "events not projected; will retry",
                exc_info=True,
                extra={"count": len(batch)},
            )
            for msg, _ in batch:
                await msg.nak(delay=self._retry_delay)
            return
        except Exception:
            logger.warning("batch refused; projecting one by one", exc_info=True)
            for msg, event in batch:
                try:
                    await self._project(msg, event)
                except Exception:
                    logger.exception("event not projected")
            return
        for (msg, event), row in zip(batch, rows, strict=True):
            with self._span(msg), job_context(event.job_id):
                self._applied(event, row)
                await msg.ack()

    async def _decode(self, msg: Msg) -> JobEvent | None:
        """The event to apply, or None when there is nothing to do (the
        message is then settled)."""
        try:
            event = messaging.decode_event(msg)
        except DecodeError:
            logger.error(
                "undecodable job event dropped", extra={"subject": msg.subject}
            )
            await msg.term()
            return None
        if event.worker_id == GATEWAY_WORKER_ID:
            # Applied to its row before it was published: nothing to do.
            await msg.ack()
            return None
        return event

    async def _project(self, msg: Msg, event: JobEvent) -> None:
        with self._span(msg), job_context(event.job_id):
            try:
                async with self._db.connection() as conn:
                    row = await apply_event(conn, event, columns=COUNTED_COLUMNS)
            except Unavailable:
                logger.warning("event not projected; will retry", exc_info=True)
                await msg.nak(delay=self._retry_delay)
                return
            self._applied(event, row)
            await msg.ack()

    @staticmethod
    def _span(msg: Msg) -> contextlib.AbstractContextManager[Any]:
        return consumer_span(
            msg,
            consumer_group=topology.PROJECTOR_CONSUMER,
            destination_template=messaging.EVENT_SUBJECT_TEMPLATE,
        )

    def _applied(self, event: JobEvent, row: Row | None) -> None:
        if row is None:
            return  # stale or repeated: the row is already past it
        self.applied += 1
        count_finished(self._metrics, row)
        logger.debug(
            "job event projected",
            extra={"attempt": event.attempt, "status": row["status"]},
        )
