"""Page sizes and opaque page tokens (keyset cursors).

A token is URL-safe base64 of JSON holding the last row's sort key and a
fingerprint of the query's filters, so a token cannot be reused with other
filters. Anything that does not decode is INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from mutate.common.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def page_size(requested: int, *, field: str = "page_size") -> int:
    """The page size to use; an oversize or negative one is refused."""
    if requested < 0:
        raise InvalidArgument(
            f"{field} must not be negative", field_violations=[(field, "negative")]
        )
    if requested > MAX_PAGE_SIZE:
        raise InvalidArgument(
            f"{field} {requested} is over the maximum of {MAX_PAGE_SIZE}; "
            "ask for fewer and follow next_page_token",
            field_violations=[(field, f"at most {MAX_PAGE_SIZE}")],
        )
    return requested or DEFAULT_PAGE_SIZE


def _fingerprint(filters: Any) -> str:
    blob = json.dumps(filters, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def encode(cursor: list[Any], filters: Any) -> str:
    body = {"c": cursor, "f": _fingerprint(filters)}
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, filters: Any, *, arity: int) -> list[Any] | None:
    """The cursor in `token`, None for the first page."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        body = json.loads(base64.urlsafe_b64decode(padded.encode()))
        cursor = body["c"]
        fingerprint = body["f"]
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeError):
        raise InvalidArgument(
            "page_token is not a token this API returned; pass next_page_token "
            "from the previous page unchanged",
            field_violations=[("page_token", "malformed")],
        ) from None
    if not isinstance(cursor, list) or len(cursor) != arity:
        raise InvalidArgument(
            "page_token does not belong to this list",
            field_violations=[("page_token", "wrong list")],
        )
    if fingerprint != _fingerprint(filters):
        raise InvalidArgument(
            "page_token was issued for other filters; keep the filters the "
            "same while paging",
            field_violations=[("page_token", "filters changed")],
        )
    return cursor
