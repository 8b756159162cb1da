"""REST against the real gateway: the platform of tests/gateway/conftest.py.

The gateway runs as a subprocess with storage, transformer and notifier on
real NATS, PostgreSQL and S3; its REST server (this package, started by the
gateway's main) is at `platform.info.gateway_http_url`. Each test uses a fresh
organization (`tenant`) and its API key.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from mutate.transformer.engine._validation import MAX_RULES

from ..conftest import MAX_INPUT_BYTES

pytestmark = [pytest.mark.asyncio, pytest.mark.slow, pytest.mark.timeout(120)]

CSV = b"name,amount\nalice,1\nbob,2\ncarol,3\n"
CONFIGURATION = {
    "name": "rest csv",
    "conversionType": "CSV_TO_CSV",
    "outputFormat": {"type": "CSV"},
}


@pytest.fixture
async def rest(platform, tenant) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(
        base_url=platform.info.gateway_http_url,
        headers={"authorization": f"Bearer {tenant.key}"},
        timeout=30.0,
    ) as client:
        yield client


async def _configuration(rest: httpx.AsyncClient) -> dict:
    response = await rest.post("/v1/configurations", json=CONFIGURATION)
    assert response.status_code == 200, response.text
    return response.json()


async def test_gateway_rest_readyz_and_openapi(rest: httpx.AsyncClient) -> None:
    ready = await rest.get("/readyz")
    spec = await rest.get("/openapi.json")

    assert ready.status_code == 200, ready.text
    assert spec.status_code == 200
    assert "/v1/jobs/{id}:watch" in spec.json()["paths"]


async def test_gateway_rest_configuration_lifecycle(rest: httpx.AsyncClient) -> None:
    created = await _configuration(rest)
    config_id = created["id"]

    fetched = await rest.get(f"/v1/configurations/{config_id}")
    updated = await rest.patch(
        f"/v1/configurations/{config_id}",
        params={"updateMask": "name", "expectedVersion": created["version"]},
        json={"name": "renamed over REST"},
    )
    stale = await rest.patch(
        f"/v1/configurations/{config_id}",
        params={"updateMask": "name", "expectedVersion": created["version"]},
        json={"name": "lost update"},
    )
    listed = await rest.get("/v1/configurations", params={"nameContains": "renamed"})

    assert fetched.status_code == 200
    assert fetched.json()["conversionType"] == "CSV_TO_CSV"
    assert updated.status_code == 200, updated.text
    assert updated.json()["name"] == "renamed over REST"
    assert int(updated.json()["version"]) == int(created["version"]) + 1
    assert stale.status_code == 409, stale.text
    assert stale.json()["code"] == 10
    assert [c["id"] for c in listed.json()["configurations"]] == [config_id]


async def test_gateway_rest_bad_configuration_is_400_with_details(
    rest: httpx.AsyncClient,
) -> None:
    response = await rest.post(
        "/v1/configurations", json={**CONFIGURATION, "rules": [{"id": "x"}]}
    )

    assert response.status_code == 400, response.text
    assert response.json()["code"] == 3
    assert response.json()["message"]


async def test_gateway_rest_configuration_body_errors_name_the_field(
    rest: httpx.AsyncClient,
) -> None:
    misspelled = await rest.post(
        "/v1/configurations",
        json={"name": "typo", "conversionTyp": "CSV_TO_CSV", "outputFormat": {}},
    )
    wrong_type = await rest.post(
        "/v1/configurations", json={**CONFIGURATION, "name": 5}
    )
    created = await _configuration(rest)
    nested = await rest.patch(
        f"/v1/configurations/{created['id']}",
        params={"updateMask": "outputFormat"},
        json={"outputFormat": {"type": "CVS"}},
    )

    for response in (misspelled, wrong_type, nested):
        assert response.status_code == 400, response.text
        assert response.json()["code"] == 3
        assert "mutate.v1" not in response.json()["message"]
    assert misspelled.json()["message"] == (
        'invalid request body: unknown field "conversionTyp" in the request body; '
        'did you mean "conversionType"?'
    )
    assert _violated_fields(misspelled) == ["conversionTyp"]
    assert wrong_type.json()["message"] == (
        'invalid request body: field "name" must be a string, not a number (5)'
    )
    assert _violated_fields(wrong_type) == ["name"]
    assert 'did you mean "CSV"?' in nested.json()["message"]
    assert _violated_fields(nested) == ["outputFormat.type"]


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        (
            {"rules": [{"id": "b", "deleteRows": {"condition": 99}}]},
            "rules[0].deleteRows.condition",
            "99 is not one of CONTAINS, EQUALS, STARTS_WITH, REGEX, EMPTY",
        ),
        (
            {"rules": [{"id": "b", "type": 99, "deleteRows": {"condition": "EMPTY"}}]},
            "rules[0].type",
            "99 is not one of SELECT_WORKSHEET, ",
        ),
        (
            {"rules": [{"id": "b", "deleteRows": {"condition": 99, "value": "x"}}]},
            "rules[0].deleteRows.condition",
            "99 is not one of CONTAINS, ",
        ),
        ({"conversionType": 99}, "conversionType", "99 is not one of XLSX_TO_CSV"),
        ({"conversionType": -1}, "conversionType", "-1 is not one of XLSX_TO_CSV"),
        ({"outputFormat": {"type": 99}}, "outputFormat.type", "99 is not one of CSV"),
        (
            {"outputFormat": {"quoting": 42}},
            "outputFormat.quoting",
            "42 is not one of MINIMAL",
        ),
        ({"readOptions": {"values": 7}}, "readOptions.values", "7 is not one of RAW"),
        (
            {
                "rules": [
                    {
                        "id": "u",
                        "unmergeAndFill": {"columns": ["A"], "fillDirection": 9},
                    }
                ]
            },
            "rules[0].unmergeAndFill.fillDirection",
            "9 is not one of DOWN, UP, NONE",
        ),
        (
            {"rules": [{"id": "v", "validateColumns": {"onFailure": 9}}]},
            "rules[0].validateColumns.onFailure",
            "9 is not one of FAIL, WARN",
        ),
    ],
)
async def test_gateway_rest_undefined_enum_numbers_are_400(
    rest: httpx.AsyncClient, changes: dict, field: str, message: str
) -> None:
    # proto3 enums are open: JSON numbers parse, but only defined ones may be
    # saved (an undefined one crashed validation or acted as unset).
    response = await rest.post("/v1/configurations", json={**CONFIGURATION, **changes})

    assert response.status_code == 400, response.text
    assert response.json()["code"] == 3
    assert field in response.json()["message"]
    assert message in response.json()["message"]
    assert f"configuration.{field}" in _violated_fields(response)


async def test_gateway_rest_too_many_rules_is_400_on_create_and_update(
    rest: httpx.AsyncClient,
) -> None:
    rules = [
        {"id": f"r{i}", "deleteRows": {"condition": "EMPTY"}}
        for i in range(MAX_RULES + 1)
    ]
    created = await _configuration(rest)

    create = await rest.post(
        "/v1/configurations", json={**CONFIGURATION, "rules": rules}
    )
    update = await rest.patch(
        f"/v1/configurations/{created['id']}",
        params={"updateMask": "rules"},
        json={"rules": rules},
    )

    for response in (create, update):
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["code"] == 3
        assert (
            f"at most {MAX_RULES} rules; this one has {MAX_RULES + 1}"
            in (body["message"])
        )
        assert _violated_fields(response) == ["configuration.rules"]
        assert "INVALID_CONFIGURATION" in [d.get("reason") for d in body["details"]]
    current = await rest.get(f"/v1/configurations/{created['id']}")
    assert current.json()["version"] == created["version"]


def _violated_fields(response: httpx.Response) -> list[str]:
    return [
        violation["field"]
        for detail in response.json()["details"]
        for violation in detail.get("fieldViolations", ())
    ]


async def test_gateway_rest_input_over_the_limit_is_413(
    rest: httpx.AsyncClient,
) -> None:
    configuration = await _configuration(rest)
    too_big = b"x" * (MAX_INPUT_BYTES + 1)

    inline = await rest.post(
        "/v1/jobs",
        json={
            "configurationId": configuration["id"],
            "fileContent": base64.b64encode(too_big).decode(),
        },
    )
    multipart = await rest.post(
        "/v1/jobs",
        data={"configurationId": configuration["id"]},
        files={"file": ("big.csv", too_big, "text/csv")},
    )

    for response in (inline, multipart):
        assert response.status_code == 413, response.text
        body = response.json()
        assert body["code"] == 3
        assert str(MAX_INPUT_BYTES) in body["message"]
        reasons = [d.get("reason") for d in body["details"]]
        assert "FILE_TOO_LARGE" in reasons


async def test_gateway_rest_sync_job_json_then_download(
    rest: httpx.AsyncClient,
) -> None:
    configuration = await _configuration(rest)

    created = await rest.post(
        "/v1/jobs",
        json={
            "configurationId": configuration["id"],
            "fileContent": base64.b64encode(CSV).decode(),
            "fileName": "people.csv",
            "mode": "SYNC",
        },
    )
    assert created.status_code == 200, created.text
    job = created.json()
    fetched = await rest.get(f"/v1/jobs/{job['id']}")
    download = await rest.get(f"/v1/jobs/{job['id']}/download")

    assert job["status"] == "COMPLETED"
    assert job["outputRows"] == "3"
    assert fetched.json()["id"] == job["id"]
    assert download.status_code == 200, download.text
    async with httpx.AsyncClient() as plain:
        output = await plain.get(download.json()["url"])
    assert output.status_code == 200
    assert output.content.splitlines()[0] == b"name,amount"


async def test_gateway_rest_multipart_job(rest: httpx.AsyncClient) -> None:
    configuration = await _configuration(rest)

    response = await rest.post(
        "/v1/jobs",
        data={"configurationId": configuration["id"], "mode": "SYNC"},
        files={"file": ("people.csv", CSV, "text/csv")},
        headers={"Idempotency-Key": "rest-multipart-1"},
    )
    again = await rest.post(
        "/v1/jobs",
        data={"configurationId": configuration["id"], "mode": "SYNC"},
        files={"file": ("people.csv", CSV, "text/csv")},
        headers={"Idempotency-Key": "rest-multipart-1"},
    )

    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "COMPLETED"
    assert job["inputFileName"] == "people.csv"
    assert job["inputBytes"] == str(len(CSV))
    assert again.json()["id"] == job["id"]


async def test_gateway_rest_watch_completed_job_over_sse(
    rest: httpx.AsyncClient,
) -> None:
    configuration = await _configuration(rest)
    created = await rest.post(
        "/v1/jobs",
        json={
            "configurationId": configuration["id"],
            "fileContent": base64.b64encode(CSV).decode(),
            "mode": "SYNC",
        },
    )
    job_id = created.json()["id"]

    events = []
    async with rest.stream("GET", f"/v1/jobs/{job_id}:watch") as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))

    assert events, "the stream ended without an event"
    assert events[-1]["status"] == "COMPLETED"


async def test_gateway_rest_errors(rest: httpx.AsyncClient) -> None:
    unknown = await rest.get("/v1/jobs/job_doesnotexist")
    no_key = await rest.get("/v1/jobs", headers={"authorization": ""})
    bad_query = await rest.get("/v1/jobs", params={"status": "ASLEEP"})

    assert unknown.status_code == 404, unknown.text
    assert no_key.status_code == 401, no_key.text
    assert bad_query.status_code == 400
    assert "status" in bad_query.json()["message"]


async def test_gateway_rest_schemathesis_finds_no_server_errors(
    platform,
    tenant,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """Generated requests for every operation, with a valid key: never a 5xx."""
    pytest.importorskip("schemathesis")
    excluded = ["--exclude-path", "/v1/jobs/{id}:watch"]
    async with httpx.AsyncClient(
        base_url=platform.info.gateway_http_url,
        headers={"authorization": f"Bearer {tenant.key}"},
    ) as client:
        probe = await client.get("/v1/deliveries")
    if probe.status_code == 503:
        # TODO: the notifier of the test platform cannot serve deliveries
        # (seen: its tables missing); test those routes once it can.
        warnings.warn(
            f"notifier unavailable, skipping its routes: {probe.text}", stacklevel=1
        )
        excluded += ["--exclude-path-regex", "deliveries|webhook"]
    command = [
        sys.executable,
        "-c",
        "import sys; from schemathesis.cli import schemathesis; "
        "sys.exit(schemathesis())",
        "run",
        f"{platform.info.gateway_http_url}/openapi.json",
        # Both schemes, so a generated value never stands in for the key.
        "--header",
        f"authorization: Bearer {tenant.key}",
        "--header",
        f"x-api-key: {tenant.key}",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        "10",
        "--seed",
        "20240131",
        "--no-shrink",
        # One worker: CPython 3.11's ast module is not safe across threads
        # ("AST constructor recursion depth mismatch" inside Hypothesis).
        "--workers",
        "1",
        "--request-timeout",
        "20",
        # Watching holds the request open until the job ends.
        *excluded,
    ]
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 110)
    text = output.decode(errors="replace")

    assert process.returncode == 0, text[-8000:]
