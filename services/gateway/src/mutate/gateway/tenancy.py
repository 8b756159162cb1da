"""Organizations, API keys and who is calling.

Every call carries a key (`authorization: Bearer mk_…` or `x-api-key: mk_…`
in gRPC metadata; the REST layer forwards the same headers). `Authenticator`
turns it into a `Principal` — the organization every read and write is scoped
to — and applies the organization's rate limit.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import time
from collections.abc import Iterable

import psycopg

from mutate.common.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from mutate.gateway import ids, pagination
from mutate.gateway.db import Database, Row
from mutate.gateway.ratelimit import RateLimiter

logger = logging.getLogger(__name__)

OPERATOR_SCOPE = "operator"
KNOWN_SCOPES = frozenset({OPERATOR_SCOPE})
MAX_NAME_LENGTH = 200

_MISSING_KEY = "missing API key: send `authorization: Bearer mk_…` or `x-api-key: mk_…`"
_BAD_KEY = "API key is not valid (unknown or revoked)"


@dataclasses.dataclass(frozen=True)
class Principal:
    """The caller: one organization's API key."""

    organization_id: str
    key_id: str
    scopes: frozenset[str] = frozenset()

    @property
    def is_operator(self) -> bool:
        return OPERATOR_SCOPE in self.scopes


def check_name(name: str, *, field: str = "name") -> str:
    name = name.strip()
    if not name:
        raise InvalidArgument(
            f"{field} is required", field_violations=[(field, "required")]
        )
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument(
            f"{field} is longer than {MAX_NAME_LENGTH} characters",
            field_violations=[(field, "too long")],
        )
    return name


class TenancyStore:
    """SQL for organizations and API keys."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_organization(self, name: str) -> Row:
        name = check_name(name)
        try:
            row = await self._db.fetchone(
                "INSERT INTO organizations (id, name) VALUES (%s, %s)"
                " RETURNING id, name, created_at",
                (ids.new_id(ids.ORGANIZATION), name),
            )
        except psycopg.errors.UniqueViolation:
            raise AlreadyExists(f"an organization named {name!r} exists") from None
        assert row is not None
        return row

    async def find_organization(self, *, name: str = "", id: str = "") -> Row | None:
        return await self._db.fetchone(
            "SELECT id, name, created_at FROM organizations"
            " WHERE (%(id)s <> '' AND id = %(id)s)"
            " OR (%(name)s <> '' AND name = %(name)s)",
            {"id": id, "name": name},
        )

    async def create_api_key(
        self, organization_id: str, name: str, scopes: Iterable[str] = ()
    ) -> tuple[Row, str]:
        """A new key; returns its row and the secret, which is not stored."""
        name = check_name(name)
        scopes = sorted(set(scopes))
        unknown = set(scopes) - KNOWN_SCOPES
        if unknown:
            raise InvalidArgument(f"unknown scopes: {', '.join(sorted(unknown))}")
        secret = ids.new_api_key()
        try:
            row = await self._db.fetchone(
                "INSERT INTO api_keys (id, organization_id, name, prefix,"
                " key_hash, scopes) VALUES (%s, %s, %s, %s, %s, %s)"
                " RETURNING *",
                (
                    ids.new_id(ids.API_KEY),
                    organization_id,
                    name,
                    ids.shown_prefix(secret),
                    ids.hash_api_key(secret),
                    scopes,
                ),
            )
        except psycopg.errors.ForeignKeyViolation:
            raise NotFound(f"organization {organization_id} not found") from None
        assert row is not None
        return row, secret

    async def list_api_keys(
        self, organization_id: str, *, page_size: int, page_token: str
    ) -> tuple[list[Row], str]:
        size = pagination.page_size(page_size)
        filters = {"list": "api_keys", "org": organization_id}
        cursor = pagination.decode(page_token, filters, arity=2)
        rows = await self._db.fetchall(
            "SELECT * FROM api_keys WHERE organization_id = %(org)s"
            " AND (%(after)s::timestamptz IS NULL"
            "      OR (created_at, id) < (%(after)s::timestamptz, %(after_id)s))"
            " ORDER BY created_at DESC, id DESC LIMIT %(limit)s",
            {
                "org": organization_id,
                "after": cursor[0] if cursor else None,
                "after_id": cursor[1] if cursor else "",
                "limit": size + 1,
            },
        )
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            last = rows[-1]
            token = pagination.encode(
                [last["created_at"].isoformat(), last["id"]], filters
            )
        return rows, token

    async def revoke_api_key(self, organization_id: str, key_id: str) -> Row:
        row = await self._db.fetchone(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())"
            " WHERE id = %s AND organization_id = %s RETURNING *",
            (key_id, organization_id),
        )
        if row is None:
            raise NotFound(f"API key {key_id} not found")
        return row

    async def use_api_key(self, key_hash: bytes) -> Row | None:
        """The live key with this hash, marking it used now."""
        return await self._db.fetchone(
            "UPDATE api_keys SET last_used_at = now()"
            " WHERE key_hash = %s AND revoked_at IS NULL"
            " RETURNING id, organization_id, scopes, key_hash",
            (key_hash,),
        )


def _metadata_value(metadata: Iterable[tuple[str, str | bytes]], name: str) -> str:
    for key, value in metadata:
        if key.lower() == name:
            return value.decode() if isinstance(value, bytes) else value
    return ""


def key_from_metadata(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    """The API key a call carries, or "" when it carries none."""
    metadata = list(metadata)
    authorization = _metadata_value(metadata, "authorization").strip()
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise Unauthenticated(
                "authorization must be `Bearer mk_…`", reason="BAD_AUTHORIZATION"
            )
        return credentials.strip()
    return _metadata_value(metadata, "x-api-key").strip()


class Authenticator:
    """Resolves API keys to principals, with a short per-replica cache."""

    def __init__(
        self, store: TenancyStore, *, cache_ttl: float, limiter: RateLimiter
    ) -> None:
        self._store = store
        self._cache_ttl = cache_ttl
        self._limiter = limiter
        self._cache: dict[bytes, tuple[Principal, float]] = {}

    async def authenticate(
        self, metadata: Iterable[tuple[str, str | bytes]]
    ) -> Principal:
        secret = key_from_metadata(metadata)
        if not secret:
            raise Unauthenticated(_MISSING_KEY, reason="MISSING_API_KEY")
        principal = await self._resolve(secret)
        self._limiter.check(principal.organization_id)
        return principal

    async def _resolve(self, secret: str) -> Principal:
        if not secret.startswith(ids.KEY_PREFIX):
            raise Unauthenticated(_BAD_KEY, reason="INVALID_API_KEY")
        digest = ids.hash_api_key(secret)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        row = await self._store.use_api_key(digest)
        if row is None or not hmac.compare_digest(bytes(row["key_hash"]), digest):
            self._cache.pop(digest, None)
            raise Unauthenticated(_BAD_KEY, reason="INVALID_API_KEY")
        principal = Principal(
            organization_id=row["organization_id"],
            key_id=row["id"],
            scopes=frozenset(row["scopes"] or ()),
        )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (principal, now + self._cache_ttl)
        return principal

    def forget(self, key_id: str) -> None:
        """Drop a revoked key from this replica's cache at once."""
        for digest, (principal, _) in list(self._cache.items()):
            if principal.key_id == key_id:
                del self._cache[digest]
