"""When and how long to wait before calling again."""

from __future__ import annotations

import dataclasses
import random

import grpc

from mutate.client._errors import ApiError

# Codes worth another try with the very same request. RESOURCE_EXHAUSTED only
# counts when the server said how long to wait (its rate limiter does).
# DEADLINE_EXCEEDED too: the gateway answers it when its own call to another
# service timed out ("storage: Deadline Exceeded", e.g. while S3 restarts),
# and only idempotent calls are retried at all (see MutateClient._call).
RETRYABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with full jitter, in float seconds.

    `attempts` counts every try, the first included: 1 means no retry.
    """

    attempts: int = 4
    initial_backoff: float = 0.25
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoff delays must not be negative")

    def delay(self, retry: int, error: ApiError | None = None) -> float:
        """Seconds to wait before retry number `retry` (1 for the first)."""
        ceiling = min(
            self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1)
        )
        # Full jitter spreads out clients that failed together.
        wait = random.uniform(0, ceiling)
        if error is not None and error.retry_after is not None:
            wait = max(wait, error.retry_after)
        return wait

    def should_retry(self, error: ApiError, *, tries: int) -> bool:
        """Whether to try again after `error`, when `tries` calls were made."""
        if tries >= self.attempts:
            return False
        if error.code in RETRYABLE_CODES:
            return True
        return (
            error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            and error.retry_after is not None
        )


NO_RETRY = RetryPolicy(attempts=1)
DEFAULT_RETRY = RetryPolicy()
