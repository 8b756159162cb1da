"""The client's error tree, and the one place gRPC errors are translated.

    ClientError
    ├── UsageError            the caller's input is wrong before any call
    │   └── ConfigurationFileError   a configuration JSON file is malformed
    ├── TransferError         a presigned upload or download failed
    └── ApiError              the gateway answered with a non-OK status
        ├── NotFoundError         NOT_FOUND
        ├── AuthError             UNAUTHENTICATED, PERMISSION_DENIED
        └── UnavailableError      UNAVAILABLE, DEADLINE_EXCEEDED,
                                  RESOURCE_EXHAUSTED (after the retries)

`ApiError` keeps the gRPC code, the server's message and the details the
gateway attaches (google.rpc BadRequest field violations, ErrorInfo reason,
RetryInfo delay).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"


class ClientError(Exception):
    """Base of every error the Mutate client raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(ClientError):
    """The caller's input is wrong; no call was made."""


class ConfigurationFileError(UsageError):
    """A configuration JSON file cannot be read as a Configuration."""


class TransferError(ClientError):
    """An HTTP upload to or download from a presigned URL failed."""


class ApiError(ClientError):
    """The gateway answered a call with a non-OK status."""

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode,
        reason: str = "",
        field_violations: tuple[tuple[str, str], ...] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        # A stable machine-readable reason, e.g. "JOB_NOT_COMPLETED".
        self.reason = reason
        # (field path, what is wrong with it) pairs.
        self.field_violations = field_violations
        # Seconds the server asked us to wait before trying again.
        self.retry_after = retry_after

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        if self.reason:
            text += f" [{self.reason}]"
        for field, description in self.field_violations:
            text += f"\n  {field}: {description}"
        return text


class NotFoundError(ApiError):
    """NOT_FOUND: no such resource in the caller's organization."""


class AuthError(ApiError):
    """UNAUTHENTICATED or PERMISSION_DENIED: the API key is wrong or weak."""


class UnavailableError(ApiError):
    """The gateway could not be reached or answered in time, after retries."""


_BY_CODE: dict[grpc.StatusCode, type[ApiError]] = {
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.UNAUTHENTICATED: AuthError,
    grpc.StatusCode.PERMISSION_DENIED: AuthError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: UnavailableError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: UnavailableError,
}


def from_rpc_error(exc: grpc.RpcError) -> ApiError:
    """The client error for a failed call, with the status details decoded."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    message = (exc.details() if isinstance(exc, grpc.Call) else "") or ""
    reason = ""
    violations: list[tuple[str, str]] = []
    retry_after: float | None = None
    for detail in _status_details(exc):
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.ToTimedelta().total_seconds()
    cls = _BY_CODE.get(code, ApiError)
    return cls(
        message or code.name.lower(),
        code=code,
        reason=reason,
        field_violations=tuple(violations),
        retry_after=retry_after,
    )


def _status_details(exc: grpc.RpcError) -> list[any_pb2.Any]:
    if not isinstance(exc, grpc.Call):
        return []
    for key, value in exc.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status()
            try:
                status.ParseFromString(value)
            except DecodeError:
                # A garbled detail is no reason to lose the status itself.
                return []
            return list(status.details)
    return []


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Turn `grpc.RpcError` raised inside into the client's `ApiError`."""
    try:
        yield
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from exc
