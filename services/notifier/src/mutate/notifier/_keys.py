"""Each organization's signing secrets: create, rotate, and the keys to sign.

An organization signs with its own `whsec_…` secret; after a rotation the
previous one signs too until its overlap ends, so receivers that still hold
the old secret keep verifying. Organizations without a secret of their own
sign with WEBHOOK_SECRET (installations without per-tenant secrets).
"""

from __future__ import annotations

import dataclasses
import logging
import time

from mutate.common import webhooks
from mutate.notifier._secrets import SecretBox
from mutate.notifier._store import DeliveryStore, SecretRow

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class IssuedSecret:
    """A secret in clear, as returned once by create and rotate."""

    secret: str
    row: SecretRow


class SigningKeys:
    """Reads, creates and rotates secrets; caches keys for `cache_ttl` s."""

    def __init__(
        self,
        *,
        store: DeliveryStore,
        box: SecretBox,
        fallback_secret: str,
        cache_ttl: float,
    ) -> None:
        self._store = store
        self._box = box
        self._fallback = (
            [webhooks.secret_key(fallback_secret)] if fallback_secret else []
        )
        self._cache_ttl = cache_ttl
        self._cache: dict[str, tuple[float, list[bytes]]] = {}

    async def keys(self, organization_id: str) -> list[bytes]:
        """HMAC keys to sign with, newest first; empty when there are none."""
        cached = self._cache.get(organization_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        row = await self._store.secret(organization_id)
        if row is None:
            keys = list(self._fallback)
        else:
            keys = [self._key(row.secret, organization_id)]
            if row.previous_secret:
                keys.append(self._key(row.previous_secret, organization_id))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[organization_id] = (time.monotonic() + self._cache_ttl, keys)
        return keys

    def _key(self, stored: str, organization_id: str) -> bytes:
        secret = self._box.open(stored, organization_id=organization_id)
        return webhooks.secret_key(secret)

    async def create(self, organization_id: str) -> IssuedSecret:
        """The organization's secret, made now unless it has one already.

        Idempotent, so a gateway that retries a timed-out call still gets the
        secret it shows the user.
        """
        secret = webhooks.generate_secret()
        sealed = self._box.seal(secret, organization_id=organization_id)
        row = await self._store.create_secret(organization_id, sealed)
        self._cache.pop(organization_id, None)
        current = self._box.open(row.secret, organization_id=organization_id)
        return IssuedSecret(current, row)

    async def rotate(self, organization_id: str, *, overlap: float) -> IssuedSecret:
        """A new secret; the current one keeps signing for `overlap` s."""
        secret = webhooks.generate_secret()
        sealed = self._box.seal(secret, organization_id=organization_id)
        row = await self._store.rotate_secret(organization_id, sealed, overlap=overlap)
        self._cache.pop(organization_id, None)
        logger.info(
            "signing secret rotated",
            extra={"organization_id": organization_id, "overlap_s": overlap},
        )
        return IssuedSecret(secret, row)
