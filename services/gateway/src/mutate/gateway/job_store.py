"""SQL for jobs, uploads and idempotency keys.

Every query that serves a caller takes the caller's organization, so another
organization's rows are simply not found. Operator-wide queries (the queue's
dead letters and stats) take `organization_id=None`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Any

from mutate.common.errors import Conflict, InvalidArgument, NotFound
from mutate.gateway import pagination
from mutate.gateway.db import Database, Row
from mutate.gateway.projection import RANKS, TERMINAL_RANK, event_params
from mutate.v1 import events_pb2

logger = logging.getLogger(__name__)

JobEvent = events_pb2.JobEvent

# A queued job's row, pending (parameters: NewJob's fields).
_INSERT_PENDING = (
    "INSERT INTO jobs (id, organization_id, configuration_id,"
    " configuration_version, mode, input_key, input_file_name,"
    " input_bytes, upload_id, webhook_url, client_reference)"
    " VALUES (%(id)s, %(organization_id)s, %(configuration_id)s,"
    " %(configuration_version)s, %(mode)s, %(input_key)s,"
    " %(input_file_name)s, %(input_bytes)s, %(upload_id)s,"
    " %(webhook_url)s, %(client_reference)s) RETURNING *"
)

# A synchronous job's row, written once its input is stored and its terminal
# event known (parameters: NewJob's fields and projection.event_params).
_INSERT_FINISHED = (
    "INSERT INTO jobs (id, organization_id, configuration_id,"
    " configuration_version, mode, input_key, input_file_name, input_bytes,"
    " upload_id, webhook_url, client_reference, status, attempt, event_rank,"
    " progress_percent, output_key, output_file_name, output_bytes,"
    " output_rows, output_columns, output_content_type, output_sha256,"
    " execution_log, warnings, error, created_at, started_at, finished_at,"
    " dispatched_at)"
    " VALUES (%(id)s, %(organization_id)s, %(configuration_id)s,"
    " %(configuration_version)s, %(mode)s, %(input_key)s, %(input_file_name)s,"
    " %(input_bytes)s, %(upload_id)s, %(webhook_url)s, %(client_reference)s,"
    " %(status)s, %(attempt)s, %(rank)s, %(pct)s, %(output_key)s,"
    " %(output_file_name)s, %(output_bytes)s, %(output_rows)s,"
    " %(output_columns)s, %(output_content_type)s, %(output_sha256)s,"
    " %(log)s, %(warnings)s, %(error)s, %(created_at)s,"
    " coalesce(%(start)s, %(time)s), %(time)s, coalesce(%(start)s, %(time)s))"
    " RETURNING *"
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NewJob:
    """What a job row starts with."""

    id: str
    organization_id: str
    configuration_id: str
    configuration_version: int
    mode: str
    input_key: str
    input_file_name: str
    input_bytes: int
    upload_id: str | None
    webhook_url: str
    client_reference: str


@dataclasses.dataclass(frozen=True)
class JobFilter:
    status: str = ""
    configuration_id: str = ""
    created_after: dt.datetime | None = None
    created_before: dt.datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "configuration_id": self.configuration_id,
            "after": self.created_after.isoformat() if self.created_after else "",
            "before": self.created_before.isoformat() if self.created_before else "",
        }


@dataclasses.dataclass(frozen=True)
class IdempotencyClaim:
    """The outcome of claiming an idempotency key."""

    # True: this request owns the key and creates the job.
    owner: bool
    job_id: str | None = None
    done: bool = False


class JobStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # ------------------------------------------------------------ jobs

    async def insert(self, job: NewJob, *, idempotency_key: str = "") -> Row:
        """Insert the job row (pending, attempt 1), tied to its idempotency key.

        One statement either way (no BEGIN/COMMIT round trips): the key's
        update rides along in a CTE, as in `insert_finished`.
        """
        query = _INSERT_PENDING
        if idempotency_key:
            query = (
                f"WITH job AS ({_INSERT_PENDING}), claim AS ("
                "UPDATE idempotency_keys SET job_id = %(id)s"
                " WHERE organization_id = %(organization_id)s"
                " AND key = %(idempotency_key)s) SELECT * FROM job"
            )
        row = await self._db.fetchone(
            query, {**dataclasses.asdict(job), "idempotency_key": idempotency_key}
        )
        assert row is not None
        return row

    async def insert_finished(
        self,
        job: NewJob,
        event: JobEvent,
        *,
        created_at: dt.datetime,
        idempotency_key: str = "",
    ) -> Row:
        """Insert the row of a synchronous job already ended by `event`.

        One statement (the idempotency key's job id included), so the job is
        never seen pending nor half-written, with the same columns
        `projection.apply_event` would have set on a pending row.
        """
        if RANKS.get(event.type) != TERMINAL_RANK or event.attempt != 1:
            raise ValueError("insert_finished takes the terminal event of attempt 1")
        params = {
            **dataclasses.asdict(job),
            **event_params(event),
            "created_at": created_at,
            "idempotency_key": idempotency_key,
        }
        if params["status"] == "completed":
            params["pct"] = 100
        query = _INSERT_FINISHED
        if idempotency_key:
            query = (
                f"WITH job AS ({_INSERT_FINISHED}), claim AS ("
                "UPDATE idempotency_keys SET job_id = %(id)s"
                " WHERE organization_id = %(organization_id)s"
                " AND key = %(idempotency_key)s) SELECT * FROM job"
            )
        row = await self._db.fetchone(query, params)
        assert row is not None
        return row

    async def get(self, organization_id: str, job_id: str) -> Row:
        row = await self._db.fetchone(
            "SELECT * FROM jobs WHERE id = %s AND organization_id = %s",
            (job_id, organization_id),
        )
        if row is None:
            raise NotFound(f"job {job_id} not found", reason="JOB_NOT_FOUND")
        return row

    async def list_jobs(
        self,
        organization_id: str | None,
        job_filter: JobFilter,
        *,
        page_size: int,
        page_token: str,
    ) -> tuple[list[Row], str]:
        size = pagination.page_size(page_size)
        filters = {"list": "jobs", "org": organization_id, **job_filter.as_dict()}
        cursor = pagination.decode(page_token, filters, arity=2)
        rows = await self._db.fetchall(
            "SELECT * FROM jobs"
            " WHERE (%(org)s::text IS NULL OR organization_id = %(org)s)"
            "   AND (%(status)s = '' OR status = %(status)s)"
            "   AND (%(cfg)s = '' OR configuration_id = %(cfg)s)"
            "   AND (%(created_after)s::timestamptz IS NULL"
            "        OR created_at >= %(created_after)s)"
            "   AND (%(created_before)s::timestamptz IS NULL"
            "        OR created_at < %(created_before)s)"
            "   AND (%(after)s::timestamptz IS NULL"
            "        OR (created_at, id) < (%(after)s::timestamptz, %(after_id)s))"
            " ORDER BY created_at DESC, id DESC LIMIT %(limit)s",
            {
                "org": organization_id,
                "status": job_filter.status,
                "cfg": job_filter.configuration_id,
                "created_after": job_filter.created_after,
                "created_before": job_filter.created_before,
                "after": cursor[0] if cursor else None,
                "after_id": cursor[1] if cursor else "",
                "limit": size + 1,
            },
        )
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = pagination.encode(
                [rows[-1]["created_at"].isoformat(), rows[-1]["id"]], filters
            )
        return rows, token

    async def count_active(self, organization_id: str) -> int:
        row = await self._db.fetchone(
            "SELECT count(*) AS n FROM jobs WHERE organization_id = %s"
            " AND status IN ('pending', 'running')",
            (organization_id,),
        )
        return int(row["n"]) if row else 0

    async def mark_dispatched(self, job_id: str, attempt: int) -> None:
        await self._db.execute(
            "UPDATE jobs SET dispatched_at = now()"
            " WHERE id = %s AND attempt = %s AND dispatched_at IS NULL",
            (job_id, attempt),
        )

    async def new_attempt(
        self, organization_id: str, job_id: str, *, statuses: tuple[str, ...]
    ) -> Row | None:
        """Start the next attempt of a job in one of `statuses`; None if not."""
        return await self._db.fetchone(
            "UPDATE jobs SET attempt = attempt + 1, status = 'pending',"
            " event_rank = 0, progress_percent = 0, output_key = '',"
            " output_file_name = '', output_bytes = 0, output_rows = 0,"
            " output_columns = 0, output_content_type = '', output_sha256 = '',"
            " execution_log = '[]', warnings = '[]', error = NULL,"
            " started_at = NULL, finished_at = NULL, dispatched_at = NULL,"
            " mode = 'async', updated_at = now()"
            " WHERE id = %s AND organization_id = %s AND status = ANY(%s)"
            " RETURNING *",
            (job_id, organization_id, list(statuses)),
        )

    async def delete(self, organization_id: str, job_id: str) -> Row:
        row = await self._db.fetchone(
            "DELETE FROM jobs WHERE id = %s AND organization_id = %s RETURNING *",
            (job_id, organization_id),
        )
        if row is None:
            raise NotFound(f"job {job_id} not found", reason="JOB_NOT_FOUND")
        return row

    async def input_key_in_use(self, input_key: str) -> bool:
        row = await self._db.fetchone(
            "SELECT 1 AS used FROM jobs WHERE input_key = %s LIMIT 1", (input_key,)
        )
        return row is not None

    async def undispatched(self, *, older_than: float, limit: int) -> list[Row]:
        """Pending attempts never handed to the queue (see the sweeper)."""
        return await self._db.fetchall(
            "SELECT * FROM jobs WHERE status = 'pending' AND dispatched_at IS NULL"
            " AND updated_at < now() - make_interval(secs => %s)"
            " ORDER BY created_at LIMIT %s",
            (older_than, limit),
        )

    async def dead_lettered_ids(
        self, organization_id: str | None, *, limit: int
    ) -> list[Row]:
        return await self._db.fetchall(
            "SELECT id, organization_id FROM jobs WHERE status = 'dead_lettered'"
            " AND (%(org)s::text IS NULL OR organization_id = %(org)s)"
            " ORDER BY created_at LIMIT %(limit)s",
            {"org": organization_id, "limit": limit},
        )

    async def find(self, job_id: str, organization_id: str | None) -> Row | None:
        return await self._db.fetchone(
            "SELECT * FROM jobs WHERE id = %(id)s"
            " AND (%(org)s::text IS NULL OR organization_id = %(org)s)",
            {"id": job_id, "org": organization_id},
        )

    async def status_counts(self, organization_id: str | None) -> dict[str, int]:
        rows = await self._db.fetchall(
            "SELECT status, count(*) AS n FROM jobs"
            " WHERE (%(org)s::text IS NULL OR organization_id = %(org)s)"
            " GROUP BY status",
            {"org": organization_id},
        )
        return {r["status"]: int(r["n"]) for r in rows}

    async def oldest_pending(self, organization_id: str | None) -> dt.datetime | None:
        row = await self._db.fetchone(
            "SELECT min(updated_at) AS oldest FROM jobs WHERE status = 'pending'"
            " AND (%(org)s::text IS NULL OR organization_id = %(org)s)",
            {"org": organization_id},
        )
        return row["oldest"] if row else None

    # ------------------------------------------------------------ uploads

    async def insert_upload(
        self,
        *,
        id: str,
        organization_id: str,
        storage_key: str,
        file_name: str,
        content_type: str,
        expires_at: dt.datetime,
    ) -> None:
        await self._db.execute(
            "INSERT INTO uploads (id, organization_id, storage_key, file_name,"
            " content_type, expires_at) VALUES (%s, %s, %s, %s, %s, %s)",
            (id, organization_id, storage_key, file_name, content_type, expires_at),
        )

    async def get_upload(self, organization_id: str, upload_id: str) -> Row:
        row = await self._db.fetchone(
            "SELECT * FROM uploads WHERE id = %s AND organization_id = %s",
            (upload_id, organization_id),
        )
        if row is None:
            raise NotFound(
                f"upload {upload_id} not found; create one with CreateUpload "
                "(POST /v1/uploads) and PUT the file to its URL",
                reason="UPLOAD_NOT_FOUND",
            )
        return row

    # ------------------------------------------------------------ idempotency

    async def claim_idempotency_key(
        self,
        organization_id: str,
        key: str,
        request_hash: bytes,
        *,
        ttl: float,
        stale_after: float,
    ) -> IdempotencyClaim:
        """Own `key`, or learn which job an earlier request made with it.

        A key whose first request died (still `running` after `stale_after`
        seconds) or whose time is over is taken over.
        """
        row = await self._db.fetchone(
            "INSERT INTO idempotency_keys (organization_id, key, request_hash,"
            " expires_at) VALUES (%(org)s, %(key)s, %(hash)s,"
            " now() + make_interval(secs => %(ttl)s))"
            " ON CONFLICT (organization_id, key) DO UPDATE SET"
            "  request_hash = excluded.request_hash, job_id = NULL,"
            "  state = 'running', created_at = now(),"
            "  expires_at = excluded.expires_at"
            " WHERE idempotency_keys.expires_at < now()"
            "    OR (idempotency_keys.state = 'running'"
            "        AND idempotency_keys.job_id IS NULL"
            "        AND idempotency_keys.created_at"
            "            < now() - make_interval(secs => %(stale)s))"
            " RETURNING key",
            {
                "org": organization_id,
                "key": key,
                "hash": request_hash,
                "ttl": ttl,
                "stale": stale_after,
            },
        )
        if row is not None:
            return IdempotencyClaim(owner=True)
        existing = await self._db.fetchone(
            "SELECT request_hash, job_id, state FROM idempotency_keys"
            " WHERE organization_id = %s AND key = %s",
            (organization_id, key),
        )
        if existing is None:
            # Released between our insert and select: try again.
            return await self.claim_idempotency_key(
                organization_id, key, request_hash, ttl=ttl, stale_after=stale_after
            )
        if bytes(existing["request_hash"]) != request_hash:
            raise Conflict(
                f"idempotency key {key!r} was used for a different request; "
                "use a new key for a new request",
                reason="IDEMPOTENCY_KEY_REUSED",
            )
        return IdempotencyClaim(
            owner=False, job_id=existing["job_id"], done=existing["state"] == "done"
        )

    async def idempotency_state(self, organization_id: str, key: str) -> Row | None:
        return await self._db.fetchone(
            "SELECT job_id, state FROM idempotency_keys"
            " WHERE organization_id = %s AND key = %s",
            (organization_id, key),
        )

    async def finish_idempotency_key(self, organization_id: str, key: str) -> None:
        await self._db.execute(
            "UPDATE idempotency_keys SET state = 'done'"
            " WHERE organization_id = %s AND key = %s",
            (organization_id, key),
        )

    async def settle_idempotency_key(self, organization_id: str, key: str) -> None:
        """End the claim of a request: `done` if it made a job (a repeat
        gets that job), else forgotten (a repeat may try again)."""
        async with self._db.transaction() as conn:
            await conn.execute(
                "DELETE FROM idempotency_keys WHERE organization_id = %s"
                " AND key = %s AND job_id IS NULL AND state = 'running'",
                (organization_id, key),
            )
            await conn.execute(
                "UPDATE idempotency_keys SET state = 'done' WHERE"
                " organization_id = %s AND key = %s AND job_id IS NOT NULL",
                (organization_id, key),
            )

    async def release_idempotency_key(self, organization_id: str, key: str) -> None:
        """Forget a key whose request failed before making a job."""
        await self._db.execute(
            "DELETE FROM idempotency_keys WHERE organization_id = %s AND key = %s"
            " AND job_id IS NULL",
            (organization_id, key),
        )

    async def purge_idempotency_keys(self) -> int:
        return await self._db.execute(
            "DELETE FROM idempotency_keys WHERE expires_at < now()"
        )


def check_idempotency_key(key: str) -> str:
    key = key.strip()
    if len(key) > 255:
        raise InvalidArgument(
            "idempotency key is longer than 255 characters",
            field_violations=[("idempotency_key", "too long")],
        )
    return key


__all__ = [
    "IdempotencyClaim",
    "JobFilter",
    "JobStore",
    "NewJob",
    "check_idempotency_key",
]
