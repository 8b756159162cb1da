"""Configurations and their versions, scoped to an organization.

A configuration row holds the current version number and the name (for
search); every version's content is kept as its proto3 JSON in
`configuration_versions` and stays readable. Updates lock the row, so an
`expected_version` check and the version bump cannot race.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from google.protobuf import field_mask_pb2
from psycopg.types.json import Jsonb

from mutate.common.errors import Conflict, InvalidArgument, NotFound
from mutate.gateway import convert, ids, pagination
from mutate.gateway.db import Database, Row
from mutate.v1 import configuration_pb2

logger = logging.getLogger(__name__)

Configuration = configuration_pb2.Configuration
# Checks a configuration before it is saved; raises InvalidArgument.
Validator = Callable[[Configuration], Awaitable[Configuration]]

OUTPUT_ONLY_FIELDS = ("id", "version", "create_time", "update_time")
WRITABLE_FIELDS = frozenset(
    f.name for f in Configuration.DESCRIPTOR.fields if f.name not in OUTPUT_ONLY_FIELDS
)


def spec_of(configuration: Configuration) -> Configuration:
    """The stored content: the message without its output-only fields."""
    spec = Configuration()
    spec.CopyFrom(configuration)
    for name in OUTPUT_ONLY_FIELDS:
        spec.ClearField(name)  # type: ignore[arg-type]
    return spec


def _snake(path: str) -> str:
    out = []
    for char in path:
        if char.isupper():
            out.append("_" + char.lower())
        else:
            out.append(char)
    return "".join(out)


def apply_mask(
    current: Configuration, patch: Configuration, mask: field_mask_pb2.FieldMask
) -> Configuration:
    """`current` with the fields named in `mask` taken from `patch`."""
    paths = [_snake(p) for p in mask.paths] or sorted(WRITABLE_FIELDS)
    for path in paths:
        top = path.split(".", 1)[0]
        if top in OUTPUT_ONLY_FIELDS:
            raise InvalidArgument(
                f"update_mask path {path!r} names an output-only field",
                field_violations=[("update_mask", f"{path}: output only")],
            )
        if top not in WRITABLE_FIELDS:
            writable = ", ".join(sorted(WRITABLE_FIELDS))
            raise InvalidArgument(
                f"update_mask path {path!r} is not a Configuration field; "
                f"use one of {writable}",
                field_violations=[("update_mask", f"{path}: unknown field")],
            )
    normalized = field_mask_pb2.FieldMask(paths=paths)
    if not normalized.IsValidForDescriptor(Configuration.DESCRIPTOR):
        raise InvalidArgument(
            f"update_mask {', '.join(paths)} names fields Configuration does not have",
            field_violations=[("update_mask", "unknown nested field")],
        )
    merged = Configuration()
    merged.CopyFrom(current)
    normalized.MergeMessage(
        patch, merged, replace_message_field=True, replace_repeated_field=True
    )
    return merged


class ConfigurationStore:
    """SQL for configurations; every method takes the caller's organization."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, organization_id: str, spec: Configuration) -> Configuration:
        configuration_id = ids.new_id(ids.CONFIGURATION)
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                "INSERT INTO configurations (id, organization_id, name,"
                " current_version) VALUES (%s, %s, %s, 1)"
                " RETURNING created_at, updated_at",
                (configuration_id, organization_id, spec.name),
            )
            row = await cur.fetchone()
            assert row is not None
            await conn.execute(
                "INSERT INTO configuration_versions (configuration_id, version,"
                " spec, created_at) VALUES (%s, 1, %s, %s)",
                (configuration_id, Jsonb(convert.to_json(spec)), row["created_at"]),
            )
        return convert.configuration(
            convert.to_json(spec),
            id=configuration_id,
            version=1,
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    async def get(
        self, organization_id: str, configuration_id: str, version: int = 0
    ) -> Configuration:
        """The current version, or `version` when it is not 0."""
        if version < 0:
            raise InvalidArgument(
                "version must not be negative", field_violations=[("version", "< 0")]
            )
        row = await self._db.fetchone(
            "SELECT c.id, c.current_version, c.created_at, v.version, v.spec,"
            " v.created_at AS version_created_at"
            " FROM configurations c JOIN configuration_versions v"
            "   ON v.configuration_id = c.id"
            "  AND v.version = CASE WHEN %(version)s = 0 THEN c.current_version"
            "                       ELSE %(version)s END"
            " WHERE c.id = %(id)s AND c.organization_id = %(org)s"
            "   AND c.deleted_at IS NULL",
            {"id": configuration_id, "org": organization_id, "version": version},
        )
        if row is None:
            if version:
                await self.get(organization_id, configuration_id)
                raise NotFound(
                    f"configuration {configuration_id} has no version {version}"
                )
            raise NotFound(
                f"configuration {configuration_id} not found",
                reason="CONFIGURATION_NOT_FOUND",
            )
        return self._message(row)

    async def get_any(self, configuration_id: str, version: int) -> Configuration:
        """One version, even of a deleted configuration (for a job's retry)."""
        row = await self._db.fetchone(
            "SELECT c.id, c.created_at, v.version, v.spec,"
            " v.created_at AS version_created_at"
            " FROM configurations c JOIN configuration_versions v"
            "   ON v.configuration_id = c.id AND v.version = %s"
            " WHERE c.id = %s",
            (version, configuration_id),
        )
        if row is None:
            raise NotFound(f"configuration {configuration_id} v{version} not found")
        return self._message(row)

    @staticmethod
    def _message(row: Row) -> Configuration:
        return convert.configuration(
            row["spec"],
            id=row["id"],
            version=row["version"],
            created_at=row["created_at"],
            updated_at=row["version_created_at"],
        )

    async def list_configurations(
        self,
        organization_id: str,
        *,
        page_size: int,
        page_token: str,
        name_contains: str = "",
    ) -> tuple[list[Configuration], str]:
        size = pagination.page_size(page_size)
        filters = {
            "list": "configurations",
            "org": organization_id,
            "name": name_contains,
        }
        cursor = pagination.decode(page_token, filters, arity=2)
        pattern = "%" + _escape_like(name_contains) + "%" if name_contains else ""
        rows = await self._db.fetchall(
            "SELECT c.id, c.created_at, v.version, v.spec,"
            " v.created_at AS version_created_at"
            " FROM configurations c JOIN configuration_versions v"
            "   ON v.configuration_id = c.id AND v.version = c.current_version"
            " WHERE c.organization_id = %(org)s AND c.deleted_at IS NULL"
            "   AND (%(pattern)s = '' OR c.name ILIKE %(pattern)s)"
            "   AND (%(after)s::timestamptz IS NULL"
            "        OR (c.created_at, c.id) < (%(after)s::timestamptz, %(after_id)s))"
            " ORDER BY c.created_at DESC, c.id DESC LIMIT %(limit)s",
            {
                "org": organization_id,
                "pattern": pattern,
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
        return [self._message(r) for r in rows], token

    async def update(
        self,
        organization_id: str,
        patch: Configuration,
        mask: field_mask_pb2.FieldMask,
        *,
        expected_version: int,
        validate: Validator,
    ) -> Configuration:
        configuration_id = patch.id
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                "SELECT c.id, c.current_version, c.created_at, v.spec"
                " FROM configurations c JOIN configuration_versions v"
                "   ON v.configuration_id = c.id AND v.version = c.current_version"
                " WHERE c.id = %s AND c.organization_id = %s"
                "   AND c.deleted_at IS NULL FOR UPDATE OF c",
                (configuration_id, organization_id),
            )
            row = await cur.fetchone()
            if row is None:
                raise NotFound(
                    f"configuration {configuration_id} not found",
                    reason="CONFIGURATION_NOT_FOUND",
                )
            current_version = row["current_version"]
            if expected_version and expected_version != current_version:
                raise Conflict(
                    f"configuration {configuration_id} is at version "
                    f"{current_version}, not {expected_version}: someone else "
                    "changed it; read it again and re-apply your change",
                    reason="VERSION_MISMATCH",
                )
            current = Configuration()
            convert.from_json(row["spec"], current)
            merged = await validate(apply_mask(current, spec_of(patch), mask))
            version = current_version + 1
            cur = await conn.execute(
                "UPDATE configurations SET current_version = %s, name = %s,"
                " updated_at = now() WHERE id = %s RETURNING updated_at",
                (version, merged.name, configuration_id),
            )
            updated = await cur.fetchone()
            assert updated is not None
            await conn.execute(
                "INSERT INTO configuration_versions (configuration_id, version,"
                " spec, created_at) VALUES (%s, %s, %s, %s)",
                (
                    configuration_id,
                    version,
                    Jsonb(convert.to_json(merged)),
                    updated["updated_at"],
                ),
            )
        return convert.configuration(
            convert.to_json(merged),
            id=configuration_id,
            version=version,
            created_at=row["created_at"],
            updated_at=updated["updated_at"],
        )

    async def delete(self, organization_id: str, configuration_id: str) -> None:
        touched = await self._db.execute(
            "UPDATE configurations SET deleted_at = now()"
            " WHERE id = %s AND organization_id = %s AND deleted_at IS NULL",
            (configuration_id, organization_id),
        )
        if not touched:
            raise NotFound(
                f"configuration {configuration_id} not found",
                reason="CONFIGURATION_NOT_FOUND",
            )

    async def versions(
        self,
        organization_id: str,
        configuration_id: str,
        *,
        page_size: int,
        page_token: str,
    ) -> tuple[list[Configuration], str]:
        size = pagination.page_size(page_size)
        filters = {"list": "versions", "org": organization_id, "id": configuration_id}
        cursor = pagination.decode(page_token, filters, arity=1)
        # Checks existence and ownership (NOT_FOUND otherwise).
        await self.get(organization_id, configuration_id)
        rows = await self._db.fetchall(
            "SELECT c.id, c.created_at, v.version, v.spec,"
            " v.created_at AS version_created_at"
            " FROM configurations c JOIN configuration_versions v"
            "   ON v.configuration_id = c.id"
            " WHERE c.id = %(id)s AND c.organization_id = %(org)s"
            "   AND (%(before)s::bigint IS NULL OR v.version < %(before)s::bigint)"
            " ORDER BY v.version DESC LIMIT %(limit)s",
            {
                "id": configuration_id,
                "org": organization_id,
                "before": cursor[0] if cursor else None,
                "limit": size + 1,
            },
        )
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = pagination.encode([rows[-1]["version"]], filters)
        return [self._message(r) for r in rows], token


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
