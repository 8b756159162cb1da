"""mutate.common.webhooks against the standardwebhooks reference library."""

from __future__ import annotations

import hmac
import json
import time

import pytest
from standardwebhooks.webhooks import Webhook

from mutate.common import webhooks

BODY = json.dumps({"jobId": "job_1", "status": "completed"}).encode()


def test_generated_secrets_are_whsec_with_a_256_bit_key() -> None:
    secret = webhooks.generate_secret()
    assert secret.startswith("whsec_")
    assert len(webhooks.secret_key(secret)) == 32
    assert secret != webhooks.generate_secret()


def test_reference_library_verifies_what_we_sign() -> None:
    secret = webhooks.generate_secret()
    headers = webhooks.sign([webhooks.secret_key(secret)], "msg_abc", BODY)
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)


def test_we_verify_what_the_reference_library_signs() -> None:
    secret = webhooks.generate_secret()
    reference = Webhook(secret)
    now = int(time.time())
    signature = reference.sign("msg_abc", _utc(now), BODY.decode())
    headers = {
        "Webhook-Id": "msg_abc",
        "Webhook-Timestamp": str(now),
        "Webhook-Signature": signature,
    }
    assert webhooks.verify(secret, headers, BODY) == json.loads(BODY)


def test_any_of_several_signatures_passes() -> None:
    old, new = webhooks.generate_secret(), webhooks.generate_secret()
    keys = [webhooks.secret_key(new), webhooks.secret_key(old)]
    headers = webhooks.sign(keys, "msg_1", BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        webhooks.verify(secret, headers, BODY)
        Webhook(secret).verify(BODY, headers)
    with pytest.raises(webhooks.WebhookVerificationError):
        webhooks.verify(webhooks.generate_secret(), headers, BODY)


def test_receiver_may_hold_several_secrets() -> None:
    mine = webhooks.generate_secret()
    headers = webhooks.sign([webhooks.secret_key(mine)], "msg_1", BODY)
    webhooks.verify([webhooks.generate_secret(), mine], headers, BODY)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"webhook-id": "msg_other"}, "no matching signature"),
        ({"webhook-signature": "v1,AAAA"}, "no matching signature"),
        ({"webhook-signature": "v2,whatever"}, "no matching signature"),
        ({"webhook-signature": "garbage"}, "no matching signature"),
        ({"webhook-timestamp": "soon"}, "not a number"),
        ({"webhook-id": ""}, "missing"),
    ],
)
def test_tampered_headers_fail(change: dict[str, str], message: str) -> None:
    secret = webhooks.generate_secret()
    headers = {**webhooks.sign([webhooks.secret_key(secret)], "msg_1", BODY), **change}
    with pytest.raises(webhooks.WebhookVerificationError, match=message):
        webhooks.verify(secret, headers, BODY)


def test_tampered_body_fails() -> None:
    secret = webhooks.generate_secret()
    headers = webhooks.sign([webhooks.secret_key(secret)], "msg_1", BODY)
    with pytest.raises(webhooks.WebhookVerificationError):
        webhooks.verify(secret, headers, BODY.replace(b"completed", b"failed"))


def test_replays_outside_the_tolerance_fail() -> None:
    secret = webhooks.generate_secret()
    key = [webhooks.secret_key(secret)]
    now = time.time()
    old = webhooks.sign(key, "msg_1", BODY, timestamp=int(now) - 301)
    future = webhooks.sign(key, "msg_1", BODY, timestamp=int(now) + 301)
    with pytest.raises(webhooks.WebhookVerificationError, match="too old"):
        webhooks.verify(secret, old, BODY, now=now)
    with pytest.raises(webhooks.WebhookVerificationError, match="too new"):
        webhooks.verify(secret, future, BODY, now=now)
    webhooks.verify(secret, old, BODY, tolerance=600, now=now)


def test_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(webhooks.hmac, "compare_digest", spy)
    secret = webhooks.generate_secret()
    headers = webhooks.sign([webhooks.secret_key(secret)], "msg_1", BODY)
    webhooks.verify(secret, headers, BODY)
    assert calls


def test_bad_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        webhooks.secret_key("whsec_***not base64***")
    with pytest.raises(ValueError, match="empty"):
        webhooks.secret_key("whsec_")


def _utc(seconds: int):  # type: ignore[no-untyped-def]
    import datetime as dt

    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
