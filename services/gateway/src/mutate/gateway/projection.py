"""Job events into job rows, ordered by (attempt, event).

Each event has a rank within its attempt: started 1, progress 2, terminal 3.
An event is applied only when it moves the row forward — a later attempt, or
a higher rank in the same attempt (a higher percentage between progress
events) — so a stale or repeated event never moves a job backwards and the
first terminal event of an attempt wins. The comparison is in the UPDATE's
WHERE clause, so concurrent projectors cannot interleave badly.

The projector, the synchronous path and cancellation all go through
`apply_event`; `merge_event` is the same rule applied to a Job message, for
WatchJob's view between the event and the projector's update.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from mutate.common.telemetry import Metrics
from mutate.gateway import convert
from mutate.gateway.db import Row
from mutate.gateway.public_errors import public_job_error
from mutate.v1 import events_pb2, job_pb2

JobEvent = events_pb2.JobEvent

RANKS: dict[int, int] = {
    JobEvent.STARTED: 1,
    JobEvent.PROGRESS: 2,
    JobEvent.COMPLETED: 3,
    JobEvent.FAILED: 3,
    JobEvent.DEAD_LETTERED: 3,
    JobEvent.CANCELLED: 3,
}
TERMINAL_RANK = 3

# The worker id of events the gateway makes itself (sync path, cancel): it
# applies each to the row before publishing it, so the projector skips them.
GATEWAY_WORKER_ID = "gateway"

_STATUS_OF: dict[int, str] = {
    JobEvent.STARTED: "running",
    JobEvent.PROGRESS: "running",
    JobEvent.COMPLETED: "completed",
    JobEvent.FAILED: "failed",
    JobEvent.DEAD_LETTERED: "dead_lettered",
    JobEvent.CANCELLED: "cancelled",
}

_FORWARD = (
    " WHERE id = %(job)s AND organization_id = %(org)s"
    " AND (attempt < %(attempt)s OR (attempt = %(attempt)s AND ("
    "      event_rank < %(rank)s"
    "      OR (%(rank)s = 2 AND event_rank = 2 AND progress_percent < %(pct)s))))"
)

# What `count_finished` reads: all the projector needs back from a row (a
# whole row is ~35 columns to decode, twice per job).
COUNTED_COLUMNS = ("status", "event_rank", "mode", "created_at", "finished_at")

_COMMON = (
    "UPDATE jobs SET status = %(status)s, attempt = %(attempt)s,"
    " event_rank = %(rank)s, updated_at = now(),"
)

_SQL: dict[str, str] = {
    "running": _COMMON + " progress_percent = %(pct)s,"
    " started_at = coalesce(%(start)s, started_at, %(time)s)" + _FORWARD,
    "completed": _COMMON + " progress_percent = 100, output_key = %(output_key)s,"
    " output_file_name = %(output_file_name)s, output_bytes = %(output_bytes)s,"
    " output_rows = %(output_rows)s, output_columns = %(output_columns)s,"
    " output_content_type = %(output_content_type)s,"
    " output_sha256 = %(output_sha256)s, execution_log = %(log)s,"
    " warnings = %(warnings)s, error = NULL,"
    " started_at = coalesce(started_at, %(start)s, %(time)s),"
    " finished_at = %(time)s" + _FORWARD,
    "ended": _COMMON
    + " execution_log = CASE WHEN %(has_log)s THEN %(log)s ELSE execution_log END,"
    " warnings = CASE WHEN %(has_log)s THEN %(warnings)s ELSE warnings END,"
    " error = %(error)s, finished_at = %(time)s" + _FORWARD,
}


def event_params(event: JobEvent) -> dict[str, Any]:
    """The columns `event` sets, as query parameters (see `_SQL`)."""
    output = event.output
    start = (
        event.start_time.ToDatetime(tzinfo=dt.UTC)
        if event.HasField("start_time")
        else None
    )
    return {
        "job": event.job_id,
        "org": event.organization_id,
        "attempt": event.attempt,
        "rank": RANKS[event.type],
        "status": _STATUS_OF[event.type],
        "pct": max(0, min(100, event.progress_percent)),
        "time": event.time.ToDatetime(tzinfo=dt.UTC),
        "start": start,
        "output_key": output.key,
        "output_file_name": output.file_name,
        "output_bytes": output.bytes,
        "output_rows": output.rows,
        "output_columns": output.columns,
        "output_content_type": output.content_type,
        "output_sha256": output.sha256,
        "has_log": bool(event.execution_log or event.warnings),
        "log": Jsonb([convert.to_json(e) for e in event.execution_log]),
        "warnings": Jsonb(list(event.warnings)),
        "error": Jsonb(convert.to_json(event.error))
        if event.HasField("error")
        else None,
    }


def _sql_for(event: JobEvent) -> str:
    status = _STATUS_OF[event.type]
    if status in ("running", "completed"):
        return _SQL[status]
    return _SQL["ended"]


def event_statement(
    event: JobEvent, *, columns: tuple[str, ...] = ()
) -> tuple[str, dict[str, Any]] | None:
    """The UPDATE applying `event` and its parameters; it returns the moved
    row (only `columns` of it when given). None for an event that never
    applies."""
    if event.type not in RANKS or event.attempt < 1:
        return None
    if not event.HasField("time"):
        event.time.GetCurrentTime()
    returning = ", ".join(columns) if columns else "*"
    return f"{_sql_for(event)} RETURNING {returning}", event_params(event)


async def apply_event(
    conn: psycopg.AsyncConnection[Row],
    event: JobEvent,
    *,
    columns: tuple[str, ...] = (),
) -> Row | None:
    """Apply `event` if it moves the job forward; returns the new row (only
    `columns` of it when given) or None."""
    statement = event_statement(event, columns=columns)
    if statement is None:
        return None
    cur = await conn.execute(*statement)
    return await cur.fetchone()


async def apply_events(
    conn: psycopg.AsyncConnection[Row],
    events: list[JobEvent],
    *,
    columns: tuple[str, ...] = (),
) -> list[Row | None]:
    """`apply_event` for each of `events`, in order, in one round trip and
    one commit (a pipeline: its statements form one implicit transaction).
    If one statement fails, none is applied and the error is raised."""
    statements = [event_statement(event, columns=columns) for event in events]
    async with conn.pipeline():
        cursors = [
            await conn.execute(*statement) if statement is not None else None
            for statement in statements
        ]
    return [await cur.fetchone() if cur is not None else None for cur in cursors]


def count_finished(metrics: Metrics, row: Row, *, mode: str = "") -> None:
    """Count a job row that an event just made terminal (`mutate.jobs`).

    Called where `apply_event` moved a row, so each attempt's end counts
    once whichever replica or path applied it. `mode` is how it ran
    (`sync`, `async`); by default the row's, an `auto` row counting as
    `async` (the synchronous path names itself).
    """
    if row.get("event_rank") != TERMINAL_RANK:
        return
    if not mode:
        mode = "sync" if row.get("mode") == "sync" else "async"
    created, finished = row.get("created_at"), row.get("finished_at")
    duration = None
    if created is not None and finished is not None:
        duration = (finished - created).total_seconds()
    metrics.job_finished(outcome=row["status"], mode=mode, duration=duration)


def moves_forward(*, attempt: int, rank: int, percent: int, event: JobEvent) -> bool:
    """Whether `event` would be applied to a job at (attempt, rank, percent)."""
    event_rank = RANKS.get(event.type)
    if event_rank is None:
        return False
    if event.attempt != attempt:
        return event.attempt > attempt
    if event_rank == 2 and rank == 2:
        return event.progress_percent > percent
    return event_rank > rank


def merge_event(job: job_pb2.Job, event: JobEvent) -> None:
    """Apply `event` to a Job message the way `apply_event` applies it."""
    job.attempt = event.attempt
    job.status = convert.STATUS_VALUES[_STATUS_OF[event.type]]  # type: ignore[assignment]
    job.update_time.CopyFrom(event.time)
    if event.type in (JobEvent.STARTED, JobEvent.PROGRESS):
        job.progress_percent = max(0, min(100, event.progress_percent))
        if event.HasField("start_time"):
            job.start_time.CopyFrom(event.start_time)
        elif not job.HasField("start_time"):
            job.start_time.CopyFrom(event.time)
        return
    job.finish_time.CopyFrom(event.time)
    if event.type == JobEvent.COMPLETED:
        job.progress_percent = 100
        job.output_file_name = event.output.file_name
        job.output_bytes = event.output.bytes
        job.output_rows = event.output.rows
        job.output_columns = event.output.columns
        job.output_content_type = event.output.content_type
        job.ClearField("error")
    elif event.HasField("error"):
        job.error.CopyFrom(event.error)
        public_job_error(job.error, event.organization_id)
    if event.execution_log or event.warnings or event.type == JobEvent.COMPLETED:
        del job.execution_log[:]
        job.execution_log.extend(event.execution_log)
        del job.warnings[:]
        job.warnings.extend(event.warnings)
