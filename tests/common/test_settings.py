"""Settings: env parsing, units, validation and the variable listing."""

from __future__ import annotations

import dataclasses

import pytest

from mutate.common.service_settings import CommonSettings, NatsSettings
from mutate.common.settings import SettingsError, describe, load, redacted, setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Example(CommonSettings, NatsSettings):
    timeout: float = setting("EXAMPLE_TIMEOUT_MS", 1500, unit="ms", help="t")
    networks: tuple[str, ...] = setting("EXAMPLE_NETWORKS", (), help="n")
    token: str = setting("EXAMPLE_TOKEN", "", secret=True, help="s")
    limit: int | None = setting("EXAMPLE_LIMIT", None, help="l")


def test_load_defaults_when_unset() -> None:
    s = load(_Example, {})
    assert s.grpc_port == 50051
    assert s.timeout == 1500  # defaults are already in the field's unit
    assert s.networks == ()
    assert s.limit is None


def test_load_converts_types_and_milliseconds() -> None:
    s = load(
        _Example,
        {
            "EXAMPLE_TIMEOUT_MS": "250",
            "EXAMPLE_NETWORKS": "127.0.0.0/8, ::1/128",
            "MUTATE_GRPC_PORT": "6000",
            "MUTATE_SHUTDOWN_GRACE_MS": "20",
            "EXAMPLE_LIMIT": "7",
        },
    )
    assert s.timeout == pytest.approx(0.25)
    assert s.networks == ("127.0.0.0/8", "::1/128")
    assert s.grpc_port == 6000
    assert s.shutdown_grace == pytest.approx(0.02)
    assert s.limit == 7


def test_load_names_the_bad_variable() -> None:
    with pytest.raises(SettingsError, match="MUTATE_GRPC_PORT='x'"):
        load(_Example, {"MUTATE_GRPC_PORT": "x"})
    with pytest.raises(SettingsError, match="MUTATE_LOG_FORMAT"):
        load(_Example, {"MUTATE_LOG_FORMAT": "xml"})


def test_secret_values_never_echoed() -> None:
    s = load(_Example, {"EXAMPLE_TOKEN": "hunter2"})
    assert redacted(s)["token"] == "***"
    with pytest.raises(SettingsError) as info:
        load(_Example, {"MUTATE_NATS_URL": "nats://u:pw@h", "MUTATE_GRPC_PORT": "0"})
    assert "pw" not in str(info.value)


def test_describe_lists_every_variable_once() -> None:
    names = [info.env for info in describe(_Example)]
    assert len(names) == len(set(names))
    assert {"MUTATE_GRPC_PORT", "MUTATE_NATS_URL", "EXAMPLE_TOKEN"} <= set(names)
    secret = {i.env for i in describe(_Example) if i.secret}
    assert secret == {"MUTATE_NATS_URL", "EXAMPLE_TOKEN"}
