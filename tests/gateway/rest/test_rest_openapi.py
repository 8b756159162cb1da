"""The OpenAPI 3.1 document: from the annotations, valid, and true to the API."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from mutate.gateway.rest import RouteTable, build_openapi, build_routes
from mutate.gateway.rest import public_services as services

from .rest_fakes import API_KEY, RestStack

ROUTES = RouteTable(build_routes(services())).routes
DOC = build_openapi(ROUTES)
SCHEMAS = DOC["components"]["schemas"]


def _operation(method: str, path: str) -> dict[str, Any]:
    return DOC["paths"][path][method]  # type: ignore[no-any-return]


def _params(method: str, path: str) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in _operation(method, path)["parameters"]}


def test_openapi_document_is_valid_openapi_3_1() -> None:
    validator = pytest.importorskip("openapi_spec_validator")

    validator.validate(DOC)
    assert DOC["openapi"] == "3.1.0"


def test_openapi_has_every_annotated_route() -> None:
    operations = {
        (method.upper(), path): op["operationId"]
        for path, item in DOC["paths"].items()
        for method, op in item.items()
    }

    for route in ROUTES:
        key = (route.http_method, route.template.openapi_path())
        assert operations.get(key) == route.operation_id, key
    assert len(operations) == len(ROUTES) + 3  # plus healthz, readyz, openapi


def test_openapi_proto3_json_types() -> None:
    job = SCHEMAS["Job"]["properties"]

    assert job["inputBytes"] == {
        "type": "string",
        "format": "int64",
        "pattern": "^-?[0-9]{1,18}$",
        "readOnly": True,
    }
    assert job["createTime"]["format"] == "date-time"
    assert job["status"] == {
        "$ref": "#/components/schemas/Job.Status",
        "readOnly": True,
    }
    assert SCHEMAS["Job.Status"]["enum"][:2] == ["STATUS_UNSPECIFIED", "PENDING"]
    assert job["executionLog"]["type"] == "array"
    request = SCHEMAS["CreateJobRequest"]
    assert request["properties"]["fileContent"]["contentEncoding"] == "base64"
    assert request["required"] == ["configurationId"]
    assert request["allOf"][0]["not"] == {
        "anyOf": [{"required": ["fileContent", "uploadId"]}]
    }
    stats = SCHEMAS["QueueStats"]["properties"]
    assert stats["jobsByStatus"]["additionalProperties"]["format"] == "int64"
    assert stats["oldestWaitingAge"]["type"] == "string"
    assert SCHEMAS["Upload"]["properties"]["headers"] == {
        "type": "object",
        "additionalProperties": {"type": "string"},
    }


def test_openapi_parameters_come_from_path_and_query() -> None:
    jobs = _params("get", "/v1/jobs")
    update = _params("patch", "/v1/configurations/{id}")

    assert set(jobs) == {
        "pageSize",
        "pageToken",
        "status",
        "configurationId",
        "createdAfter",
        "createdBefore",
    }
    assert jobs["status"]["schema"] == {"$ref": "#/components/schemas/Job.Status"}
    assert jobs["createdAfter"]["schema"]["format"] == "date-time"
    assert update["id"]["in"] == "path"
    assert update["id"]["description"] == "Sets `configuration.id`."
    assert set(update) == {"id", "updateMask", "expectedVersion"}
    # body "*": every field is in the body, none in the query.
    assert set(_params("post", "/v1/jobs/{id}:cancel")) == {"id"}


def test_openapi_request_bodies() -> None:
    create = _operation("post", "/v1/configurations")["requestBody"]
    cancel = _operation("post", "/v1/jobs/{id}:cancel")["requestBody"]
    job = _operation("post", "/v1/jobs")["requestBody"]["content"]

    assert create["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Configuration"
    }
    # The path variable is not repeated in the body schema.
    assert cancel["content"]["application/json"]["schema"]["properties"] == {}
    form = job["multipart/form-data"]["schema"]
    assert form["required"] == ["file", "configurationId"]
    assert "fileContent" not in form["properties"]
    assert form["properties"]["mode"] == {"$ref": "#/components/schemas/Job.Mode"}


def test_openapi_watch_is_an_event_stream_and_errors_share_a_schema() -> None:
    watch = _operation("get", "/v1/jobs/{id}:watch")["responses"]

    assert "text/event-stream" in watch["200"]["content"]
    assert watch["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }
    assert SCHEMAS["Error"]["required"] == ["code", "message", "details"]
    assert set(DOC["components"]["securitySchemes"]) == {"bearerAuth", "apiKey"}


@pytest.mark.asyncio
async def test_openapi_served_at_openapi_json(stack: RestStack) -> None:
    response = await stack.client.get("/openapi.json", headers={"x-api-key": ""})

    assert response.status_code == 200
    assert response.json() == json.loads(json.dumps(DOC))


@pytest.mark.asyncio
@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_openapi_schemathesis_finds_no_server_errors(
    stack: RestStack, tmp_path: Path
) -> None:
    """Property-based requests from the document against a live REST server.

    The fake servicers answer default messages, so this checks the transcoder:
    no 5xx for any generated (valid or invalid) request, and every response
    matches its documented status, content type and schema.
    """
    pytest.importorskip("schemathesis")
    command = [
        sys.executable,
        "-c",
        "import sys; from schemathesis.cli import schemathesis; "
        "sys.exit(schemathesis())",
        "run",
        f"{stack.base_url}/openapi.json",
        "--header",
        f"x-api-key: {API_KEY}",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance",
        "--max-examples",
        "15",
        "--seed",
        "20240131",
        "--no-shrink",
        # One worker: CPython 3.11's ast module is not safe across threads
        # ("AST constructor recursion depth mismatch" inside Hypothesis).
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--exclude-path",
        "/v1/jobs/{id}:watch",
    ]
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 280)
    text = output.decode(errors="replace")

    assert process.returncode == 0, text[-6000:]
    assert "passed" in text.lower()
