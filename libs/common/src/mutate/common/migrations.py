"""Plain-SQL schema migrations, applied in order under an advisory lock.

Each service that owns tables (gateway, notifier) keeps numbered files
`NNNN_name.sql` in its own package and its own PostgreSQL schema; `migrate`
applies the ones not yet recorded in `<schema>.schema_migrations`, each in its
own transaction. A session-level advisory lock per schema makes concurrent
start-ups (several replicas, the Helm hook) wait instead of racing.

Why not a migration framework: the services use psycopg directly with no ORM,
the migrations are forward-only SQL, and this is the whole of what
yoyo-migrations or alembic would do for us here.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import psycopg
from psycopg import sql

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(package: str, folder: str = "migrations") -> list[Migration]:
    """The numbered SQL files in `package/folder`, in order."""
    root: Traversable = resources.files(package) / folder
    found = []
    for entry in root.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), entry.name, entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration numbers in {package}/{folder}")
    return found


def migrate(conninfo: str, schema: str, migrations: list[Migration]) -> list[str]:
    """Apply pending migrations; returns the names applied."""
    lock_id = int.from_bytes(hashlib.sha256(schema.encode()).digest()[:8], "big")
    lock_id -= 1 << 63 if lock_id >= 1 << 63 else 0
    applied: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (lock_id,))
        try:
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
            )
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL,"
                    " checksum text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                ).format(sql.Identifier(schema))
            )
            rows = conn.execute(
                sql.SQL("SELECT version, checksum FROM {}.schema_migrations").format(
                    sql.Identifier(schema)
                )
            ).fetchall()
            done: dict[int, str] = dict(rows)
            for migration in migrations:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        # An edited migration would leave databases diverged.
                        logger.warning(
                            "applied migration changed since",
                            extra={"migration": migration.name},
                        )
                    continue
                with conn.transaction():
                    conn.execute(
                        sql.SQL("SET LOCAL search_path TO {}").format(
                            sql.Identifier(schema)
                        )
                    )
                    conn.execute(migration.sql)
                    conn.execute(
                        sql.SQL(
                            "INSERT INTO {}.schema_migrations (version, name, checksum)"
                            " VALUES (%s, %s, %s)"
                        ).format(sql.Identifier(schema)),
                        (migration.version, migration.name, migration.checksum),
                    )
                applied.append(migration.name)
                logger.info("migration applied", extra={"migration": migration.name})
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (lock_id,))
    return applied
