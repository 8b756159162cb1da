"""The gateway's PostgreSQL access: one async pool, one error translation.

Connections run in autocommit with the gateway's schema on the search path;
`transaction()` opens an explicit transaction when several statements must
hold together. psycopg's connection and pool errors become `Unavailable`,
its data errors (a value PostgreSQL cannot hold) `InvalidArgument`, here and
nowhere else.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import psycopg_pool
from psycopg.rows import dict_row

from mutate.common.errors import InvalidArgument, Unavailable
from mutate.common.telemetry.psycopg import TracedAsyncCursor

logger = logging.getLogger(__name__)

Row = dict[str, Any]


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Map the database being unreachable to a retryable domain error."""
    try:
        yield
    except psycopg_pool.PoolTimeout as exc:
        raise Unavailable("database busy: no connection available") from exc
    except psycopg.OperationalError as exc:
        raise Unavailable("database unavailable") from exc
    except psycopg.DataError as exc:
        # A value PostgreSQL cannot hold (a NUL in a string, an out-of-range
        # number) came from the request: the caller's to fix.
        raise InvalidArgument(
            f"a value in the request cannot be stored: {exc}"
        ) from exc


class Database:
    """An AsyncConnectionPool bound to the gateway's schema."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool) -> None:
        self._pool = pool

    @classmethod
    def create(
        cls,
        conninfo: str,
        *,
        schema: str,
        min_size: int,
        max_size: int,
        timeout: float,
        traced: bool = False,
    ) -> Database:
        """A pool; with `traced`, every statement is a CLIENT span."""
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "row_factory": dict_row,
            "options": f"-c search_path={schema}",
        }
        if traced:
            kwargs["cursor_factory"] = TracedAsyncCursor
        pool = psycopg_pool.AsyncConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            # psycopg_pool doubles the wait between reconnection attempts
            # until this gives up (default 300 s): after a short outage the
            # next attempt could be a minute away, every request failing with
            # "database busy" meanwhile. Giving up after `timeout` starts a
            # fresh attempt (1 s apart again) on the next request.
            reconnect_timeout=timeout,
            open=False,
            name="gateway",
            kwargs=kwargs,
        )
        return cls(pool)

    async def open(self, *, wait_timeout: float) -> None:
        with translate_errors():
            await self._pool.open(wait=True, timeout=wait_timeout)

    async def close(self, timeout: float = 5.0) -> None:
        await self._pool.close(timeout=timeout)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Row]]:
        with translate_errors():
            async with self._pool.connection() as conn:
                yield conn  # type: ignore[misc]

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Row]]:
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def fetchone(self, query: str, params: Any = None) -> Row | None:
        async with self.connection() as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchone()

    async def fetchall(self, query: str, params: Any = None) -> list[Row]:
        async with self.connection() as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall()

    async def execute(self, query: str, params: Any = None) -> int:
        """Run one statement; returns the number of rows it touched."""
        async with self.connection() as conn:
            cur = await conn.execute(query, params)
            return cur.rowcount
