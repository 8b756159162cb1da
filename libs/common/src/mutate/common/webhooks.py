"""Standard Webhooks signing, and the verification helper for receivers.

Mutate signs every webhook the way the Standard Webhooks specification
(standardwebhooks.com) says, so its reference libraries verify our messages
unchanged:

- `webhook-id`: the message id, the same on every try of one event;
- `webhook-timestamp`: Unix seconds when this try was signed;
- `webhook-signature`: space-separated `v1,<base64 HMAC-SHA256>` entries, the
  HMAC of `{id}.{timestamp}.{body}` under the secret's key. After a secret
  rotation two entries are sent (new key first) for an overlap period.

A secret is `whsec_` followed by the base64 of its key bytes.

Receivers (see docs/webhooks.md)::

    from mutate.common import webhooks

    payload = webhooks.verify(secret, request.headers, body)

`verify` raises `WebhookVerificationError` on a missing header, a timestamp
outside the tolerance (replays), or no matching signature; comparisons are
constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets as _secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
# A receiver answering with this header set to `true` stops further tries of
# that one message (Mutate's extension; 410 Gone does the same).
STOP_HEADER = "Mutate-Webhook-Stop"

DEFAULT_TOLERANCE = 300.0
"""Seconds a timestamp may be off in either direction (as the reference)."""

_KEY_BYTES = 32


class WebhookVerificationError(ValueError):
    """The message is not authentic, or too old or too new."""


def generate_secret() -> str:
    """A fresh `whsec_…` secret with a 256-bit key."""
    key = _secrets.token_bytes(_KEY_BYTES)
    return SECRET_PREFIX + base64.b64encode(key).decode("ascii")


def secret_key(secret: str | bytes) -> bytes:
    """The HMAC key of a `whsec_…` secret (raw bytes pass through).

    A string without the prefix is read as base64 as well, as the reference
    library does.
    """
    if isinstance(secret, bytes):
        key = secret
    else:
        text = secret.removeprefix(SECRET_PREFIX)
        try:
            key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("a webhook secret must be whsec_<base64>") from exc
    if not key:
        raise ValueError("a webhook secret may not be empty")
    return key


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` entry for `body` signed with `key`."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def sign(
    keys: Sequence[bytes], msg_id: str, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers, one signature per key."""
    if not keys:
        raise ValueError("at least one signing key is needed")
    when = int(time.time()) if timestamp is None else timestamp
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(when),
        SIGNATURE_HEADER: " ".join(signature(k, msg_id, when, body) for k in keys),
    }


def verify(
    secret: str | bytes | Iterable[str | bytes],
    headers: Mapping[str, str],
    body: bytes | str,
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> Any:
    """Check a received webhook and return its parsed JSON body.

    `secret` may be several secrets (a receiver in the middle of a rotation
    of its own); any one matching signature passes. `headers` is matched
    case-insensitively. Raises WebhookVerificationError.
    """
    if isinstance(secret, (str, bytes)):
        keys = [secret_key(secret)]
    else:
        keys = [secret_key(s) for s in secret]
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get(ID_HEADER, "")
    stamp = lowered.get(TIMESTAMP_HEADER, "")
    signatures = lowered.get(SIGNATURE_HEADER, "")
    if not (msg_id and stamp and signatures):
        raise WebhookVerificationError("missing webhook-id, -timestamp or -signature")
    timestamp = _check_timestamp(stamp, tolerance, time.time() if now is None else now)

    raw = body.encode() if isinstance(body, str) else body
    expected = [
        base64.b64decode(signature(k, msg_id, timestamp, raw).split(",", 1)[1])
        for k in keys
    ]
    for entry in signatures.split(" "):
        version, _, encoded = entry.partition(",")
        if version != SIGNATURE_VERSION or not encoded:
            continue
        try:
            given = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        # No early exit on a match position: compare_digest on every key.
        if any(hmac.compare_digest(given, want) for want in expected):
            return json.loads(raw)
    raise WebhookVerificationError("no matching signature")


def _check_timestamp(stamp: str, tolerance: float, now: float) -> int:
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not a number") from None
    if timestamp < now - tolerance:
        raise WebhookVerificationError("message timestamp too old")
    if timestamp > now + tolerance:
        raise WebhookVerificationError("message timestamp too new")
    return timestamp


__all__ = [
    "DEFAULT_TOLERANCE",
    "ID_HEADER",
    "SECRET_PREFIX",
    "SIGNATURE_HEADER",
    "STOP_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookVerificationError",
    "generate_secret",
    "secret_key",
    "sign",
    "signature",
    "verify",
]
