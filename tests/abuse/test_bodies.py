"""Oversized and malformed requests: refused with the documented error.

docs/rest-api.md: a JSON body over MUTATE_HTTP_MAX_BODY_BYTES is a 413 with
code 8 (1 MiB on this platform); a body that does not parse is a 400 with
code 3. gRPC messages over the servers' 64 MiB limit are RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest

from mutate.devstack.harness import PlatformHarness
from mutate.v1 import public_api_pb2, public_api_pb2_grpc

from ..faults.support import TenantClient, csv_configuration
from .conftest import MAX_BODY_BYTES

pytestmark = pytest.mark.slow


def _post(
    platform: PlatformHarness,
    tenant: TenantClient,
    path: str,
    content: bytes | Iterator[bytes],
    **headers: str,
) -> httpx.Response:
    return httpx.post(
        platform.rest_url + path,
        headers={"Authorization": f"Bearer {tenant.api_key}", **headers},
        content=content,
        timeout=60,
    )


def test_oversized_json_bodies(
    abuse_platform: PlatformHarness, tenant: TenantClient
) -> None:
    file = base64.b64encode(b"a,b\n" + b"1,2\n" * (MAX_BODY_BYTES // 3)).decode()
    body = json.dumps(
        {"configurationId": tenant.configuration_id, "fileContent": file}
    ).encode()
    assert len(body) > MAX_BODY_BYTES
    # With a Content-Length...
    response = _post(abuse_platform, tenant, "/v1/jobs", body)
    assert response.status_code == 413, response.text
    assert response.json()["code"] == 8
    # ...and chunked, without one: counted as it arrives.
    chunks = iter([body[i : i + 65536] for i in range(0, len(body), 65536)])
    response = _post(abuse_platform, tenant, "/v1/jobs", chunks)
    assert response.status_code == 413, response.text
    assert response.json()["code"] == 8
    # A configuration stuffed past the limit, on create and update.
    huge = json.dumps(
        {"name": "x" * MAX_BODY_BYTES, "conversionType": "CSV_TO_CSV"}
    ).encode()
    assert _post(abuse_platform, tenant, "/v1/configurations", huge).status_code == 413
    response = httpx.patch(
        f"{abuse_platform.rest_url}/v1/configurations/{tenant.configuration_id}",
        headers={"Authorization": f"Bearer {tenant.api_key}"},
        content=huge,
        timeout=60,
    )
    assert response.status_code == 413, response.text
    # Nothing was made.
    assert not tenant.client.list_jobs().jobs
    assert tenant.client.get_configuration(tenant.configuration_id).version == 1


def test_malformed_json_bodies(
    abuse_platform: PlatformHarness, tenant: TenantClient
) -> None:
    bodies = {
        "not json": b"{not json",
        "deeply nested": b'{"configurationId": '
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}",
        "nested objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        "wrong type": b'{"configurationId": {"x": 1}}',
        "unknown field": b'{"configurationId": "x", "isAdmin": true}',
        "bad base64": b'{"configurationId": "x", "fileContent": "%%%"}',
        "huge number": b'{"configurationId": "x", "mode": 1e999999}',
        "invalid utf-8": b'{"configurationId": "\xff\xfe"}',
        "nul": b'{"configurationId": "a\\u0000b", "fileContent": "YQ=="}',
        "array": b"[]",
        "duplicate keys": b'{"configurationId": "a", "configurationId": "b"}',
    }
    wrong = {}
    for label, body in bodies.items():
        response = _post(abuse_platform, tenant, "/v1/jobs", body)
        ok = response.status_code in (400, 404) and response.json()["code"] in (3, 5)
        if not ok:
            wrong[label] = f"{response.status_code} {response.text[:200]}"
    assert not wrong, wrong
    assert not tenant.client.list_jobs().jobs


def test_oversized_and_repeated_headers(
    abuse_platform: PlatformHarness, tenant: TenantClient
) -> None:
    url = f"{abuse_platform.rest_url}/v1/jobs"
    key = f"Bearer {tenant.api_key}"
    # A repeated key header is not a list: refused as an invalid key.
    response = httpx.get(url, headers=[("Authorization", key)] * 20, timeout=30)
    assert (response.status_code, response.json()["code"]) == (401, 16)
    # Idempotency keys are 255 characters at most, even huge ones.
    for size in (300, 9000):
        response = httpx.post(
            url,
            headers={"Authorization": key, "Idempotency-Key": "k" * size},
            content=b"{}",
            timeout=30,
        )
        assert (response.status_code, response.json()["code"]) == (400, 3), size


def test_oversized_grpc_message(
    abuse_platform: PlatformHarness, tenant: TenantClient
) -> None:
    request = public_api_pb2.CreateJobRequest(
        configuration_id=tenant.configuration_id,
        file_name="big.csv",
        file_content=b"a" * (65 * 1024 * 1024),
    )
    # A channel that sends it: the server's own 64 MiB limit must refuse it.
    options = [("grpc.max_send_message_length", 128 * 1024 * 1024)]
    with grpc.insecure_channel(abuse_platform.gateway_address, options) as channel:
        stub = public_api_pb2_grpc.JobServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.CreateJob(
                request,
                metadata=(("authorization", f"Bearer {tenant.api_key}"),),
                timeout=60,
            )
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert not tenant.client.list_jobs().jobs


def test_nul_bytes_in_strings(tenant: TenantClient) -> None:
    """PostgreSQL text cannot hold NUL: a request carrying one is refused
    as invalid (it was an INTERNAL error), never half-stored."""
    stub = tenant.client.jobs
    metadata = tenant.client._metadata
    calls: dict[str, Callable[[], Any]] = {
        "client_reference": lambda: stub.CreateJob(
            public_api_pb2.CreateJobRequest(
                configuration_id=tenant.configuration_id,
                file_content=b"a,b\n1,2\n",
                file_name="a.csv",
                client_reference="ref\x00",
            ),
            metadata=metadata,
        ),
        "configuration_id": lambda: stub.CreateJob(
            public_api_pb2.CreateJobRequest(
                configuration_id="cfg_\x00", file_content=b"a\n1\n"
            ),
            metadata=metadata,
        ),
        "job id": lambda: stub.GetJob(
            public_api_pb2.GetJobRequest(id="job_\x00x"), metadata=metadata
        ),
        "configuration name": lambda: tenant.client.configurations.CreateConfiguration(
            public_api_pb2.CreateConfigurationRequest(
                configuration=csv_configuration(name="evil\x00name")
            ),
            metadata=metadata,
        ),
    }
    for what, call in calls.items():
        with pytest.raises(grpc.RpcError) as info:
            call()
        code = info.value.code()
        assert code in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.NOT_FOUND,
        ), (what, code, info.value.details())
    assert not tenant.client.list_jobs().jobs
