"""Transformer settings: defaults, milliseconds, checks, derived values."""

from __future__ import annotations

import pytest

from mutate.common.settings import SettingsError, load
from mutate.transformer.settings import TransformerSettings
from mutate.transformer.worker import options_from_settings


def test_defaults_are_production_values_in_seconds() -> None:
    s = load(TransformerSettings, {})

    assert s.grpc_port == 50053
    assert s.sync_max_bytes == 10 * 1024 * 1024
    assert s.job_delivery_limit == 5
    assert s.job_nak_delay == 1.0
    assert s.job_nak_delay_max == 60.0
    assert s.engine_timeout == 900.0
    assert s.test_engine_delay == 0.0
    assert s.worker_id  # hostname-pid
    assert s.processes >= 1
    assert s.concurrency == 2 * s.processes


def test_time_constants_are_read_in_milliseconds() -> None:
    s = load(
        TransformerSettings,
        {
            "MUTATE_JOB_NAK_DELAY_MS": "50",
            "MUTATE_JOB_NAK_DELAY_MAX_MS": "400",
            "MUTATE_WORKER_FETCH_TIMEOUT_MS": "250",
            "MUTATE_ENGINE_PROCESSES": "3",
            "MUTATE_WORKER_CONCURRENCY": "5",
        },
    )

    assert s.job_nak_delay == pytest.approx(0.05)
    assert s.job_nak_delay_max == pytest.approx(0.4)
    assert s.worker_fetch_timeout == pytest.approx(0.25)
    assert (s.processes, s.concurrency) == (3, 5)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MUTATE_JOB_DELIVERY_LIMIT": "0"}, "MUTATE_JOB_DELIVERY_LIMIT"),
        ({"MUTATE_SYNC_MAX_BYTES": "-1"}, "MUTATE_SYNC_MAX_BYTES"),
        ({"MUTATE_JOB_HEARTBEAT_FRACTION": "1.5"}, "MUTATE_JOB_HEARTBEAT_FRACTION"),
        (
            {"MUTATE_JOB_NAK_DELAY_MS": "500", "MUTATE_JOB_NAK_DELAY_MAX_MS": "100"},
            "MUTATE_JOB_NAK_DELAY_MAX_MS",
        ),
        ({"MUTATE_WORKER_ID": "two words"}, "MUTATE_WORKER_ID"),
        ({"MUTATE_TEST_ENGINE_DELAY_MS": "-5"}, "MUTATE_TEST_ENGINE_DELAY_MS"),
    ],
    ids=["limit", "sync", "fraction", "nak-max", "worker-id", "delay"],
)
def test_bad_values_name_their_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load(TransformerSettings, env)


def test_nak_delay_grows_per_delivery_up_to_the_cap() -> None:
    s = load(
        TransformerSettings,
        {
            "MUTATE_JOB_NAK_DELAY_MS": "100",
            "MUTATE_JOB_NAK_DELAY_FACTOR": "3",
            "MUTATE_JOB_NAK_DELAY_MAX_MS": "1000",
        },
    )
    options = options_from_settings(s, ack_wait=2.0, max_input_bytes=0)

    delays = [options.nak_delay_for(d) for d in range(1, 6)]

    assert delays == pytest.approx([0.1, 0.3, 0.9, 1.0, 1.0])
    assert options.heartbeat_interval == pytest.approx(0.6)
