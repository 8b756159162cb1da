"""The job-event projector: a durable consumer that keeps job rows current.

It pulls from the shared durable consumer (topology.PROJECTOR_CONSUMER), so
several gateway replicas split the work, applies each event through
`projection.apply_event` (ordered by attempt and event; stale or repeated
events change nothing) and acks only after the row is committed. A database
outage naks with a delay; the event comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging

import nats.errors
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from mutate.common import messaging, topology
from mutate.common.errors import Unavailable
from mutate.common.logs import job_context
from mutate.common.telemetry import NOOP_METRICS, Metrics, consumer_span
from mutate.gateway.db import Database
from mutate.gateway.projection import (
    GATEWAY_WORKER_ID,
    apply_event,
    count_finished,
)

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
                for msg in msgs:
                    try:
                        await self._handle(msg)
                    except Exception:
                        # Unacked, the event comes back after the ack wait.
                        logger.exception("event not projected")
        finally:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()

    async def _handle(self, msg: Msg) -> None:
        with consumer_span(
            msg,
            consumer_group=topology.PROJECTOR_CONSUMER,
            destination_template=messaging.EVENT_SUBJECT_TEMPLATE,
        ):
            await self._project(msg)

    async def _project(self, msg: Msg) -> None:
        try:
            event = messaging.decode_event(msg)
        except DecodeError:
            logger.error(
                "undecodable job event dropped", extra={"subject": msg.subject}
            )
            await msg.term()
            return
        if event.worker_id == GATEWAY_WORKER_ID:
            # Applied to its row before it was published: nothing to do.
            await msg.ack()
            return
        with job_context(event.job_id):
            try:
                async with self._db.connection() as conn:
                    row = await apply_event(conn, event)
            except Unavailable:
                logger.warning("event not projected; will retry", exc_info=True)
                await msg.nak(delay=self._retry_delay)
                return
            if row is not None:
                self.applied += 1
                count_finished(self._metrics, row)
                logger.debug(
                    "job event projected",
                    extra={"attempt": event.attempt, "status": row["status"]},
                )
            await msg.ack()
