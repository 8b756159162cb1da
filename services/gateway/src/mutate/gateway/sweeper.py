"""Background upkeep: queue jobs whose hand-over was lost, expire keys.

A pending attempt with no `dispatched_at` after MUTATE_REQUEUE_AFTER_MS was
never handed on (a failed publish, or a replica that died between inserting
the row and publishing or mid-way through a synchronous run): the sweeper
publishes it. JetStream's de-duplication on `{jobId}.{attempt}` makes a
double publish harmless. Every replica sweeps; the publish is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mutate.common.errors import MutateError
from mutate.gateway.configurations import ConfigurationStore
from mutate.gateway.job_store import JobStore
from mutate.gateway.jobs import JobManager

logger = logging.getLogger(__name__)

SWEEP_BATCH = 100


class Sweeper:
    def __init__(
        self,
        *,
        store: JobStore,
        configurations: ConfigurationStore,
        manager: JobManager,
        interval: float,
        requeue_after: float,
    ) -> None:
        self._store = store
        self._configurations = configurations
        self._manager = manager
        self._interval = interval
        self._requeue_after = requeue_after
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sweep()
            except MutateError as exc:
                logger.warning(
                    "sweep failed; next one later", extra={"error": exc.message}
                )
            except Exception:
                logger.exception("sweep failed unexpectedly")

    async def sweep(self) -> int:
        """One pass; returns how many jobs were queued."""
        queued = 0
        rows = await self._store.undispatched(
            older_than=self._requeue_after, limit=SWEEP_BATCH
        )
        for row in rows:
            configuration = await self._configurations.get_any(
                row["configuration_id"], row["configuration_version"]
            )
            logger.warning(
                "queueing a job that was never handed on",
                extra={"job_id": row["id"], "attempt": row["attempt"]},
            )
            await self._manager.dispatch(row, configuration)
            queued += 1
        purged = await self._store.purge_idempotency_keys()
        if purged:
            logger.info("expired idempotency keys purged", extra={"count": purged})
        return queued
