"""The notifier's PostgreSQL tables: deliveries, their tries, signing secrets.

Retries are scheduled here, never in memory: a pending delivery carries its
`next_try_at`, and a notifier takes due ones with `FOR UPDATE SKIP LOCKED`,
marks them `locked_until` (a lease longer than one try), commits, and sends.
A notifier that dies mid-try leaves the lease to run out, and the delivery
falls due again for whichever notifier polls next.

Every psycopg error leaves this module as `Unavailable` (one translation
point); callers decide whether to retry.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Json
from psycopg_pool import AsyncConnectionPool

from mutate.common import netguard
from mutate.common.errors import InvalidArgument, NotFound, Unavailable
from mutate.notifier._payload import NewDelivery

logger = logging.getLogger(__name__)

PENDING = "pending"
DELIVERED = "delivered"
DEAD_LETTERED = "dead_lettered"
STATUSES = (PENDING, DELIVERED, DEAD_LETTERED)

_COLUMNS = """
    id, organization_id, job_id, job_attempt, event_type, webhook_id, url,
    endpoint, payload, output_key, output_file_name, traceparent, status,
    try_count,
    try_limit, next_try_at, last_try_at, last_status_code,
    last_response_excerpt, last_error, delivered_at, created_at
"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeliveryRow:
    """One delivery as stored (tries loaded separately)."""

    id: str
    organization_id: str
    job_id: str
    job_attempt: int
    event_type: str
    webhook_id: str
    url: str
    endpoint: str
    payload: dict[str, Any]
    output_key: str
    output_file_name: str
    traceparent: str
    status: str
    try_count: int
    try_limit: int
    next_try_at: dt.datetime | None
    last_try_at: dt.datetime | None
    last_status_code: int | None
    last_response_excerpt: str
    last_error: str
    delivered_at: dt.datetime | None
    created_at: dt.datetime


@dataclasses.dataclass(frozen=True, kw_only=True)
class TryRow:
    number: int
    tried_at: dt.datetime
    status_code: int | None
    error: str
    duration_ms: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class TryOutcome:
    """What one try did, as `record_try` writes it."""

    tried_at: dt.datetime
    duration_ms: float
    status_code: int | None
    excerpt: str
    error: str
    delivered: bool
    # Dead-letter now whatever tries are left (410, stop header, refused URL).
    stop: bool
    # Seconds until the next try when neither delivered nor stopped.
    retry_delay: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class SecretRow:
    secret: str
    previous_secret: str | None
    previous_expires_at: dt.datetime | None
    created_at: dt.datetime
    rotated_at: dt.datetime | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Stats:
    pending: int
    dead_lettered: int
    delivered_last_hour: int
    oldest_pending: dt.datetime | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ListFilter:
    organization_id: str
    job_id: str = ""
    status: str = ""
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    page_size: int = 50
    page_token: str = ""


def endpoint_of(url: str) -> str:
    """`scheme://host:port`, the unit of per-endpoint concurrency."""
    try:
        target = netguard.parse_url(url)
    except netguard.UrlRefused:
        return "invalid"
    return f"{target.scheme}://{target.host.lower()}:{target.port}"


class DeliveryStore:
    """Queries over the `notifier` schema; owns no pool (main does)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        try:
            async with self._pool.connection() as conn:
                yield conn
        except psycopg.errors.DataError as exc:
            raise InvalidArgument(f"database refused a value: {exc}") from exc
        except (psycopg.Error, TimeoutError) as exc:
            # psycopg_pool.PoolTimeout is a psycopg.OperationalError.
            raise Unavailable(f"database unavailable: {exc}") from exc

    # --- deliveries: intake -------------------------------------------------

    async def insert(
        self,
        deliveries: Sequence[NewDelivery],
        *,
        try_limit: int,
        leases: Mapping[str, float] | None = None,
    ) -> list[DeliveryRow]:
        """Insert new deliveries, due now; repeats are dropped. Returns the
        rows that were new.

        A delivery whose id is in `leases` is inserted already leased for
        that many seconds, as `claim_due` would leave it: the caller tries it
        without claiming it first.
        """
        if not deliveries:
            return []
        leases = leases or {}
        params = [
            self._insert_params(d, try_limit, lock_for=leases.get(d.id, 0.0))
            for d in deliveries
        ]
        rows: list[DeliveryRow] = []
        async with (
            self._connection() as conn,
            conn.cursor(row_factory=dict_row) as cur,
        ):
            await cur.executemany(
                _INSERT + f" RETURNING {_COLUMNS}", params, returning=True
            )
            while True:
                row = await cur.fetchone()
                if row is not None:
                    rows.append(DeliveryRow(**row))
                if not cur.nextset():
                    break
        return rows

    async def insert_locked(
        self, delivery: NewDelivery, *, try_limit: int, lock_for: float
    ) -> DeliveryRow:
        """Insert a delivery that the caller tries at once (a test webhook)."""
        params = self._insert_params(delivery, try_limit)
        params["lock_for"] = lock_for
        async with self._connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(_INSERT + f" RETURNING {_COLUMNS}", params)
            row = await cur.fetchone()
        assert row is not None
        return DeliveryRow(**row)

    @staticmethod
    def _insert_params(
        d: NewDelivery, try_limit: int, *, lock_for: float = 0.0
    ) -> dict[str, Any]:
        return {
            "id": d.id,
            "organization_id": d.organization_id,
            "job_id": d.job_id,
            "job_attempt": d.job_attempt,
            "event_type": d.event_type,
            "webhook_id": d.webhook_id,
            "url": d.url,
            "endpoint": endpoint_of(d.url),
            "payload": Json(d.payload),
            "output_key": d.output_key,
            "output_file_name": d.output_file_name,
            "traceparent": d.traceparent,
            "try_limit": try_limit,
            "lock_for": lock_for,
        }

    # --- deliveries: scheduling ---------------------------------------------

    async def claim_due(
        self,
        *,
        limit: int,
        room: Mapping[str, int],
        per_endpoint: int,
        lease: float,
    ) -> list[DeliveryRow]:
        """Take up to `limit` due deliveries for `lease` seconds, in one
        statement.

        At most `per_endpoint` per endpoint, or `room[endpoint]` for
        endpoints that already have tries in flight here; endpoints with no
        room are skipped, so their backlog cannot crowd out the rest.
        """
        busy = [endpoint for endpoint, free in room.items() if free <= 0]
        partial = {e: free for e, free in room.items() if free > 0}
        async with self._connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                _CLAIM,
                {
                    "busy": busy,
                    "endpoints": list(partial),
                    "rooms": list(partial.values()),
                    "per_endpoint": per_endpoint,
                    "scan": limit * 4,
                    "limit": limit,
                    "lease": lease,
                },
            )
            return [DeliveryRow(**r) for r in await cur.fetchall()]

    async def record_try(self, delivery_id: str, outcome: TryOutcome) -> str:
        """Write one try and the delivery's new state; returns its status."""
        async with self._connection() as conn:
            cur = await conn.execute(
                _RECORD_TRY,
                {
                    "id": delivery_id,
                    "tried_at": outcome.tried_at,
                    "duration_ms": outcome.duration_ms,
                    "status_code": outcome.status_code,
                    "excerpt": outcome.excerpt,
                    "error": outcome.error,
                    "delivered": outcome.delivered,
                    "stop": outcome.stop,
                    "delay": outcome.retry_delay,
                },
            )
            row = await cur.fetchone()
        return str(row[0]) if row else PENDING

    async def postpone(self, delivery_id: str, *, delay: float, error: str) -> None:
        """Put a delivery off without counting a try (storage was down)."""
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE notifier.deliveries SET locked_until = NULL,"
                " next_try_at = now() + %s * interval '1 second',"
                " last_error = %s, updated_at = now() WHERE id = %s",
                (delay, error, delivery_id),
            )

    async def release(self, delivery_ids: Sequence[str]) -> None:
        """Give back leases of deliveries not tried (shutdown)."""
        if not delivery_ids:
            return
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE notifier.deliveries SET locked_until = NULL"
                " WHERE id = ANY(%s) AND status = 'pending'",
                (list(delivery_ids),),
            )

    # --- deliveries: the API ------------------------------------------------

    async def get(self, organization_id: str, delivery_id: str) -> DeliveryRow:
        async with self._connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT {_COLUMNS} FROM notifier.deliveries"
                " WHERE id = %s AND organization_id = %s",
                (delivery_id, organization_id),
            )
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"delivery {delivery_id!r} not found")
        return DeliveryRow(**row)

    async def tries(self, delivery_ids: Sequence[str]) -> dict[str, list[TryRow]]:
        out: dict[str, list[TryRow]] = {i: [] for i in delivery_ids}
        if not delivery_ids:
            return out
        async with self._connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT delivery_id, number, tried_at, status_code, error,"
                " duration_ms FROM notifier.delivery_tries"
                " WHERE delivery_id = ANY(%s) ORDER BY delivery_id, number",
                (list(delivery_ids),),
            )
            for row in await cur.fetchall():
                out[row.pop("delivery_id")].append(TryRow(**row))
        return out

    async def list(self, query: ListFilter) -> tuple[list[DeliveryRow], str]:
        """A page of deliveries, newest first, and the next page's token."""
        where = ["organization_id = %(org)s"]
        params: dict[str, Any] = {"org": query.organization_id}
        if query.job_id:
            where.append("job_id = %(job)s")
            params["job"] = query.job_id
        if query.status:
            where.append("status = %(status)s")
            params["status"] = query.status
        if query.since:
            where.append("created_at >= %(since)s")
            params["since"] = query.since
        if query.until:
            where.append("created_at < %(until)s")
            params["until"] = query.until
        if query.page_token:
            after_time, after_id = _decode_token(query.page_token)
            where.append("(created_at, id) < (%(after_time)s, %(after_id)s)")
            params.update(after_time=after_time, after_id=after_id)
        params["limit"] = query.page_size + 1
        async with self._connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT {_COLUMNS} FROM notifier.deliveries"
                f" WHERE {' AND '.join(where)}"
                " ORDER BY created_at DESC, id DESC LIMIT %(limit)s",
                params,
            )
            rows = [DeliveryRow(**r) for r in await cur.fetchall()]
        token = ""
        if len(rows) > query.page_size:
            rows = rows[: query.page_size]
            token = _encode_token(rows[-1].created_at, rows[-1].id)
        return rows, token

    async def redeliver(
        self, organization_id: str, delivery_id: str, *, tries: int
    ) -> DeliveryRow:
        """Make a delivery due now with `tries` more tries (if it had ended)."""
        async with self._connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                _REDELIVER + " AND id = %(id)s" + f" RETURNING {_COLUMNS}",
                {"org": organization_id, "id": delivery_id, "tries": tries},
            )
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"delivery {delivery_id!r} not found")
        return DeliveryRow(**row)

    async def recover(
        self, organization_id: str, *, since: dt.datetime, tries: int
    ) -> int:
        """Redeliver every dead-lettered delivery created since `since`."""
        async with self._connection() as conn:
            cur = await conn.execute(
                _REDELIVER
                + " AND status = 'dead_lettered' AND created_at >= %(since)s",
                {"org": organization_id, "since": since, "tries": tries},
            )
            return cur.rowcount

    async def stats(self, organization_id: str) -> Stats:
        # TODO: counts scan the organization's deliveries; keep counters (or
        # prune old delivered rows) once tables grow past a few million rows.
        async with self._connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'pending'),"
                " count(*) FILTER (WHERE status = 'dead_lettered'),"
                " count(*) FILTER (WHERE status = 'delivered'"
                "   AND delivered_at > now() - interval '1 hour'),"
                " min(created_at) FILTER (WHERE status = 'pending')"
                " FROM notifier.deliveries"
                " WHERE %(org)s = '' OR organization_id = %(org)s",
                {"org": organization_id},
            )
            row = await cur.fetchone()
        assert row is not None
        return Stats(
            pending=row[0],
            dead_lettered=row[1],
            delivered_last_hour=row[2],
            oldest_pending=row[3],
        )

    # --- signing secrets ----------------------------------------------------

    async def secret(self, organization_id: str) -> SecretRow | None:
        async with self._connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT secret, created_at, rotated_at,"
                " CASE WHEN previous_expires_at > now() THEN previous_secret END"
                "   AS previous_secret,"
                " CASE WHEN previous_expires_at > now() THEN previous_expires_at"
                "   END AS previous_expires_at"
                " FROM notifier.signing_secrets WHERE organization_id = %s",
                (organization_id,),
            )
            row = await cur.fetchone()
        return SecretRow(**row) if row else None

    async def create_secret(self, organization_id: str, sealed: str) -> SecretRow:
        """Store a first secret; returns the row that is there afterwards
        (an existing one wins, so a retried create changes nothing)."""
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO notifier.signing_secrets (organization_id, secret)"
                " VALUES (%s, %s) ON CONFLICT (organization_id) DO NOTHING",
                (organization_id, sealed),
            )
        row = await self.secret(organization_id)
        assert row is not None
        return row

    async def rotate_secret(
        self, organization_id: str, sealed: str, *, overlap: float
    ) -> SecretRow:
        """Replace the secret; the old one keeps signing for `overlap` s."""
        async with self._connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "INSERT INTO notifier.signing_secrets AS s"
                " (organization_id, secret) VALUES (%(org)s, %(secret)s)"
                " ON CONFLICT (organization_id) DO UPDATE SET"
                " secret = EXCLUDED.secret, previous_secret = s.secret,"
                " previous_expires_at = now() + %(overlap)s * interval '1 second',"
                " rotated_at = now()"
                " RETURNING secret, created_at, rotated_at, previous_secret,"
                " previous_expires_at",
                {"org": organization_id, "secret": sealed, "overlap": overlap},
            )
            row = await cur.fetchone()
        assert row is not None
        return SecretRow(**row)


_INSERT = """
INSERT INTO notifier.deliveries (
    id, organization_id, job_id, job_attempt, event_type, webhook_id, url,
    endpoint, payload, output_key, output_file_name, traceparent, try_limit,
    next_try_at, locked_until
) VALUES (
    %(id)s, %(organization_id)s, %(job_id)s, %(job_attempt)s, %(event_type)s,
    %(webhook_id)s, %(url)s, %(endpoint)s, %(payload)s, %(output_key)s,
    %(output_file_name)s, %(traceparent)s, %(try_limit)s, now(),
    now() + %(lock_for)s * interval '1 second')
ON CONFLICT DO NOTHING
"""

# The due conditions are repeated on the locked row: a row that another
# notifier claimed after our snapshot fails them on re-check and is not taken
# twice.
_CLAIM = """
WITH room (endpoint, room) AS (
    SELECT * FROM unnest(%(endpoints)s::text[], %(rooms)s::int[])
), candidates AS (
    SELECT id, endpoint, next_try_at,
        row_number() OVER (PARTITION BY endpoint ORDER BY next_try_at) AS rank
    FROM (
        SELECT id, endpoint, next_try_at FROM notifier.deliveries
        WHERE status = 'pending' AND next_try_at <= now()
            AND (locked_until IS NULL OR locked_until <= now())
            AND NOT (endpoint = ANY(%(busy)s))
        ORDER BY next_try_at LIMIT %(scan)s
    ) AS due
), chosen AS (
    SELECT d.id FROM notifier.deliveries AS d
    JOIN candidates AS c ON c.id = d.id
    LEFT JOIN room AS r ON r.endpoint = c.endpoint
    WHERE c.rank <= coalesce(r.room, %(per_endpoint)s)
        AND d.status = 'pending' AND d.next_try_at <= now()
        AND (d.locked_until IS NULL OR d.locked_until <= now())
    ORDER BY c.next_try_at
    LIMIT %(limit)s
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE notifier.deliveries AS d
SET locked_until = now() + %(lease)s * interval '1 second'
FROM chosen WHERE d.id = chosen.id
RETURNING """ + ", ".join("d." + c.strip() for c in _COLUMNS.split(","))

_RECORD_TRY = """
WITH d AS (
    UPDATE notifier.deliveries SET
        try_count = try_count + 1,
        last_try_at = %(tried_at)s,
        last_status_code = %(status_code)s,
        last_response_excerpt = %(excerpt)s,
        last_error = %(error)s,
        status = CASE
            WHEN %(delivered)s THEN 'delivered'
            WHEN %(stop)s OR try_count + 1 >= try_limit THEN 'dead_lettered'
            ELSE 'pending' END,
        next_try_at = CASE
            WHEN %(delivered)s OR %(stop)s OR try_count + 1 >= try_limit
            THEN NULL
            ELSE now() + %(delay)s * interval '1 second' END,
        delivered_at = CASE WHEN %(delivered)s THEN now() ELSE delivered_at END,
        locked_until = NULL,
        updated_at = now()
    WHERE id = %(id)s
    RETURNING id, try_count, status
)
INSERT INTO notifier.delivery_tries
    (delivery_id, number, tried_at, status_code, error, duration_ms)
SELECT id, try_count, %(tried_at)s, %(status_code)s, %(error)s, %(duration_ms)s
FROM d
RETURNING (SELECT status FROM d)
"""

# A delivery that had ended gets `tries` more; a pending one only falls due
# now (its lease, if a try is in flight, is kept).
_REDELIVER = """
UPDATE notifier.deliveries SET
    try_limit = CASE WHEN status = 'pending' THEN try_limit
                     ELSE try_count + %(tries)s END,
    status = 'pending',
    next_try_at = now(),
    updated_at = now()
WHERE organization_id = %(org)s
"""


def _encode_token(created_at: dt.datetime, delivery_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), delivery_id]).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _decode_token(token: str) -> tuple[dt.datetime, str]:
    try:
        when, delivery_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        return dt.datetime.fromisoformat(when), str(delivery_id)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument("page_token is not valid") from exc
