"""Every REST route with another organization's key, and with bad keys.

tests/gateway/test_tenancy.py covers every gRPC method (another
organization's key, missing, unknown and malformed keys). Here the same over
REST, with the routes read from the `google.api.http` annotations (a new
route is covered as soon as it is annotated), plus revoked keys on both.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import pytest
from google.api import annotations_pb2  # type: ignore[import-untyped]

from mutate.client import NO_RETRY, ApiError, MutateClient
from mutate.devstack.harness import PlatformHarness
from mutate.v1 import public_api_pb2

from ..faults.support import CSV, Job, TenantClient, csv_configuration, wait_until

pytestmark = pytest.mark.slow


@dataclasses.dataclass(frozen=True)
class Route:
    method: str  # gRPC method name
    service: str
    verb: str
    template: str
    body: str

    @property
    def name(self) -> str:
        return f"{self.verb.upper()} {self.template}"


def _routes() -> list[Route]:
    found = []
    for service in public_api_pb2.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            rule = method.GetOptions().Extensions[annotations_pb2.http]
            for binding in (rule, *rule.additional_bindings):
                verb = binding.WhichOneof("pattern")
                if verb is None or verb == "custom":
                    continue
                found.append(
                    Route(
                        method.name,
                        service.name,
                        verb,
                        getattr(binding, verb),
                        binding.body,
                    )
                )
    return found


ROUTES = _routes()
# Which owned thing a route's `{...}` names, by service.
_PATH_IDS = {
    "ConfigurationService": "configuration_id",
    "JobService": "job_id",
    "DeliveryService": "delivery_id",
    "ApiKeyService": "key_id",
}


@dataclasses.dataclass(frozen=True)
class Owned:
    org_id: str
    configuration_id: str
    job_id: str
    delivery_id: str
    key_id: str
    upload_id: str

    def secrets(self) -> list[str]:
        return [
            self.org_id,
            self.configuration_id,
            self.job_id,
            self.delivery_id,
            self.key_id,
            self.upload_id,
        ]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _request(route: Route, owned: Owned, caller_url: str) -> tuple[str, Any]:
    """The path and JSON body that reach for `owned` through `route`."""
    path = route.template
    if "{" in path:
        value = getattr(owned, _PATH_IDS[route.service])
        path = re.sub(r"\{[^}]+\}", value, path)
    bodies: dict[str, Any] = {
        "CreateConfiguration": {"name": "mine", "conversionType": "CSV_TO_CSV"},
        "UpdateConfiguration": {"name": "stolen"},
        "TestConfiguration": {"fileContent": _b64(CSV)},
        "CreateUpload": {"fileName": "x.csv"},
        "CreateJob": {
            "configurationId": owned.configuration_id,
            "fileContent": _b64(CSV),
        },
        "RecoverDeliveries": {"since": "2000-01-01T00:00:00Z"},
        "SendTestWebhook": {"url": caller_url},
        "CreateApiKey": {"name": "mine"},
        "RedriveDeadLetters": {"jobIds": [owned.job_id]},
    }
    if route.method == "UpdateConfiguration":
        path += "?updateMask=name"
    body = bodies.get(route.method, {}) if route.body else None
    return path, body


def _reaches_for_owned(route: Route) -> bool:
    return "{" in route.template or route.method in ("CreateJob", "RedriveDeadLetters")


def _call(
    platform: PlatformHarness,
    route: Route,
    path: str,
    body: Any,
    headers: dict[str, str],
) -> httpx.Response:
    url = platform.rest_url + path
    if route.method == "WatchJob":
        with httpx.stream("GET", url, headers=headers, timeout=10) as response:
            response.read()
            return response
    return httpx.request(
        route.verb.upper(),
        url,
        headers=headers,
        content=None if body is None else json.dumps(body),
        timeout=30,
    )


@pytest.fixture
def owned(tenant: TenantClient) -> Owned:
    """A job with a delivered webhook, a configuration, an upload, a key."""
    job = tenant.submit(mode="auto")
    tenant.wait_terminal([job.id], timeout=60)
    tenant.receiver.wait_delivered([job.id], timeout=30)
    delivery = tenant.client.list_job_deliveries(job.id).deliveries[0]
    upload = tenant.client.create_upload("mine.csv")
    key = tenant.client.list_api_keys().api_keys[0]
    return Owned(
        tenant.org_id,
        tenant.configuration_id,
        job.id,
        delivery.id,
        key.id,
        upload.id,
    )


def test_the_routes_are_all_there() -> None:
    # Every public RPC but the client-streaming upload has a route.
    rpcs = {
        m.name
        for s in public_api_pb2.DESCRIPTOR.services_by_name.values()
        for m in s.methods
    }
    assert {r.method for r in ROUTES} == rpcs - {"UploadJob"}
    assert len(ROUTES) >= 28


def test_another_organizations_key_on_every_route(
    abuse_platform: PlatformHarness,
    tenant: TenantClient,
    other: TenantClient,
    owned: Owned,
) -> None:
    headers = {"Authorization": f"Bearer {other.api_key}"}
    wrong: dict[str, str] = {}
    for route in ROUTES:
        path, body = _request(route, owned, other.receiver.url)
        response = _call(abuse_platform, route, path, body, headers)
        text = response.text
        if _reaches_for_owned(route):
            if response.status_code != 404 or response.json().get("code") != 5:
                wrong[route.name] = f"{response.status_code} {text[:200]}"
        elif response.status_code != 200:
            wrong[route.name] = f"{response.status_code} {text[:200]}"
        # An error may name what the caller sent; nothing else of the owner.
        sent = path + json.dumps(body)
        leaked = [s for s in owned.secrets() if s in text and s not in sent]
        if leaked:
            wrong[route.name] = f"leaks {leaked}: {text[:200]}"
    assert not wrong, json.dumps(wrong, indent=1)
    # Nothing of the owner's changed.
    job = tenant.client.get_job(owned.job_id)
    assert job.status == Job.COMPLETED
    assert tenant.client.get_configuration(owned.configuration_id).version == 1
    assert tenant.client.list_job_deliveries(owned.job_id).deliveries[0].try_count == 1
    keys = {k.id: k for k in tenant.client.list_api_keys().api_keys}
    assert not keys[owned.key_id].HasField("revoke_time")


def _revoked_key(tenant: TenantClient) -> str:
    created = tenant.client.create_api_key("to-revoke")
    tenant.client.revoke_api_key(created.api_key.id)
    return created.secret


def test_missing_revoked_and_malformed_keys_on_every_route(
    abuse_platform: PlatformHarness, tenant: TenantClient, owned: Owned
) -> None:
    revoked = _revoked_key(tenant)
    variants = {
        "missing": {},
        "revoked": {"Authorization": f"Bearer {revoked}"},
        "revoked x-api-key": {"X-Api-Key": revoked},
        "unknown": {"Authorization": "Bearer mk_not_a_real_key"},
        "truncated": {"Authorization": f"Bearer {tenant.api_key[:-1]}"},
        "malformed": {"X-Api-Key": "nonsense"},
        "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
        "empty bearer": {"Authorization": "Bearer"},
        # Past gRPC's 8 KiB metadata limit: still a 401, never a random 429.
        "huge": {"Authorization": "Bearer mk_" + "A" * 8000},
        "huge x-api-key": {"X-Api-Key": "mk_" + "A" * 20000},
    }
    wrong: dict[str, str] = {}
    for label, headers in variants.items():
        for route in ROUTES:
            path, body = _request(route, owned, tenant.receiver.url)
            response = _call(abuse_platform, route, path, body, headers)
            payload = response.json() if response.text else {}
            if response.status_code != 401 or payload.get("code") != 16:
                wrong[f"{label}: {route.name}"] = (
                    f"{response.status_code} {response.text[:200]}"
                )
            elif any(
                s in response.text and s not in path + json.dumps(body)
                for s in owned.secrets()
            ):
                wrong[f"{label}: {route.name}"] = f"leaks: {response.text[:200]}"
    assert not wrong, json.dumps(wrong, indent=1)
    # The owner's key still works; its things are untouched.
    assert tenant.client.get_job(owned.job_id).status == Job.COMPLETED


def test_a_revoked_key_stops_working_at_once_over_grpc(
    abuse_platform: PlatformHarness, tenant: TenantClient
) -> None:
    created = tenant.client.create_api_key("short-lived")
    with MutateClient(
        abuse_platform.gateway_address, created.secret, retries=NO_RETRY
    ) as client:
        assert client.get_configuration(tenant.configuration_id).id
        job = client.submit(CSV, tenant.configuration_id, file_name="a.csv")
        tenant.client.revoke_api_key(created.api_key.id)
        calls: dict[str, Callable[[], Any]] = {
            "GetJob": lambda: client.get_job(job.id),
            "ListJobs": lambda: client.list_jobs(),
            "CreateConfiguration": lambda: client.create_configuration(
                csv_configuration(name="x")
            ),
            "CreateApiKey": lambda: client.create_api_key("more"),
            "RotateWebhookSecret": lambda: client.rotate_webhook_secret(),
            "GetQueueStats": lambda: client.queue_stats(),
        }
        for name, call in calls.items():
            with pytest.raises(ApiError) as info:
                call()
            assert info.value.code == grpc.StatusCode.UNAUTHENTICATED, name
    # A revoked key made nothing after its revocation.
    names = [k.name for k in tenant.client.list_api_keys().api_keys]
    assert "more" not in names
    wait_until(
        lambda: tenant.client.get_job(job.id).status == Job.COMPLETED,
        timeout=30,
        what="the job made before the revocation to complete",
    )
