"""The HTTP status table, status-details decoding, and the REST settings."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from mutate.common.service_settings import CommonSettings, NatsSettings
from mutate.common.settings import SettingsError, describe, load
from mutate.gateway import public_errors
from mutate.gateway.rest import HTTP_STATUS_BY_CODE, RestSettings, _errors
from mutate.gateway.rest._errors import from_rpc_error


class _Failed(grpc.RpcError):
    """A failed call as grpc.aio reports it: code, details, trailers."""

    def __init__(self, code: grpc.StatusCode, message: str, trailers=()) -> None:  # type: ignore[no-untyped-def]
        self._code = code
        self._message = message
        self._trailers = tuple(trailers)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message

    def trailing_metadata(self):  # type: ignore[no-untyped-def]
        return self._trailers


def _status_trailer(*details: object) -> tuple[tuple[str, bytes], ...]:
    status = status_pb2.Status(code=8, message="x")
    for detail in details:
        if isinstance(detail, any_pb2.Any):
            status.details.append(detail)
        else:
            status.details.add().Pack(detail)
    return (("grpc-status-details-bin", status.SerializeToString()),)


@pytest.mark.parametrize(
    ("code", "http"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.FAILED_PRECONDITION, 400),
        (grpc.StatusCode.OUT_OF_RANGE, 400),
        (grpc.StatusCode.UNAUTHENTICATED, 401),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.ABORTED, 409),
        (grpc.StatusCode.ALREADY_EXISTS, 409),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.CANCELLED, 499),
        (grpc.StatusCode.UNIMPLEMENTED, 501),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.INTERNAL, 500),
        (grpc.StatusCode.UNKNOWN, 500),
        (grpc.StatusCode.DATA_LOSS, 500),
    ],
)
def test_http_status_follows_grpc_gateway(code: grpc.StatusCode, http: int) -> None:
    error = from_rpc_error(_Failed(code, "boom"))

    assert error.http_status == http
    assert error.body() == {"code": code.value[0], "message": "boom", "details": []}


def test_every_code_has_a_status() -> None:
    assert set(HTTP_STATUS_BY_CODE) == {c.value[0] for c in grpc.StatusCode}


def test_details_are_decoded_with_their_type_and_retry_after_rounds_up() -> None:
    delay = duration_pb2.Duration(seconds=2, nanos=100_000_000)
    unknown = any_pb2.Any(type_url="type.example.com/acme.Secret", value=b"\x01")
    trailers = _status_trailer(
        error_details_pb2.RetryInfo(retry_delay=delay),
        error_details_pb2.ErrorInfo(reason="QUEUE_FULL", domain="mutate"),
        unknown,
    )

    error = from_rpc_error(
        _Failed(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", trailers)
    )

    assert error.headers == {"retry-after": "3"}
    assert error.details == [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2.100s"},
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "QUEUE_FULL",
            "domain": "mutate",
        },
        {"@type": "type.example.com/acme.Secret", "value": "AQ=="},
    ]


def test_retry_after_only_on_429_and_503() -> None:
    delay = duration_pb2.Duration(seconds=5)
    trailers = _status_trailer(error_details_pb2.RetryInfo(retry_delay=delay))

    error = from_rpc_error(_Failed(grpc.StatusCode.ABORTED, "conflict", trailers))

    assert error.http_status == 409
    assert "retry-after" not in error.headers


@pytest.mark.parametrize(
    ("code", "reason", "http"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "FILE_TOO_LARGE", 413),
        (grpc.StatusCode.INVALID_ARGUMENT, "EMPTY_FILE", 400),
        (grpc.StatusCode.FAILED_PRECONDITION, "TOO_LARGE_FOR_SYNC", 400),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUEUE_FULL", 429),
    ],
)
def test_only_an_input_over_the_limit_is_413(
    code: grpc.StatusCode, reason: str, http: int
) -> None:
    trailers = _status_trailer(error_details_pb2.ErrorInfo(reason=reason))

    error = from_rpc_error(_Failed(code, "no", trailers))

    assert error.http_status == http
    assert error.code == code.value[0]


def test_rest_file_too_large_reason_is_the_gateways() -> None:
    # The REST package keeps its own copy of the name: the two must not drift.
    assert _errors.FILE_TOO_LARGE == public_errors.FILE_TOO_LARGE


def test_garbage_details_trailer_keeps_the_error() -> None:
    trailers = (("grpc-status-details-bin", b"\xff\xff not a status"),)

    error = from_rpc_error(_Failed(grpc.StatusCode.NOT_FOUND, "gone", trailers))

    assert (error.http_status, error.message, error.details) == (404, "gone", [])


def test_empty_message_is_replaced_by_the_code_name() -> None:
    assert from_rpc_error(_Failed(grpc.StatusCode.INTERNAL, "")).message == "internal"


# ---------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Combined(CommonSettings, NatsSettings, RestSettings):
    """How the gateway can take these settings in: as a mixin."""


def test_rest_settings_as_a_mixin_read_milliseconds() -> None:
    combined = load(
        _Combined,
        {"MUTATE_HTTP_SSE_KEEPALIVE_MS": "250", "MUTATE_HTTP_MAX_BODY_BYTES": "99"},
    )

    settings = RestSettings.from_object(combined)

    assert settings.http_sse_keepalive == 0.25
    assert settings.http_max_body_bytes == 99
    assert settings.http_call_timeout == 300.0
    assert {d.env for d in describe(RestSettings)} == {
        "MUTATE_HTTP_MAX_BODY_BYTES",
        "MUTATE_HTTP_MAX_UPLOAD_BYTES",
        "MUTATE_HTTP_UPLOAD_CHUNK_BYTES",
        "MUTATE_HTTP_CALL_TIMEOUT_MS",
        "MUTATE_HTTP_SSE_KEEPALIVE_MS",
        "MUTATE_HTTP_READY_TIMEOUT_MS",
    }


def test_rest_settings_from_any_object_and_validated() -> None:
    class Other:
        http_upload_chunk_bytes = 4096

    assert RestSettings.from_object(Other()).http_upload_chunk_bytes == 4096
    assert RestSettings.from_object(None) == RestSettings()
    with pytest.raises(SettingsError, match="MUTATE_HTTP_MAX_BODY_BYTES"):
        RestSettings.from_object(load(_Combined, {"MUTATE_HTTP_MAX_BODY_BYTES": "0"}))
