"""The CLI's settings: environment first, flags over it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from mutate.client._client import DEFAULT_ADDRESS
from mutate.client._errors import UsageError


@dataclasses.dataclass(frozen=True, kw_only=True)
class CliSettings:
    """Where the gateway is and how to talk to it (seconds in code)."""

    address: str = DEFAULT_ADDRESS
    api_key: str = dataclasses.field(default="", repr=False)
    timeout: float = 30.0
    retries: int = 4
    retry_backoff: float = 0.25

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CliSettings:
        """Read MUTATE_ADDRESS, MUTATE_API_KEY, MUTATE_TIMEOUT_MS,
        MUTATE_RETRIES and MUTATE_RETRY_BACKOFF_MS (ms, as every Mutate
        duration variable)."""
        return cls(
            address=env.get("MUTATE_ADDRESS", "").strip() or DEFAULT_ADDRESS,
            api_key=env.get("MUTATE_API_KEY", "").strip(),
            timeout=_number(env, "MUTATE_TIMEOUT_MS", 30000, minimum=1) / 1000,
            retries=int(_number(env, "MUTATE_RETRIES", 4, minimum=1)),
            retry_backoff=_number(env, "MUTATE_RETRY_BACKOFF_MS", 250, minimum=0)
            / 1000,
        )


# Every variable the CLI reads, for --help and docs/cli.md.
ENVIRONMENT = (
    (
        "MUTATE_ADDRESS",
        f"gateway host:port, or https://host (default {DEFAULT_ADDRESS})",
    ),
    ("MUTATE_API_KEY", "API key (mk_…); --api-key overrides it"),
    ("MUTATE_TIMEOUT_MS", "per-call timeout in ms (default 30000)"),
    ("MUTATE_RETRIES", "tries per call when the gateway is unavailable (default 4)"),
    ("MUTATE_RETRY_BACKOFF_MS", "first retry delay in ms, doubling (default 250)"),
)


def _number(
    env: Mapping[str, str], name: str, default: float, *, minimum: float
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise UsageError(f"{name}={raw!r} must be at least {minimum:g}")
    return value
