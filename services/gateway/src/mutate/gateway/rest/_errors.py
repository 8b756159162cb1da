"""REST errors: the `{code, message, details}` body and the HTTP status table.

Every failure a REST client sees goes through `RestError`, whether it comes
from the transcoder itself (a bad query parameter, an unknown path) or from the
gRPC call (`from_rpc_error`, the one translation point for `grpc.RpcError`).
The HTTP status follows grpc-gateway's table (runtime/errors.go,
HTTPStatusFromCode); `details` are the google.rpc.Status details of the
`grpc-status-details-bin` trailer in proto3 JSON, each with its "@type".
"""

from __future__ import annotations

import base64
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import (
    code_pb2,
    error_details_pb2,
    status_pb2,
)

logger = logging.getLogger(__name__)

STATUS_DETAILS_KEY = "grpc-status-details-bin"

_TYPE_PREFIX = "type.googleapis.com/"
BAD_REQUEST_TYPE = _TYPE_PREFIX + error_details_pb2.BadRequest.DESCRIPTOR.full_name
RETRY_INFO_TYPE = _TYPE_PREFIX + error_details_pb2.RetryInfo.DESCRIPTOR.full_name
ERROR_INFO_TYPE = _TYPE_PREFIX + error_details_pb2.ErrorInfo.DESCRIPTOR.full_name

# grpc-gateway's HTTPStatusFromCode.
HTTP_STATUS_BY_CODE: Mapping[int, int] = {
    code_pb2.OK: 200,
    code_pb2.CANCELLED: 499,
    code_pb2.UNKNOWN: 500,
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.DEADLINE_EXCEEDED: 504,
    code_pb2.NOT_FOUND: 404,
    code_pb2.ALREADY_EXISTS: 409,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.UNAUTHENTICATED: 401,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.FAILED_PRECONDITION: 400,
    code_pb2.ABORTED: 409,
    code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNIMPLEMENTED: 501,
    code_pb2.INTERNAL: 500,
    code_pb2.UNAVAILABLE: 503,
    code_pb2.DATA_LOSS: 500,
}

# The reason of every refusal of an input file over a size limit; defined
# here, as this package imports nothing of the rest of the gateway, and used
# by the gateway's own refusals (public_errors).
FILE_TOO_LARGE = "FILE_TOO_LARGE"

# ErrorInfo reasons that are more precise than their gRPC code's status:
# an input over the gateway's size limit (INVALID_ARGUMENT, so 400 by the
# table) is HTTP's own 413 Payload Too Large.
HTTP_STATUS_BY_REASON: Mapping[str, int] = {FILE_TOO_LARGE: 413}

# Statuses whose RetryInfo detail also becomes a Retry-After header.
_RETRY_AFTER_STATUSES = frozenset({429, 503})


class RestError(Exception):
    """A failure to answer with the error body instead of a response."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        details: Sequence[Mapping[str, Any]] = (),
        http_status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = list(details)
        self.http_status = http_status or HTTP_STATUS_BY_CODE.get(code, 500)
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


def bad_request(message: str, *, field: str, description: str = "") -> RestError:
    """INVALID_ARGUMENT with a BadRequest detail naming `field`."""
    violation = {"field": field, "description": description or message}
    detail = {"@type": BAD_REQUEST_TYPE, "fieldViolations": [violation]}
    return RestError(code_pb2.INVALID_ARGUMENT, message, details=[detail])


def not_found_route(method: str, path: str) -> RestError:
    return RestError(code_pb2.NOT_FOUND, f"no such resource: {method} {path}")


def method_not_allowed(method: str, path: str, allowed: Iterable[str]) -> RestError:
    allow = ", ".join(sorted(set(allowed)))
    return RestError(
        code_pb2.UNIMPLEMENTED,
        f"method {method} is not allowed on {path}; allowed: {allow}",
        http_status=405,
        headers={"allow": allow},
    )


def payload_too_large(limit: int, *, advice: str = "", reason: str = "") -> RestError:
    """A body over `limit`; `advice` says what to send instead, `reason` goes
    in an ErrorInfo detail as the gRPC server would put it."""
    message = f"request body is larger than the limit of {limit} bytes"
    details = []
    if reason:
        details.append({"@type": ERROR_INFO_TYPE, "reason": reason, "domain": "mutate"})
    return RestError(
        code_pb2.RESOURCE_EXHAUSTED,
        f"{message}; {advice}" if advice else message,
        details=details,
        http_status=413,
    )


def inline_file_too_large(limit: int, *, path: str, file_part: str) -> RestError:
    """A JSON job body over `limit` because of its inline file: what to do instead.

    The code stays the one of every body over the limit; the reason is the one
    a client already handles for a file over the gateway's input limit.
    """
    return payload_too_large(
        limit,
        advice=f"send larger files as multipart/form-data with the file in a "
        f"part named {file_part!r} (POST {path}), or through a presigned upload "
        "(POST /v1/uploads, PUT the file to its url, then create the job with "
        "uploadId set to its id)",
        reason=FILE_TOO_LARGE,
    )


def from_rpc_error(exc: grpc.RpcError) -> RestError:
    """Translate a failed gRPC call into the error a REST client sees."""
    code_enum = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    code = int(code_enum.value[0])
    message = (exc.details() if hasattr(exc, "details") else "") or ""
    details: list[dict[str, Any]] = []
    trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            details = _decode_details(value)
    error = RestError(
        code,
        message or code_enum.name.lower(),
        details=details,
        http_status=_http_status_of_reason(details),
    )
    retry_after = _retry_after_seconds(details)
    if retry_after is not None and error.http_status in _RETRY_AFTER_STATUSES:
        error.headers["retry-after"] = str(retry_after)
    return error


def _decode_details(raw: bytes) -> list[dict[str, Any]]:
    try:
        status = status_pb2.Status.FromString(raw)
    except Exception:  # noqa: BLE001 - a malformed trailer must not hide the error
        logger.warning("undecodable grpc-status-details-bin trailer")
        return []
    out: list[dict[str, Any]] = []
    for any_detail in status.details:
        try:
            out.append(json_format.MessageToDict(any_detail))
        except (json_format.Error, TypeError, KeyError):
            # A detail type this process does not know: pass it on opaque.
            out.append(
                {
                    "@type": any_detail.type_url,
                    "value": base64.b64encode(any_detail.value).decode(),
                }
            )
    return out


def _http_status_of_reason(details: Sequence[Mapping[str, Any]]) -> int | None:
    for detail in details:
        if detail.get("@type") == ERROR_INFO_TYPE:
            status = HTTP_STATUS_BY_REASON.get(detail.get("reason", ""))
            if status is not None:
                return status
    return None


def _retry_after_seconds(details: Sequence[Mapping[str, Any]]) -> int | None:
    for detail in details:
        if detail.get("@type") != RETRY_INFO_TYPE:
            continue
        delay = detail.get("retryDelay")
        if not isinstance(delay, str) or not delay.endswith("s"):
            return None
        try:
            return max(0, math.ceil(float(delay[:-1])))
        except ValueError:
            return None
    return None
