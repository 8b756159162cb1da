"""Settings of the REST front end, a mixin for the gateway's settings class.

The gateway's own settings class can inherit `RestSettings` (its fields are
keyword-only with defaults), or pass any object carrying these attribute names;
`RestSettings.from_object` picks them up and keeps the defaults for the rest.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mutate.common.settings import SettingsError, setting

# Defaults of `unit="ms"` fields are in the field's unit: seconds.
# 10 MB sync limit, base64 in JSON (4/3), plus room for the other fields.
_DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024 * 4 // 3 + 1024 * 1024


@dataclasses.dataclass(frozen=True, kw_only=True)
class RestSettings:
    """Limits and timings of the REST/JSON transcoder."""

    http_max_body_bytes: int = setting(
        "MUTATE_HTTP_MAX_BODY_BYTES",
        _DEFAULT_MAX_BODY_BYTES,
        help="Largest JSON request body; larger ones get 413. The default "
        "fits a 10 MB file as base64 plus the other fields.",
    )
    http_max_upload_bytes: int = setting(
        "MUTATE_HTTP_MAX_UPLOAD_BYTES",
        1024 * 1024 * 1024,
        help="Largest multipart/form-data body (POST /v1/jobs with a file "
        "part); larger ones get 413. The gateway's own size rules still apply.",
    )
    http_upload_chunk_bytes: int = setting(
        "MUTATE_HTTP_UPLOAD_CHUNK_BYTES",
        1024 * 1024,
        help="Size of the chunks a multipart file is streamed to UploadJob in.",
    )
    http_call_timeout: float = setting(
        "MUTATE_HTTP_CALL_TIMEOUT_MS",
        300.0,
        unit="ms",
        help="Deadline of one unary gRPC call made for a REST request, in ms.",
    )
    http_sse_keepalive: float = setting(
        "MUTATE_HTTP_SSE_KEEPALIVE_MS",
        15.0,
        unit="ms",
        help="Idle time after which a Server-Sent Events stream sends a "
        "comment line, so proxies keep it open, in ms.",
    )
    http_ready_timeout: float = setting(
        "MUTATE_HTTP_READY_TIMEOUT_MS",
        1.0,
        unit="ms",
        help="Deadline of the gRPC health check behind /readyz, in ms.",
    )

    def __post_init__(self) -> None:
        for name in (
            "http_max_body_bytes",
            "http_max_upload_bytes",
            "http_upload_chunk_bytes",
            "http_call_timeout",
            "http_sse_keepalive",
            "http_ready_timeout",
        ):
            if getattr(self, name) <= 0:
                env = _env_name(name)
                raise SettingsError(f"{env} must be positive")
        # Chain to the other mixins of a combined settings class.
        post_init = getattr(super(), "__post_init__", None)
        if post_init is not None:
            post_init()

    @classmethod
    def from_object(cls, source: object | None) -> RestSettings:
        """These settings, taken from any object with the same attribute names."""
        if source is None:
            return cls()
        # Built afresh even from a RestSettings subclass: a combined settings
        # class may not chain __post_init__, and this validates the values.
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if hasattr(source, f.name):
                values[f.name] = getattr(source, f.name)
        return cls(**values)


def _env_name(field_name: str) -> str:
    for f in dataclasses.fields(RestSettings):
        if f.name == field_name:
            return str(f.metadata.get("mutate_env", field_name))
    return field_name
