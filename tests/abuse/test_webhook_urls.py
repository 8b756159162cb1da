"""Webhook URLs pointing at private or metadata addresses are refused on save.

The platform allows loopback only (WEBHOOK_ALLOWED_NETWORKS=127.0.0.0/8,::1/128).
Every URL here is an address literal (no DNS), and nothing is ever sent to
one: each request is built so that, were the URL check missing, it would
still fail later without sending anything (an invalid rule, a file of the
wrong type), and the test asserts the URL check's reason.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable

import grpc
import httpx
import pytest

from mutate.client import ApiError
from mutate.devstack.harness import PlatformHarness
from mutate.v1 import configuration_pb2

from ..faults.support import CSV, TenantClient, csv_configuration

pytestmark = pytest.mark.slow

REFUSED = [
    "http://10.0.0.1/hook",
    "http://192.168.1.10:8080/hook",
    "http://172.16.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.170.2/v2/credentials",
    "http://100.100.100.200/",
    "http://100.64.0.1/",
    "http://0.0.0.0/",
    "http://[::ffff:10.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[fd00:ec2::254]/",
    "http://[fe80::1]/",
    "http://[64:ff9b::a00:1]/",
    "http://[2002:a00:1::]/",
    "http://0x0a000001/",
    "http://167772161/",
    "http://10.1/",
    "http://224.0.0.1/",
    "http://user:secret@127.0.0.1/hook",
    "ftp://127.0.0.1/hook",
    "file:///etc/passwd",
    "gopher://127.0.0.1:70/",
    "javascript:alert(1)",
]

# A rule the transformer refuses: a configuration carrying it is never saved.
_INVALID_RULE = configuration_pb2.Rule(
    id="drop", delete_rows=configuration_pb2.DeleteRows()
)


def _refusal(call: Callable[[], object]) -> str:
    """ "" when `call` was refused for its webhook URL, else what happened."""
    try:
        call()
    except ApiError as exc:
        if exc.code == grpc.StatusCode.INVALID_ARGUMENT and (
            exc.reason == "WEBHOOK_URL_REFUSED"
        ):
            return ""
        return str(exc)
    return "accepted"


def _rest_refusal(platform: PlatformHarness, tenant: TenantClient, url: str) -> str:
    response = httpx.post(
        f"{platform.rest_url}/v1/jobs",
        headers={"Authorization": f"Bearer {tenant.api_key}"},
        content=json.dumps(
            {
                "configurationId": tenant.configuration_id,
                "fileContent": base64.b64encode(CSV).decode(),
                "fileName": "x.json",
                "webhookUrl": url,
            }
        ),
        timeout=30,
    )
    reasons = [d.get("reason") for d in response.json().get("details", [])]
    if response.status_code == 400 and "WEBHOOK_URL_REFUSED" in reasons:
        return ""
    return f"{response.status_code} {response.text[:200]}"


def test_private_webhook_urls_are_refused_on_every_save(
    tenant: TenantClient, abuse_platform: PlatformHarness
) -> None:
    client = tenant.client
    wrong: dict[str, str] = {}
    for url in REFUSED:
        checks = {
            # A configuration's default URL, on create and on update (both
            # would also fail on the invalid rule).
            "create configuration": lambda url=url: client.create_configuration(
                csv_configuration(webhook_url=url, rules=[_INVALID_RULE])
            ),
            "update configuration": lambda url=url: client.update_configuration(
                tenant.configuration_id,
                configuration_pb2.Configuration(webhook_url=url, rules=[_INVALID_RULE]),
                update_mask=["webhook_url", "rules"],
            ),
            # A job's URL: a JSON file name for a CSV configuration, so the
            # job would be refused anyway after the URL check.
            "create job": lambda url=url: client.submit(
                CSV, tenant.configuration_id, file_name="x.json", webhook_url=url
            ),
        }
        for what, call in checks.items():
            problem = _refusal(call)
            if problem:
                wrong[f"{what} {url}"] = problem
        problem = _rest_refusal(abuse_platform, tenant, url)
        if problem:
            wrong[f"REST create job {url}"] = problem
    assert not wrong, json.dumps(wrong, indent=1)
    # Nothing was made, so nothing can ever be sent.
    assert not client.list_jobs().jobs
    configuration = client.get_configuration(tenant.configuration_id)
    assert (configuration.version, configuration.webhook_url) == (1, "")
    assert not client.list_deliveries().deliveries


def test_loopback_is_allowed_here_but_metadata_never(
    tenant: TenantClient,
) -> None:
    # The allow-list lets the local receiver in...
    saved = tenant.client.create_configuration(
        csv_configuration(webhook_url=tenant.receiver.url)
    )
    assert saved.webhook_url == tenant.receiver.url
    # The safety nets of the test above are real: with an allowed URL, the
    # invalid rule and the wrong file type are refused all the same.
    with pytest.raises(ApiError) as invalid:
        tenant.client.create_configuration(
            csv_configuration(webhook_url=tenant.receiver.url, rules=[_INVALID_RULE])
        )
    assert invalid.value.reason == "INVALID_CONFIGURATION"
    with pytest.raises(ApiError) as wrong_type:
        tenant.client.submit(
            CSV,
            tenant.configuration_id,
            file_name="x.json",
            webhook_url=tenant.receiver.url,
        )
    assert wrong_type.value.reason == "WRONG_FILE_TYPE"
    # ...while no allow-list entry can let a metadata address in.
    for url in ("http://169.254.169.254/", "http://[fd00:ec2::254]/"):
        refused = functools.partial(
            tenant.client.create_configuration,
            csv_configuration(webhook_url=url, rules=[_INVALID_RULE]),
        )
        assert _refusal(refused) == ""
