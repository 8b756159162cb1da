"""Per-organization request rate limit: a token bucket per organization.

TODO: the buckets live in this replica's memory, so N replicas allow N times
the rate; a shared limit needs a store all replicas see (PostgreSQL or a NATS
key-value bucket).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from mutate.common.errors import ResourceExhausted


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """`rate` tokens a second up to `burst`; rate 0 turns the limit off."""

    def __init__(self, *, rate: float, burst: int, max_buckets: int = 100_000):
        self._rate = rate
        self._burst = float(max(burst, 1))
        self._buckets: dict[str, _Bucket] = {}
        self._max_buckets = max_buckets

    def check(self, organization_id: str) -> None:
        """Take a token or raise ResourceExhausted with the wait."""
        if self._rate <= 0:
            return
        now = time.monotonic()
        bucket = self._buckets.get(organization_id)
        if bucket is None:
            if len(self._buckets) >= self._max_buckets:
                # Full buckets carry no information; dropping them is free.
                self._buckets.clear()
            bucket = self._buckets[organization_id] = _Bucket(self._burst, now)
        bucket.tokens = min(
            self._burst, bucket.tokens + (now - bucket.stamp) * self._rate
        )
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        wait = (1.0 - bucket.tokens) / self._rate
        raise ResourceExhausted(
            f"too many requests for this organization; retry after {wait:.2f}s",
            retry_after=max(wait, 0.001),
            reason="RATE_LIMITED",
        )
