"""Service processes: health-gated start, graceful and forced stops."""

from __future__ import annotations

import dataclasses
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mutate.devstack import _proc
from mutate.devstack import stack as stk
from mutate.devstack.processes import ProcessState, ServiceProcessError, check_health

from .helpers import wait_gone

DUMMY = Path(__file__).with_name("dummy_service.py")
DUMMY_ARGV = (sys.executable, str(DUMMY))


def _dummy_env(port: int, **extra: str) -> dict[str, str]:
    env = stk.clean_environment()
    env.update(MUTATE_GRPC_HOST="127.0.0.1", MUTATE_GRPC_PORT=str(port), **extra)
    return env


def _group_members(pgid: int) -> list[int]:
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and _pgid(int(entry.name)) == pgid
    ]


def _pgid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def test_service_process_healthy_then_stopped_gracefully(
    start_process: Any, tmp_path: Path
) -> None:
    port = _proc.free_port()
    marker = tmp_path / "marker"
    process = start_process(
        "dummy",
        [sys.executable, str(DUMMY), "--delay", "0.3"],
        health_address=f"127.0.0.1:{port}",
        env=_dummy_env(port, DUMMY_MARKER=str(marker)),
    )
    assert process.state in (ProcessState.RUNNING,)
    assert check_health(f"127.0.0.1:{port}")
    assert process.pid is not None
    members = _group_members(process.pid)
    assert len(members) >= 2  # the server and its `sleep` child

    assert process.stop() == 0
    assert marker.read_text() == "stopped"
    assert wait_gone(members) == []
    assert process.state is ProcessState.STOPPED


def test_service_process_killed_after_grace_when_ignoring_sigterm(
    start_process: Any,
) -> None:
    port = _proc.free_port()
    process = start_process(
        "stubborn",
        [sys.executable, str(DUMMY), "--ignore-sigterm"],
        health_address=f"127.0.0.1:{port}",
        env=_dummy_env(port),
        stop_timeout=1.0,
    )
    assert process.pid is not None
    members = _group_members(process.pid)

    started = time.monotonic()
    assert process.stop() == -signal.SIGKILL
    assert 0.9 < time.monotonic() - started < 8.0
    assert wait_gone(members) == []
    assert "ignoring SIGTERM" in process.log_text()


def test_service_process_kill_is_immediate(start_process: Any) -> None:
    port = _proc.free_port()
    process = start_process(
        "victim",
        [sys.executable, str(DUMMY)],
        health_address=f"127.0.0.1:{port}",
        env=_dummy_env(port),
    )
    assert process.pid is not None
    members = _group_members(process.pid)
    assert process.kill() == -signal.SIGKILL
    assert wait_gone(members) == []
    assert not check_health(f"127.0.0.1:{port}", timeout=0.3)


def test_service_process_exiting_early_reports_its_log(start_process: Any) -> None:
    port = _proc.free_port()
    with pytest.raises(ServiceProcessError, match="exiting at once"):
        start_process(
            "quitter",
            [sys.executable, str(DUMMY), "--exit", "3"],
            health_address=f"127.0.0.1:{port}",
            env=_dummy_env(port),
        )


def test_service_process_never_healthy_times_out(start_process: Any) -> None:
    port = _proc.free_port()
    with pytest.raises(ServiceProcessError, match="not healthy"):
        start_process(
            "slowpoke",
            [sys.executable, str(DUMMY), "--delay", "60"],
            health_address=f"127.0.0.1:{port}",
            env=_dummy_env(port),
            start_timeout=1.0,
            stop_timeout=2.0,
        )


def test_service_environment_maps_the_stack() -> None:
    info = stk.StackInfo(
        nats_url="nats://127.0.0.1:4222",
        database_url="postgresql://postgres@/mutate?host=/tmp/pg",
        s3=stk.S3Settings(
            endpoint="127.0.0.1:8333",
            access_key="ak",
            secret_key="sk",
            bucket="b",
        ),
    )
    gateway = stk.service_environment(info, "gateway")
    assert gateway["MUTATE_GRPC_PORT"] == "50051"
    assert gateway["MUTATE_HTTP_PORT"] == "8080"
    assert gateway["MUTATE_STORAGE_ADDRESS"] == "127.0.0.1:50052"
    assert gateway["MUTATE_TRANSFORMER_ADDRESS"] == "127.0.0.1:50053"
    assert gateway["MUTATE_NOTIFIER_ADDRESS"] == "127.0.0.1:50054"
    assert gateway["S3_ENDPOINT"] == "127.0.0.1:8333"
    assert gateway["S3_SECURE"] == "false"
    assert gateway["STORAGE_PROVIDER"] == "minio"
    assert gateway["WEBHOOK_ALLOWED_NETWORKS"] == "127.0.0.0/8,::1/128"
    storage = stk.service_environment(info, "storage")
    assert storage["MUTATE_GRPC_PORT"] == "50052"
    assert "MUTATE_HTTP_PORT" not in storage
    assert "sk" not in repr(info)


def test_missing_service_module_is_named() -> None:
    with pytest.raises(stk.ServiceMissingError, match="mutate-nothing"):
        stk.require_module("mutate.nothing.__main__", command="mutate-nothing")


def test_clean_environment_drops_service_variables() -> None:
    env = stk.clean_environment(
        {"PATH": "/bin", "MUTATE_GRPC_PORT": "1", "S3_BUCKET": "x", "OTEL_A": "y"}
    )
    assert env == {"PATH": "/bin"}


def test_start_service_fixture_runs_a_service_against_the_stack(
    start_service: Any, stack_info: stk.StackInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stk, "service_executable", lambda service: [*DUMMY_ARGV])
    first = start_service("storage")
    second = start_service(
        "storage", stack=dataclasses.replace(stack_info, ports=stk.ServicePorts.free())
    )
    assert (first.name, second.name) == ("storage", "storage-2")
    assert first.env["MUTATE_GRPC_PORT"] == str(stack_info.ports.storage)
    assert first.env["S3_BUCKET"] == stack_info.s3.bucket
    assert first.env["MUTATE_DATABASE_URL"] == stack_info.database_url
    assert check_health(stack_info.address("storage"))
    assert first.log_path != second.log_path
