"""Retention: objects older than their area's retention period are deleted.

Bucket lifecycle rules are the production mechanism, but they count in whole
days and not every S3-compatible server applies them (SeaweedFS stores them;
whether it acts on them is its business). The sweep is the portable
equivalent: every interval it lists each area and deletes what is too old,
which also makes sub-day retention (and tests in milliseconds) possible.
Several replicas sweeping at once only repeat each other's deletes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import logging

from mutate.common import errors
from mutate.storage._store import S3Store

logger = logging.getLogger(__name__)


class SweeperState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class RetentionSweeper:
    """A background task deleting expired objects every `interval` seconds."""

    def __init__(
        self, *, store: S3Store, retention: dict[str, float], interval: float
    ) -> None:
        self._store = store
        self._retention = {a: s for a, s in retention.items() if s > 0}
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self.state = SweeperState.NEW

    def start(self) -> None:
        if self.state is not SweeperState.NEW or not self._retention:
            return
        self._task = asyncio.create_task(self._loop(), name="retention-sweep")
        self.state = SweeperState.RUNNING

    async def stop(self) -> None:
        task, self._task = self._task, None
        self.state = SweeperState.STOPPED
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def sweep_once(self) -> int:
        """Delete every expired object now; returns how many."""
        now = datetime.datetime.now(datetime.UTC)
        total = 0
        for area, seconds in self._retention.items():
            cutoff = now - datetime.timedelta(seconds=seconds)
            deleted = await self._store.delete_prefix(f"{area}/", older_than=cutoff)
            if deleted:
                logger.info(
                    "expired objects deleted",
                    extra={"area": area, "deleted": deleted},
                )
            total += deleted
        return total

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except errors.MutateError as exc:
                logger.warning("retention sweep failed, retrying later: %s", exc)
            except Exception:
                logger.exception("retention sweep crashed, retrying later")
            await asyncio.sleep(self._interval)
