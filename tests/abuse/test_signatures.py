"""Forged and replayed webhooks, checked with the receiver helper.

A real delivery from the platform is captured by the test's receiver; then
tampered copies of it, and the genuine one replayed later, must all fail
`mutate.common.webhooks.verify` (and the reference `standardwebhooks`
library agrees), while the genuine one verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from mutate.common import webhooks

from ..faults.support import TenantClient

pytestmark = pytest.mark.slow


def _sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = webhooks.secret_key(secret)
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(digest.digest()).decode()


def test_forged_and_replayed_signatures_are_refused(tenant: TenantClient) -> None:
    job = tenant.submit(mode="auto")
    tenant.receiver.wait_delivered([job.id], timeout=30)
    genuine = next(t for t in tenant.receiver.tries if t.answered == 200)
    headers, body = genuine.headers, genuine.body
    secret = tenant.secret
    assert secret is not None
    stamp = int(headers["webhook-timestamp"])
    msg_id = headers["webhook-id"]
    now = float(stamp)

    # The genuine message verifies, with our helper and the reference library.
    assert webhooks.verify(secret, headers, body, now=now)["jobId"] == job.id
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    reference = Webhook(secret)

    other_secret = webhooks.generate_secret()
    tampered_body = body.replace(b'"completed"', b'"failed"', 1)
    assert tampered_body != body
    forged = {
        "tampered body": (headers, tampered_body),
        "other secret": (
            {**headers, "webhook-signature": _sign(other_secret, msg_id, stamp, body)},
            body,
        ),
        "other message id": ({**headers, "webhook-id": "msg_forged"}, body),
        "signature of another id": (
            {
                **headers,
                "webhook-id": "msg_forged",
                "webhook-signature": _sign(other_secret, "msg_forged", stamp, body),
            },
            body,
        ),
        "timestamp moved, old signature": (
            {**headers, "webhook-timestamp": str(stamp + 1)},
            body,
        ),
        "no signature": (
            {k: v for k, v in headers.items() if k != "webhook-signature"},
            body,
        ),
        "empty signature": ({**headers, "webhook-signature": ""}, body),
        "unknown scheme": (
            {
                **headers,
                "webhook-signature": headers["webhook-signature"].replace("v1,", "v2,"),
            },
            body,
        ),
        "garbage base64": ({**headers, "webhook-signature": "v1,!!!notbase64"}, body),
        "truncated signature": (
            {**headers, "webhook-signature": headers["webhook-signature"][:-8]},
            body,
        ),
        "body re-serialized": (
            headers,
            json.dumps(json.loads(body), indent=2).encode(),
        ),
    }
    for label, (forged_headers, forged_body) in forged.items():
        with pytest.raises(webhooks.WebhookVerificationError):
            webhooks.verify(secret, forged_headers, forged_body, now=now)
            pytest.fail(f"forged message accepted: {label}")
        # (the reference library lets binascii.Error, a ValueError, out of
        # a signature that is not base64)
        with pytest.raises((WebhookVerificationError, ValueError)):
            reference.verify(forged_body, forged_headers)
            pytest.fail(f"reference library accepted: {label}")

    # Replays: the genuine message, later than the tolerance...
    later = now + webhooks.DEFAULT_TOLERANCE + 1
    with pytest.raises(webhooks.WebhookVerificationError, match="too old"):
        webhooks.verify(secret, headers, body, now=later)
    # ...or from the future...
    with pytest.raises(webhooks.WebhookVerificationError, match="too new"):
        webhooks.verify(secret, headers, body, now=now - webhooks.DEFAULT_TOLERANCE - 1)
    # ...or re-stamped to look fresh (its signature then no longer matches).
    fresh = {**headers, "webhook-timestamp": str(int(later))}
    with pytest.raises(webhooks.WebhookVerificationError, match="signature"):
        webhooks.verify(secret, fresh, body, now=later)
    # Within the tolerance a replay verifies: receivers de-duplicate on
    # webhook-id (docs/webhooks.md), which stays the same on every try.
    assert webhooks.verify(secret, headers, body, now=now + 60)["jobId"] == job.id
    assert {t.webhook_id for t in tenant.receiver.tries} == {msg_id}
