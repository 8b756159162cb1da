"""REST → gRPC → JSON end to end, through a real grpc.aio server and uvicorn."""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from mutate.gateway.rest import _body_errors
from mutate.gateway.rest._errors import ERROR_INFO_TYPE
from mutate.v1 import configuration_pb2, job_pb2, public_api_pb2

from .rest_fakes import API_KEY, RestStack, StackFactory

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

CONFIGURATION = {
    "name": "Sales export",
    "conversionType": "XLSX_TO_CSV",
    "readOptions": {"headerRow": 2},
    "rules": [
        {"id": "pick", "selectWorksheet": {"name": "2024"}},
        {"id": "drop", "deleteRows": {"column": "A", "condition": "EMPTY"}},
    ],
    "outputFormat": {"type": "CSV", "delimiter": ";"},
}


async def _create_configuration(stack: RestStack) -> dict:
    response = await stack.client.post("/v1/configurations", json=CONFIGURATION)
    assert response.status_code == 200, response.text
    return response.json()


# ---------------------------------------------------------------- bodies


async def test_rest_create_configuration_body_is_the_configuration_json(
    stack: RestStack,
) -> None:
    created = await _create_configuration(stack)

    sent = stack.gateway.last("CreateConfiguration").request.configuration
    assert sent.name == "Sales export"
    assert sent.read_options.header_row == 2
    assert [r.id for r in sent.rules] == ["pick", "drop"]
    assert sent.rules[0].select_worksheet.name == "2024"
    # proto3 JSON back: camelCase, int64 as a string, RFC 3339 timestamps.
    assert created["id"] == "cfg_1"
    assert created["version"] == "1"
    assert created["conversionType"] == "XLSX_TO_CSV"
    assert created["createTime"] == "2023-11-14T22:13:20Z"
    assert created["outputFormat"]["delimiter"] == ";"


async def test_rest_unknown_body_field_is_400_naming_it(stack: RestStack) -> None:
    response = await stack.client.post(
        "/v1/configurations", json={**CONFIGURATION, "colour": "red"}
    )

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == 3
    assert "colour" in body["message"]
    assert not [c for c in stack.gateway.calls if c.method == "CreateConfiguration"]


async def test_rest_malformed_json_is_400(stack: RestStack) -> None:
    response = await stack.client.post(
        "/v1/configurations",
        content=b'{"name": ',
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 400
    assert "not valid JSON" in response.json()["message"]


async def test_rest_wrong_field_type_in_body_is_400_naming_field(
    stack: RestStack,
) -> None:
    bad = {**CONFIGURATION, "conversionType": "XLSX_TO_PDF"}
    response = await stack.client.post("/v1/configurations", json=bad)

    assert response.status_code == 400
    assert (
        "conversionType" in response.json()["message"]
        or "conversion_type" in (response.json()["message"])
    )


_INT32 = "-2147483648..2147483647"


@pytest.mark.parametrize(
    ("path", "body", "field", "message"),
    [
        (
            "/v1/configurations",
            {**CONFIGURATION, "readOptions": {"headerRow": "three"}},
            "readOptions.headerRow",
            'field "readOptions.headerRow" must be a whole number, '
            'not a string ("three")',
        ),
        (
            "/v1/configurations",
            {**CONFIGURATION, "readOptions": {"headerRow": 99999999999999999999}},
            "readOptions.headerRow",
            f'field "readOptions.headerRow" must be a whole number within range '
            f"{_INT32}, not a number (99999999999999999999)",
        ),
        (
            "/v1/jobs",
            {"configurationId": "cfg_1", "configurationVersion": "latest"},
            "configurationVersion",
            'field "configurationVersion" must be a whole number, '
            'not a string ("latest")',
        ),
        (
            "/v1/jobs",
            {"configurationId": "cfg_1", "fileContent": "not base64!!"},
            "fileContent",
            'field "fileContent" must be base64 data (standard or URL-safe '
            'alphabet), not a string ("not base64!!")',
        ),
        (
            "/v1/uploads",
            {"fileName": "a.csv", "expiresIn": "1 hour"},
            "expiresIn",
            'field "expiresIn" must be a duration in seconds like "3600s" or '
            '"1.5s", not a string ("1 hour")',
        ),
        (
            "/v1/uploads",
            {"fileName": "a.csv", "expiresIn": 3600},
            "expiresIn",
            'field "expiresIn" must be a duration in seconds like "3600s" or '
            '"1.5s", not a number (3600)',
        ),
        (
            "/v1/uploads",
            {"fileName": "a.csv", "expiresIn": "99999999999999999s"},
            "expiresIn",
            'field "expiresIn" must be a duration within '
            "-315576000000s..315576000000s, not a string "
            '("99999999999999999s")',
        ),
    ],
)
async def test_rest_wrong_value_in_body_is_400_naming_its_path(
    stack: RestStack, path: str, body: dict, field: str, message: str
) -> None:
    # protobuf's own words ("invalid literal for int()", "Value out of range",
    # 'Duration must end with letter "s"') must not reach the client.
    response = await stack.client.post(path, json=body)

    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["code"] == 3
    assert payload["message"] == f"invalid request body: {message}"
    violation = payload["details"][0]
    assert violation["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert [v["field"] for v in violation["fieldViolations"]] == [field]
    assert not stack.gateway.calls


async def test_body_explainer_accepts_what_json_format_accepts() -> None:
    # The explainer names the first value it finds wrong; one that parses
    # must not be it, or the real problem would be hidden behind it.
    cases: list[tuple[type[Message], dict]] = [
        (configuration_pb2.Configuration, {"readOptions": {"headerRow": "3"}}),
        (configuration_pb2.Configuration, {"readOptions": {"headerRow": 2.0}}),
        (configuration_pb2.Configuration, {"readOptions": {"headerRow": "2e1"}}),
        (public_api_pb2.CreateJobRequest, {"fileContent": "aGVsbG8"}),
        (public_api_pb2.CreateJobRequest, {"fileContent": "_-8="}),
        (public_api_pb2.CreateUploadRequest, {"expiresIn": "1.5s"}),
    ]
    for message_class, data in cases:
        json_format.ParseDict(data, message_class())
        assert _body_errors.explain(message_class.DESCRIPTOR, data) is None, data


async def test_rest_create_job_with_base64_content_and_idempotency_key(
    stack: RestStack,
) -> None:
    response = await stack.client.post(
        "/v1/jobs",
        json={
            "configurationId": "cfg_1",
            "fileContent": base64.b64encode(b"a,b\n1,2\n").decode(),
            "fileName": "in.csv",
            "mode": "SYNC",
        },
        headers={
            "Idempotency-Key": "idem-1",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        },
    )

    assert response.status_code == 200, response.text
    call = stack.gateway.last("CreateJob")
    assert call.request.file_content == b"a,b\n1,2\n"
    assert call.request.mode == job_pb2.Job.SYNC
    assert call.metadata["idempotency-key"] == "idem-1"
    assert call.metadata["traceparent"].startswith("00-0af7651916cd43dd")
    assert call.metadata["x-api-key"] == API_KEY
    job = response.json()
    assert job["status"] == "COMPLETED"
    assert job["inputBytes"] == "8"
    # Fields without presence are printed with their defaults.
    assert job["executionLog"] == []
    assert job["progressPercent"] == 0


async def test_rest_bearer_authorization_is_forwarded(stack: RestStack) -> None:
    response = await stack.client.get(
        "/v1/api-keys",
        headers={"x-api-key": "", "authorization": f"Bearer {API_KEY}"},
    )

    assert response.status_code == 200, response.text
    assert stack.gateway.last("ListApiKeys").metadata["authorization"] == (
        f"Bearer {API_KEY}"
    )


async def test_rest_empty_body_on_verb_route_is_an_empty_request(
    stack: RestStack,
) -> None:
    response = await stack.client.post("/v1/jobs/job_9:cancel")

    assert response.status_code == 200, response.text
    assert stack.gateway.last("CancelJob").request.id == "job_9"


async def test_rest_path_variable_wins_over_the_body(stack: RestStack) -> None:
    response = await stack.client.post(
        "/v1/api-keys/key_path:revoke", json={"id": "key_body"}
    )

    assert response.status_code == 200
    assert stack.gateway.last("RevokeApiKey").request.id == "key_path"


async def test_rest_body_on_get_is_ignored(stack: RestStack) -> None:
    response = await stack.client.request(
        "GET", "/v1/queue/stats", content=b"not json at all"
    )

    assert response.status_code == 200
    assert response.json()["allOrganizations"] is False


async def _post_oversized(
    stack: RestStack, path: str, body: dict[str, Any], *, chunked: bool
) -> dict[str, Any]:
    """POST `body`; `chunked` sends it without a Content-Length, in pieces."""
    payload = json.dumps(body).encode()
    if chunked:

        async def pieces() -> AsyncIterator[bytes]:
            for start in range(0, len(payload), 300):
                yield payload[start : start + 300]

        response = await stack.client.post(path, content=pieces())
    else:
        response = await stack.client.post(path, content=payload)
    assert response.status_code == 413, response.text
    assert response.json()["code"] == 8
    return response.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("chunked", [False, True])
async def test_rest_oversized_inline_job_says_how_to_send_the_file(
    make_stack: StackFactory, chunked: bool
) -> None:
    stack = await make_stack(http_max_body_bytes=1000)
    job = {
        "configurationId": "c",
        "fileContent": base64.b64encode(b"x" * 2000).decode(),
    }

    body = await _post_oversized(stack, "/v1/jobs", job, chunked=chunked)

    assert body["message"] == (
        "request body is larger than the limit of 1000 bytes; send larger files "
        "as multipart/form-data with the file in a part named 'file' "
        "(POST /v1/jobs), or through a presigned upload (POST /v1/uploads, PUT "
        "the file to its url, then create the job with uploadId set to its id)"
    )
    assert body["details"] == [
        {"@type": ERROR_INFO_TYPE, "reason": "FILE_TOO_LARGE", "domain": "mutate"}
    ]
    assert not [c for c in stack.gateway.calls if c.method == "CreateJob"]


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize(
    ("path", "body"),
    [
        # A job without an inline file: nothing to send another way.
        ("/v1/jobs", {"configurationId": "c", "clientReference": "r" * 2000}),
        ("/v1/configurations", {**CONFIGURATION, "description": "d" * 2000}),
    ],
)
async def test_rest_other_oversized_bodies_are_413_without_a_reason(
    make_stack: StackFactory, chunked: bool, path: str, body: dict[str, Any]
) -> None:
    stack = await make_stack(http_max_body_bytes=1000)

    refused = await _post_oversized(stack, path, body, chunked=chunked)

    assert refused == {
        "code": 8,
        "message": "request body is larger than the limit of 1000 bytes",
        "details": [],
    }
    assert not stack.gateway.calls


# ---------------------------------------------------------------- paths and query


async def test_rest_update_uses_nested_path_variable_and_query_params(
    stack: RestStack,
) -> None:
    created = await _create_configuration(stack)

    response = await stack.client.patch(
        f"/v1/configurations/{created['id']}",
        params={"updateMask": "name,outputFormat", "expectedVersion": "1"},
        json={"name": "Renamed", "outputFormat": {"type": "JSON"}},
    )

    assert response.status_code == 200, response.text
    request = stack.gateway.last("UpdateConfiguration").request
    assert request.configuration.id == created["id"]
    assert list(request.update_mask.paths) == ["name", "output_format"]
    assert request.expected_version == 1
    assert response.json()["name"] == "Renamed"
    assert response.json()["version"] == "2"


async def test_rest_stale_expected_version_is_409(stack: RestStack) -> None:
    created = await _create_configuration(stack)

    response = await stack.client.patch(
        f"/v1/configurations/{created['id']}?expected_version=7",
        json={"name": "x"},
    )

    assert response.status_code == 409
    assert response.json()["code"] == 10


async def test_rest_list_jobs_query_parameters_are_typed(stack: RestStack) -> None:
    response = await stack.client.get(
        "/v1/jobs",
        params={
            "status": "RUNNING",
            "createdAfter": "2024-01-31T13:45:00Z",
            "configuration_id": "cfg_7",
            "pageSize": "25",
        },
    )

    assert response.status_code == 200, response.text
    request = stack.gateway.last("ListJobs").request
    assert request.status == job_pb2.Job.RUNNING
    assert request.created_after.ToDatetime(datetime.UTC) == datetime.datetime(
        2024, 1, 31, 13, 45, tzinfo=datetime.UTC
    )
    assert request.configuration_id == "cfg_7"
    assert request.page_size == 25
    assert response.json() == {"jobs": [], "nextPageToken": ""}


async def test_rest_duration_query_parameter(stack: RestStack) -> None:
    response = await stack.client.get("/v1/jobs/job_1/download?expiresIn=3.5s")

    assert response.status_code == 200, response.text
    expires = stack.gateway.last("GetJobDownload").request.expires_in
    assert (expires.seconds, expires.nanos) == (3, 500_000_000)


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("pageSise=10", "pageSise"),
        ("pageSize=ten", "pageSize"),
        ("status=SLEEPING", "status"),
        ("createdAfter=yesterday", "createdAfter"),
        ("pageSize=99999999999", "pageSize"),
        ("pageSize=1&page_size=2", "page_size"),
    ],
)
async def test_rest_bad_query_parameter_is_400_naming_it(
    stack: RestStack, query: str, named: str
) -> None:
    response = await stack.client.get(f"/v1/jobs?{query}")

    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == 3
    assert named in body["message"]
    violation = body["details"][0]
    assert violation["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert violation["fieldViolations"][0]["field"] == named
    assert not [c for c in stack.gateway.calls if c.method == "ListJobs"]


async def test_rest_query_may_not_set_a_path_field(stack: RestStack) -> None:
    response = await stack.client.get("/v1/jobs/job_1?id=job_2")

    assert response.status_code == 400
    assert "'id'" in response.json()["message"]


async def test_rest_query_on_body_star_route_is_400(stack: RestStack) -> None:
    response = await stack.client.post("/v1/jobs?configurationId=x", json={})

    assert response.status_code == 400
    assert "configurationId" in response.json()["message"]


async def test_rest_percent_encoded_path_variable_is_decoded(stack: RestStack) -> None:
    await stack.client.get("/v1/jobs/a%3Ab%2Fc")

    assert stack.gateway.last("GetJob").request.id == "a:b/c"


# ---------------------------------------------------------------- routing


async def test_rest_verb_segment_is_not_an_id(stack: RestStack) -> None:
    response = await stack.client.get("/v1/jobs/job_1:cancel")

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["code"] == 12
    assert not [c for c in stack.gateway.calls if c.method == "GetJob"]


async def test_rest_wrong_method_on_known_path_is_405(stack: RestStack) -> None:
    response = await stack.client.put("/v1/jobs/job_1", json={})

    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET"


async def test_rest_unknown_path_is_404_json(stack: RestStack) -> None:
    response = await stack.client.get("/v1/jobz")

    assert response.status_code == 404
    assert response.json() == {
        "code": 5,
        "message": "no such resource: GET /v1/jobz",
        "details": [],
    }


async def test_rest_delete_returns_empty_object(stack: RestStack) -> None:
    response = await stack.client.delete("/v1/jobs/job_1")

    assert response.status_code == 200
    assert response.json() == {}
    assert stack.gateway.last("DeleteJob").request.id == "job_1"


# ---------------------------------------------------------------- errors


async def test_rest_missing_api_key_is_401(stack: RestStack) -> None:
    response = await stack.client.get("/v1/jobs", headers={"x-api-key": ""})

    assert response.status_code == 401
    assert response.json()["code"] == 16
    assert response.json()["message"] == "missing or unknown API key"


async def test_rest_not_found_carries_error_info_detail(stack: RestStack) -> None:
    response = await stack.client.get("/v1/configurations/cfg_404")

    assert response.status_code == 404
    body = response.json()
    assert body["code"] == 5
    assert body["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "CONFIGURATION_NOT_FOUND",
            "domain": "mutate",
        }
    ]


async def test_rest_invalid_argument_carries_bad_request_detail(
    stack: RestStack,
) -> None:
    response = await stack.client.get("/v1/configurations?pageSize=501")

    assert response.status_code == 400
    detail = response.json()["details"][0]
    assert detail["fieldViolations"] == [
        {"field": "page_size", "description": "at most 500"}
    ]


@pytest.mark.parametrize(
    ("job_id", "status", "retry_after"),
    [("busy", 429, "3"), ("down", 503, "1"), ("other", 400, None)],
)
async def test_rest_status_mapping_and_retry_after(
    stack: RestStack, job_id: str, status: int, retry_after: str | None
) -> None:
    response = await stack.client.post(f"/v1/jobs/{job_id}:retry")

    assert response.status_code == status
    assert response.headers.get("retry-after") == retry_after
    if retry_after:
        types = [d["@type"] for d in response.json()["details"]]
        assert "type.googleapis.com/google.rpc.RetryInfo" in types


async def test_rest_unreachable_backend_is_503_not_an_empty_200(
    stack: RestStack,
) -> None:
    await stack.grpc_server.stop(0)

    response = await stack.client.get("/v1/jobs/job_1")

    assert response.status_code == 503
    assert response.json()["code"] == 14
    assert response.json()["message"]


async def test_rest_header_that_metadata_cannot_carry_is_400(stack: RestStack) -> None:
    response = await stack.client.get(
        "/v1/jobs", headers={"idempotency-key": "caf\u00e9".encode("latin-1")}
    )

    assert response.status_code == 400
    assert "idempotency-key" in response.json()["message"]


# ---------------------------------------------------------------- health


async def test_rest_healthz_and_readyz(stack: RestStack) -> None:
    assert (await stack.client.get("/healthz")).status_code == 200
    ready = await stack.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["grpc"] == "SERVING"

    await stack.grpc_server.stop(0)

    assert (await stack.client.get("/healthz")).status_code == 200
    not_ready = await stack.client.get("/readyz")
    assert not_ready.status_code == 503
    assert "unreachable" in not_ready.json()["grpc"]


async def test_rest_health_paths_only_take_get(stack: RestStack) -> None:
    response = await stack.client.post("/healthz")

    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
