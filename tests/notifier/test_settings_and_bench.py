"""Notifier settings, the secret box, and a tiny run of the benchmark."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mutate.common.errors import Internal
from mutate.common.settings import SettingsError, load
from mutate.notifier._dispatcher import Backoff
from mutate.notifier._secrets import SecretBox
from mutate.notifier.settings import NotifierSettings

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_seconds_in_code_and_ms_in_the_environment() -> None:
    s = load(NotifierSettings, {"MUTATE_DATABASE_URL": "postgresql:///x"})
    assert s.webhook_timeout == 30.0
    assert s.webhook_max_retries == 5
    assert s.grpc_port == 50054
    assert s.webhook_allowed_networks == ()
    fast = load(
        NotifierSettings,
        {
            "MUTATE_DATABASE_URL": "postgresql:///x",
            "WEBHOOK_TIMEOUT": "250",
            "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8, ::1/128",
        },
    )
    assert fast.webhook_timeout == 0.25
    assert len(fast.network_policy.allowed_networks) == 2


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WEBHOOK_SECRET", "not-a-secret!"),
        ("WEBHOOK_ALLOWED_NETWORKS", "10.0.0.0/33"),
        ("WEBHOOK_BACKOFF_JITTER", "1.5"),
        ("WEBHOOK_MAX_RETRIES", "0"),
    ],
)
def test_bad_settings_fail_at_start(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load(NotifierSettings, {"MUTATE_DATABASE_URL": "x", name: value})


def test_backoff_grows_is_capped_and_honours_retry_after() -> None:
    backoff = Backoff(base=10.0, factor=6.0, maximum=3600.0, jitter=0.0)
    assert [backoff.delay(n) for n in (1, 2, 3, 4, 5)] == [10, 60, 360, 2160, 3600]
    assert backoff.delay(1, retry_after=120) == 120
    assert backoff.delay(1, retry_after=99999) == 3600
    jittered = Backoff(base=10.0, factor=6.0, maximum=3600.0, jitter=0.2)
    assert all(8.0 <= jittered.delay(1) <= 10.0 for _ in range(100))


def test_secret_box_seals_per_organization_and_rotates_keys() -> None:
    k1, k2 = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
    box = SecretBox.from_setting(k1)
    sealed = box.seal("whsec_abc", organization_id="org_a")
    assert "whsec_abc" not in sealed
    assert box.open(sealed, organization_id="org_a") == "whsec_abc"
    with pytest.raises(Internal):
        box.open(sealed, organization_id="org_b")
    rotated = SecretBox.from_setting(f"{k2},{k1}")
    assert rotated.open(sealed, organization_id="org_a") == "whsec_abc"
    plain = SecretBox.from_setting("")
    assert plain.open(plain.seal("whsec_x", organization_id="o"), organization_id="o")
    with pytest.raises(Internal):
        plain.open(sealed, organization_id="org_a")
    with pytest.raises(SettingsError):
        SecretBox.from_setting("c2hvcnQ=")


@pytest.mark.slow
def test_benchmark_tiny_run() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "notifier_bench.py"),
            "--events",
            "40",
            "--rate",
            "100",
            "--slow-events",
            "2",
            "--slow-delay",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "deliveries/s" in result.stdout
    assert "slows the others by" in result.stdout
