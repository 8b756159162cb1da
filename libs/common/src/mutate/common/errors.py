"""The domain error tree shared by every service.

Handlers raise these; one server interceptor (mutate.common.grpc_server) turns
them into gRPC status codes with a human message and, where useful, a
google.rpc `BadRequest` or `RetryInfo` detail. The REST side maps the codes to
HTTP the way grpc-gateway does. `retryable` tells queue workers whether to nak
(try again later) or fail at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc


class MutateError(Exception):
    """Base of every error that crosses a service boundary on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        field_violations: Sequence[tuple[str, str]] = (),
        retry_after: float | None = None,
        reason: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        # (field path, what is wrong with it) pairs, for a BadRequest detail.
        self.field_violations = tuple(field_violations)
        # Seconds the caller should wait, for RetryInfo and HTTP Retry-After.
        self.retry_after = retry_after
        # A stable machine-readable reason, e.g. "CONFIGURATION_NOT_FOUND".
        self.reason = reason


class InvalidArgument(MutateError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(MutateError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(MutateError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(MutateError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Conflict(MutateError):
    """A concurrent change won (stale expected version, idempotency clash)."""

    code = grpc.StatusCode.ABORTED


class ResourceExhausted(MutateError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    retryable = True


class Unauthenticated(MutateError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(MutateError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(MutateError):
    """A dependency cannot be reached; the same call may work later."""

    code = grpc.StatusCode.UNAVAILABLE
    retryable = True


class DeadlineExceeded(MutateError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    retryable = True


class DataLoss(MutateError):
    code = grpc.StatusCode.DATA_LOSS


class Internal(MutateError):
    code = grpc.StatusCode.INTERNAL


# gRPC codes a caller may retry without changing the request.
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)

_BY_CODE: dict[grpc.StatusCode, type[MutateError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Conflict,
        ResourceExhausted,
        Unauthenticated,
        PermissionDenied,
        Unavailable,
        DeadlineExceeded,
        DataLoss,
        Internal,
    )
}


def from_rpc_error(exc: grpc.RpcError, *, what: str = "") -> MutateError:
    """Translate a failed call to another service into a domain error.

    The remote message is kept; `what` names the dependency for context.
    """
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    cls = _BY_CODE.get(code, Internal)
    prefix = f"{what}: " if what and cls in (Unavailable, DeadlineExceeded) else ""
    return cls(f"{prefix}{details or code.name.lower()}")
