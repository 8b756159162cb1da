"""Signing secrets at rest: sealed with AES-256-GCM when a key is set.

The notifier needs each organization's `whsec_…` secret in clear to sign, so
it cannot store a hash. With MUTATE_SECRET_ENCRYPTION_KEY set, secrets are
sealed with AES-256-GCM (the `cryptography` package), the organization id as
associated data so a sealed value copied to another organization's row does
not open. Several keys may be listed: the first seals, all open, which lets
an operator rotate the key. Without a key they are stored in clear and the
service warns at start-up.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mutate.common.errors import Internal
from mutate.common.settings import SettingsError

logger = logging.getLogger(__name__)

_PLAIN = "plain:"
_SEALED = "aesgcm:"
_NONCE_BYTES = 12


class SecretBox:
    """Seals and opens stored signing secrets."""

    def __init__(self, keys: list[bytes]) -> None:
        self._ciphers = [AESGCM(key) for key in keys]

    @classmethod
    def from_setting(cls, text: str) -> SecretBox:
        """Parse MUTATE_SECRET_ENCRYPTION_KEY (comma-separated base64 keys)."""
        keys = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            try:
                key = base64.b64decode(part, validate=True)
            except (binascii.Error, ValueError):
                key = b""
            if len(key) != 32:
                raise SettingsError(
                    "MUTATE_SECRET_ENCRYPTION_KEY must be base64 of 32 bytes"
                )
            keys.append(key)
        return cls(keys)

    @property
    def encrypts(self) -> bool:
        return bool(self._ciphers)

    def seal(self, secret: str, *, organization_id: str) -> str:
        if not self._ciphers:
            # TODO: stored in clear when no encryption key is configured;
            # production deployments should always set one.
            return _PLAIN + secret
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._ciphers[0].encrypt(
            nonce, secret.encode(), organization_id.encode()
        )
        return _SEALED + base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, stored: str, *, organization_id: str) -> str:
        if stored.startswith(_PLAIN):
            return stored[len(_PLAIN) :]
        if not stored.startswith(_SEALED):
            raise Internal("stored signing secret has an unknown format")
        if not self._ciphers:
            raise Internal(
                "signing secrets are encrypted but MUTATE_SECRET_ENCRYPTION_KEY "
                "is not set"
            )
        raw = base64.b64decode(stored[len(_SEALED) :])
        nonce, sealed = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
        for cipher in self._ciphers:
            try:
                return cipher.decrypt(nonce, sealed, organization_id.encode()).decode()
            except InvalidTag:
                continue
        raise Internal("no configured key opens this organization's signing secret")
