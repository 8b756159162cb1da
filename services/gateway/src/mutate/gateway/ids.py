"""Resource ids, API key secrets and their hashes.

Ids are a type prefix and random base32 (`job_…`, `cfg_…`): unguessable, and
free of dots so they can be NATS subject tokens. API keys are `mk_` plus 32
random bytes; being high-entropy random, a single SHA-256 is the right hash
(a slow password hash would add nothing but latency to every call).
"""

from __future__ import annotations

import base64
import hashlib
import secrets

ORGANIZATION = "org"
API_KEY = "key"
CONFIGURATION = "cfg"
JOB = "job"
UPLOAD = "upl"

KEY_PREFIX = "mk_"
# Characters of the secret kept for display, `mk_` included.
SHOWN_PREFIX_LENGTH = 10


def new_id(kind: str) -> str:
    """`{kind}_` and 20 lowercase base32 characters (100 random bits)."""
    raw = base64.b32encode(secrets.token_bytes(15)).decode().lower()
    return f"{kind}_{raw[:20]}"


def looks_like(kind: str, value: str) -> bool:
    return value.startswith(f"{kind}_") and value.replace("_", "").isalnum()


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def shown_prefix(secret: str) -> str:
    return secret[:SHOWN_PREFIX_LENGTH]
