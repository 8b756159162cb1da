"""Turns terminal job events from JetStream into delivery rows.

Binds to the durable consumer `notifier` on the events stream (terminal
subjects only), fetches in batches, inserts one delivery per event that
names a webhook URL, and acks only after the rows are committed. A repeated
event finds its delivery already there (same `webhook-id`, or the same job
attempt) and adds nothing, so redelivery by JetStream is harmless.

Deliveries the dispatcher has a free slot for are inserted already leased to
this process and handed straight to it, so the usual delivery costs no claim
query; the rest wait in the table for the dispatcher's next claim.
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
from opentelemetry import propagate

from mutate.common import errors, messaging, topology
from mutate.common.telemetry import consumer_span
from mutate.notifier import _payload
from mutate.notifier._dispatcher import Dispatcher
from mutate.notifier._store import DeliveryRow, DeliveryStore, endpoint_of

logger = logging.getLogger(__name__)


class ConsumerState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class EventConsumer:
    """The intake loop; `run` until `stop`."""

    def __init__(
        self,
        *,
        js: JetStreamContext,
        store: DeliveryStore,
        dispatcher: Dispatcher,
        try_limit: int,
        batch: int,
        fetch_wait: float,
        retry_delay: float,
    ) -> None:
        self._js = js
        self._store = store
        self._dispatcher = dispatcher
        self._try_limit = try_limit
        self._batch = batch
        self._fetch_wait = fetch_wait
        self._retry_delay = retry_delay
        self.state = ConsumerState.NEW

    async def run(self) -> None:
        self.state = ConsumerState.RUNNING
        sub = await self._js.pull_subscribe_bind(
            durable=topology.NOTIFIER_CONSUMER, stream=topology.EVENTS_STREAM
        )
        try:
            while self.state is ConsumerState.RUNNING:
                try:
                    msgs = await sub.fetch(self._batch, timeout=self._fetch_wait)
                except TimeoutError:
                    # No events this time (nats-py raises both its own and
                    # asyncio's TimeoutError here).
                    continue
                except nats.errors.Error as exc:
                    logger.warning("fetching job events failed: %s", exc)
                    await asyncio.sleep(self._retry_delay)
                    continue
                try:
                    await self.handle(msgs)
                except Exception:
                    # Unacked events come again after the ack wait.
                    logger.exception("job event batch failed")
                    await asyncio.sleep(self._retry_delay)
        finally:
            # Not drain(): after a timed-out fetch it hangs (TOOLCHAIN.md).
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
            self.state = ConsumerState.STOPPED

    def stop(self) -> None:
        """Finish the current batch, then return from `run`."""
        if self.state is ConsumerState.RUNNING:
            self.state = ConsumerState.STOPPING

    @staticmethod
    def _consumed(msg: Msg) -> str:
        """Trace the event's intake; the context its webhook tries continue.

        The delivery row keeps the `traceparent` of this consumer span (a
        child of the producer's), so the tries, made later by the
        dispatcher, are its children. With tracing off it is the producer's
        own, passed through.
        """
        carrier: dict[str, str] = {}
        with consumer_span(
            msg,
            consumer_group=topology.NOTIFIER_CONSUMER,
            destination_template=messaging.EVENT_SUBJECT_TEMPLATE,
        ):
            propagate.inject(carrier)
        return carrier.get("traceparent", "")

    async def handle(self, msgs: list[Msg]) -> None:
        """Insert the deliveries of a batch, then ack it."""
        deliveries = []
        done: list[Msg] = []
        for msg in msgs:
            try:
                event = messaging.decode_event(msg)
            except DecodeError:
                logger.warning(
                    "undecodable job event dropped", extra={"subject": msg.subject}
                )
                await msg.term()
                continue
            done.append(msg)
            if event.type not in messaging.TERMINAL_EVENTS:
                continue
            if not _payload.is_deliverable(event):
                continue
            deliveries.append(
                _payload.from_event(event, traceparent=self._consumed(msg))
            )
        # Slots held for deliveries handed straight to the dispatcher.
        reserved = {
            d.id: endpoint
            for d in deliveries
            if self._dispatcher.reserve(endpoint := endpoint_of(d.url))
        }
        rows: list[DeliveryRow] = []
        try:
            rows = await self._store.insert(
                deliveries,
                try_limit=self._try_limit,
                leases=dict.fromkeys(reserved, self._dispatcher.lease),
            )
        except errors.MutateError as exc:
            logger.warning(
                "job events not recorded, will come again: %s",
                exc,
                extra={"count": len(done)},
            )
            for msg in done:
                await msg.nak(delay=self._retry_delay)
            await asyncio.sleep(self._retry_delay)
            return
        finally:
            # Whatever happened, no reserved slot outlives this batch.
            waiting, not_started = self._hand_over(rows, reserved)
        for msg in done:
            await msg.ack()
        if waiting:
            self._dispatcher.wake()
        if not_started:
            # Stopping: give the leases back for another notifier.
            with contextlib.suppress(errors.MutateError):
                await self._store.release(not_started)

    def _hand_over(
        self, rows: list[DeliveryRow], reserved: dict[str, str]
    ) -> tuple[bool, list[str]]:
        """Start the new rows we hold slots for; give back the other slots.

        Returns whether new rows wait for a claim, and the ids of leased
        rows not started (the dispatcher is stopping).
        """
        waiting = False
        not_started: list[str] = []
        for row in rows:
            if reserved.pop(row.id, None) is None:
                waiting = True
            elif not self._dispatcher.start_claimed(row):
                not_started.append(row.id)
        for endpoint in reserved.values():
            # A repeat of a recorded delivery, or the insert failed.
            self._dispatcher.unreserve(endpoint)
        if rows:
            logger.debug("deliveries created", extra={"count": len(rows)})
        return waiting, not_started
