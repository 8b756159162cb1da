"""Takes due deliveries from PostgreSQL and tries them, many at once.

One loop claims due rows (see `_store.DeliveryStore.claim_due`) up to the
free slots of WEBHOOK_CONCURRENCY, leaving out endpoints that already have
WEBHOOK_ENDPOINT_CONCURRENCY tries in flight, so one slow receiver holds at
most its own slots. Each claimed row becomes a task: sign, POST, record the
try and the next step (delivered, retry at a backed-off time, dead letter).

A new delivery with a free slot skips the claim: the intake reserves the
slot (`reserve`), inserts the row already leased to this process and hands
it over (`start_claimed`). The loop claims when woken (deliveries the intake
could not hand over, redeliveries, retries falling due), after a finished
try while due rows may be waiting, and every poll interval.

TODO: the per-endpoint limit holds per notifier process; with N replicas an
endpoint may see N times WEBHOOK_ENDPOINT_CONCURRENCY tries at once.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import enum
import logging
import random
import time

from opentelemetry import propagate, trace

from mutate.common import errors, logs, webhooks
from mutate.common.storage_client import StorageClient
from mutate.common.telemetry import NOOP_METRICS, Metrics
from mutate.notifier import _payload
from mutate.notifier._http import TryResult, Verdict, WebhookSender
from mutate.notifier._keys import SigningKeys
from mutate.notifier._store import DeliveryRow, DeliveryStore, TryOutcome

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

# `mutate.webhook.attempts` outcomes, by what the try meant.
_OUTCOMES = {
    Verdict.DELIVERED: "delivered",
    Verdict.RETRY: "failed",
    Verdict.STOP: "refused",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Backoff:
    """Delay before try n+1: base * factor**(n-1), capped, minus jitter."""

    base: float
    factor: float
    maximum: float
    jitter: float

    def delay(self, tries_done: int, *, retry_after: float | None = None) -> float:
        exponent = max(0, tries_done - 1)
        # Cap the exponent's effect before it overflows a float.
        raw = min(self.maximum, self.base * self.factor ** min(exponent, 64))
        delay = raw * (1 - self.jitter * random.random())
        if retry_after is not None:
            # The receiver's Retry-After wins when longer, within our cap.
            delay = max(delay, min(retry_after, self.maximum))
        return delay


class DispatcherState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Dispatcher:
    """Owns the in-flight tries of one notifier process."""

    def __init__(
        self,
        *,
        store: DeliveryStore,
        sender: WebhookSender,
        keys: SigningKeys,
        storage: StorageClient | None,
        backoff: Backoff,
        concurrency: int,
        endpoint_concurrency: int,
        poll_interval: float,
        lease: float,
        metrics: Metrics = NOOP_METRICS,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._sender = sender
        self._keys = keys
        self._storage = storage
        self._backoff = backoff
        self._concurrency = concurrency
        self._endpoint_concurrency = endpoint_concurrency
        self._poll_interval = poll_interval
        self._lease = lease
        self._wake = asyncio.Event()
        self._tasks: dict[asyncio.Task[None], DeliveryRow] = {}
        # Slots per endpoint, for tries running or reserved by the intake.
        self._in_flight: collections.Counter[str] = collections.Counter()
        self._reserved = 0
        # While a claim is out, its rows may take any free slot.
        self._claiming = False
        # Whether due rows may be waiting for a slot: a finished try then
        # claims at once rather than at the next poll.
        self._backlog = True
        self.state = DispatcherState.NEW

    @property
    def busy(self) -> int:
        """Slots taken: tries running plus slots reserved by the intake."""
        return len(self._tasks) + self._reserved

    @property
    def lease(self) -> float:
        """Seconds a claimed (or handed-over) delivery stays ours."""
        return self._lease

    def wake(self) -> None:
        """Look for due deliveries now (new ones, or a retry falling due)."""
        self._backlog = True
        self._wake.set()

    def reserve(self, endpoint: str) -> bool:
        """Hold a slot for a new delivery to `endpoint`, if one is free.

        The caller inserts the delivery leased for `lease` seconds and
        passes the row to `start_claimed`, or gives the slot back with
        `unreserve`.
        """
        if self.state is not DispatcherState.RUNNING or self._claiming:
            return False
        if self.busy >= self._concurrency:
            return False
        if self._in_flight[endpoint] >= self._endpoint_concurrency:
            return False
        self._reserved += 1
        self._in_flight[endpoint] += 1
        return True

    def unreserve(self, endpoint: str) -> None:
        self._reserved -= 1
        self._release_slot(endpoint)

    def start_claimed(self, row: DeliveryRow) -> bool:
        """Try a reserved delivery inserted leased to us; False (slot given
        back) when stopping, the lease then runs out."""
        if self.state is not DispatcherState.RUNNING:
            self.unreserve(row.endpoint)
            return False
        self._reserved -= 1
        self._start(row)
        return True

    async def run(self) -> None:
        """Claim and start tries until `stop`."""
        self.state = DispatcherState.RUNNING
        while self.state is DispatcherState.RUNNING:
            self._wake.clear()
            started = await self._claim_and_start()
            if started is None:
                # No free slot: a finished try claims again.
                self._backlog = True
                started = 0
            if started and len(self._tasks) < self._concurrency:
                # A full batch may mean more are due: look again at once.
                await asyncio.sleep(0)
                continue
            try:
                async with asyncio.timeout(self._poll_interval):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _claim_and_start(self) -> int | None:
        """Claim and start due rows; how many, or None without a free slot."""
        free = self._concurrency - self.busy
        if free <= 0:
            return None
        room = {
            endpoint: self._endpoint_concurrency - count
            for endpoint, count in self._in_flight.items()
        }
        self._claiming = True
        try:
            rows = await self._store.claim_due(
                limit=free,
                room=room,
                per_endpoint=self._endpoint_concurrency,
                lease=self._lease,
            )
        except errors.Unavailable as exc:
            logger.warning("cannot claim due deliveries: %s", exc)
            return 0
        finally:
            self._claiming = False
        # More may be due than we took (or than busy endpoints had room
        # for): finished tries look again. Nothing due: they need not.
        self._backlog = bool(rows) or any(left <= 0 for left in room.values())
        for row in rows:
            self._in_flight[row.endpoint] += 1
            self._start(row)
        return len(rows)

    def _start(self, row: DeliveryRow) -> None:
        task = asyncio.create_task(self._run_one(row), name=f"webhook {row.id}")
        self._tasks[task] = row

    def _release_slot(self, endpoint: str) -> None:
        self._in_flight[endpoint] -= 1
        if self._in_flight[endpoint] <= 0:
            del self._in_flight[endpoint]

    async def _run_one(self, row: DeliveryRow) -> None:
        try:
            await self.attempt(row)
        except errors.MutateError as exc:
            # The database went away while recording: the lease runs out
            # and the delivery is tried again.
            logger.warning(
                "webhook try not recorded: %s", exc, extra={"delivery_id": row.id}
            )
        except Exception:
            logger.exception("webhook try failed", extra={"delivery_id": row.id})
        finally:
            self._release_slot(row.endpoint)
            self._tasks.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
            if self._backlog:
                self._wake.set()

    async def attempt(self, row: DeliveryRow) -> str:
        """One try of a claimed delivery, recorded; returns its new status.

        The try's span continues the trace of the event's intake (the
        `traceparent` kept with the row); the POST inside it is the httpx
        instrumentation's CLIENT span, whose context the receiver gets.
        """
        context = propagate.extract({"traceparent": row.traceparent})
        with (
            logs.job_context(row.job_id),
            tracer.start_as_current_span(
                "webhook try",
                context=context,
                attributes={
                    "mutate.job_id": row.job_id,
                    "mutate.delivery_id": row.id,
                    "mutate.webhook_id": row.webhook_id,
                    "mutate.webhook.try": row.try_count + 1,
                },
            ) as span,
        ):
            status = await self._attempt(row)
            if span.is_recording():
                span.set_attribute("mutate.webhook.outcome", status)
                if status == "dead_lettered":
                    span.set_status(trace.StatusCode.ERROR, "webhook dead-lettered")
            return status

    async def _attempt(self, row: DeliveryRow) -> str:
        tries_done = row.try_count + 1
        keys = await self._keys.keys(row.organization_id)
        if not keys:
            return await self._record(
                row,
                TryResult(
                    verdict=Verdict.STOP,
                    error="no signing secret: the organization has none and "
                    "WEBHOOK_SECRET is not set",
                ),
                tried_at=dt.datetime.now(dt.UTC),
            )
        try:
            download_url, expires_at = await self._download_url(row)
        except errors.MutateError as exc:
            # Not the receiver's fault: put off without spending a try.
            delay = self._backoff.delay(tries_done)
            await self._store.postpone(
                row.id, delay=delay, error=f"storage: {exc.message}"
            )
            self._wake_later(delay)
            logger.warning(
                "webhook postponed, no download URL: %s",
                exc.message,
                extra={"delivery_id": row.id},
            )
            return "pending"
        body = _payload.body(
            row.payload, download_url=download_url, expires_at=expires_at
        )
        headers = webhooks.sign(keys, row.webhook_id, body)
        tried_at = dt.datetime.now(dt.UTC)
        result = await self._sender.send(row.url, headers=headers, body=body)
        return await self._record(row, result, tried_at=tried_at)

    async def _download_url(
        self, row: DeliveryRow
    ) -> tuple[str | None, dt.datetime | None]:
        if not row.output_key or row.payload.get("status") != "completed":
            return None, None
        if self._storage is None:
            raise errors.Unavailable("no storage service configured")
        try:
            presigned = await self._storage.presign_get(
                row.output_key, download_file_name=row.output_file_name
            )
        except errors.NotFound:
            # The output is gone (retention): report the job without a link.
            return None, None
        return presigned.url, presigned.expires_at

    async def _record(
        self, row: DeliveryRow, result: TryResult, *, tried_at: dt.datetime
    ) -> str:
        delay = self._backoff.delay(row.try_count + 1, retry_after=result.retry_after)
        status = await self._store.record_try(
            row.id,
            TryOutcome(
                tried_at=tried_at,
                duration_ms=result.duration * 1000,
                status_code=result.status_code,
                excerpt=result.excerpt,
                error=result.error,
                delivered=result.verdict is Verdict.DELIVERED,
                stop=result.verdict is Verdict.STOP,
                retry_delay=delay,
            ),
        )
        self._metrics.webhook_attempt(outcome=_OUTCOMES[result.verdict])
        extra = {
            "delivery_id": row.id,
            "webhook_id": row.webhook_id,
            "try": row.try_count + 1,
            "status_code": result.status_code,
            "duration_ms": round(result.duration * 1000, 1),
            "outcome": status,
        }
        if status == "delivered":
            logger.info("webhook delivered", extra=extra)
        elif status == "pending":
            self._wake_later(delay)
            logger.warning(
                "webhook try failed, retrying in %.1fs: %s",
                delay,
                result.error,
                extra=extra,
            )
        else:
            logger.warning("webhook dead-lettered: %s", result.error, extra=extra)
        return status

    def _wake_later(self, delay: float) -> None:
        # Retries sooner than the next poll (short test schedules) are not
        # left waiting for it.
        if delay < self._poll_interval:
            asyncio.get_running_loop().call_later(delay, self.wake)

    async def stop(self, grace: float) -> None:
        """Stop claiming; let tries in flight finish within `grace` s."""
        if self.state in (DispatcherState.STOPPING, DispatcherState.STOPPED):
            return
        self.state = DispatcherState.STOPPING
        self.wake()
        deadline = time.monotonic() + grace
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        unfinished = dict(self._tasks)
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.gather(*unfinished, return_exceptions=True)
            logger.warning(
                "webhook tries cut short by shutdown",
                extra={"count": len(unfinished)},
            )
            remaining = max(0.0, deadline - time.monotonic())
            try:
                async with asyncio.timeout(max(remaining, 1.0)):
                    await self._store.release([r.id for r in unfinished.values()])
            except (TimeoutError, errors.MutateError):
                # Their leases run out by themselves.
                pass
        self.state = DispatcherState.STOPPED
