"""`mutate-dev infra` as a developer runs it: start, Ctrl-C, start again."""

from __future__ import annotations

import io
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import psutil
import psycopg
import pytest
from minio import Minio

from mutate.devstack import _proc
from mutate.devstack import stack as stk
from mutate.devstack.launcher import (
    DEFAULT_PORTS,
    Platform,
    PlatformConfig,
    PortInUseError,
)
from mutate.devstack.processes import check_health

from .helpers import processes_mentioning, wait_gone

pytestmark = pytest.mark.slow


@pytest.fixture
def home() -> Iterator[Path]:
    # Directly in the temp dir, not in pytest's private tree: see
    # devstack_dir for why PostgreSQL data must not sit under it.
    path = Path(tempfile.mkdtemp(prefix="mutate-dev-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def port_args() -> list[str]:
    ports = _proc.free_ports(len(DEFAULT_PORTS))
    args: list[str] = []
    for name, port in zip(DEFAULT_PORTS, ports, strict=True):
        args += ["--port", f"{name}={port}"]
    return args


class Launcher:
    """One `mutate-dev infra` subprocess and what it reported."""

    def __init__(self, home: Path, port_args: list[str], log: Path) -> None:
        self.home = home
        self.log = log.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mutate.devstack.cli",
                "infra",
                "--home",
                str(home),
                *port_args,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.state = self._wait_state(timeout=60.0)

    def _wait_state(self, timeout: float) -> dict[str, Any]:
        path = self.home / "stack.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self._log_text()
            if path.exists():
                state: dict[str, Any] = json.loads(path.read_text())
                if state["pid"] == self.process.pid:
                    return state
            time.sleep(0.1)
        raise AssertionError(f"launcher not ready:\n{self._log_text()}")

    def _log_text(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def owned_pids(self) -> list[int]:
        """The launcher, its children (servers, reaper) and the postmaster."""
        launcher = psutil.Process(self.process.pid)
        pids = [self.process.pid] + [c.pid for c in launcher.children(recursive=True)]
        pids += [pid for pid in self.state["pids"].values() if pid]
        return sorted(set(pids))

    def s3(self) -> Minio:
        s3 = self.state["s3"]
        return Minio(
            s3["endpoint"],
            access_key=s3["access_key"],
            secret_key=s3["secret_key"],
            secure=False,
            region=s3["region"],
        )

    def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=30)
        finally:
            self.log.close()


async def _nats_messages(url: str, *, publish: bool) -> int:
    client = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = client.jetstream()
        if publish:
            await js.add_stream(name="KEPT", subjects=["kept.>"])
            await js.publish("kept.one", b"1")
        return int((await js.stream_info("KEPT")).state.messages)
    finally:
        await client.close()


def _assert_nothing_left(launcher: Launcher, pids: list[int]) -> None:
    assert wait_gone(pids) == [], f"left running: {pids}"
    assert processes_mentioning(str(launcher.home)) == []


async def test_launcher_stops_cleanly_and_finds_its_data_again(
    home: Path, port_args: list[str], tmp_path: Path
) -> None:
    first = Launcher(home, port_args, tmp_path / "launcher.log")
    bucket = first.state["s3"]["bucket"]
    first.s3().put_object(bucket, "kept.txt", io.BytesIO(b"kept"), 4)
    with psycopg.connect(first.state["database_url"], autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (id int)")
        conn.execute("INSERT INTO kept VALUES (1)")
    assert await _nats_messages(first.state["nats_url"], publish=True) == 1

    pids = first.owned_pids()
    assert first.stop(signal.SIGINT) == 0
    _assert_nothing_left(first, pids)
    assert not (home / "stack.json").exists()
    # The topology is reported in one line, not one bare line per item.
    log = (tmp_path / "launcher.log").read_text()
    assert "nats topology: stream MUTATE_JOBS created" in log
    assert "topology changed" not in log

    second = Launcher(home, port_args, tmp_path / "launcher.log")
    assert second.s3().get_object(bucket, "kept.txt").read() == b"kept"
    with psycopg.connect(second.state["database_url"]) as conn:
        assert conn.execute("SELECT count(*) FROM kept").fetchone() == (1,)
    assert await _nats_messages(second.state["nats_url"], publish=False) == 1

    pids = second.owned_pids()
    assert second.stop(signal.SIGTERM) == 0
    _assert_nothing_left(second, pids)


def test_launcher_killed_leaves_nothing_behind(
    home: Path, port_args: list[str], tmp_path: Path
) -> None:
    launcher = Launcher(home, port_args, tmp_path / "launcher.log")
    pids = launcher.owned_pids()
    assert len(pids) >= 5  # launcher, reaper, nats, weed, postmaster

    # SIGKILL: no cleanup code runs; the reaper must notice and stop it all.
    assert launcher.stop(signal.SIGKILL) == -signal.SIGKILL
    _assert_nothing_left(launcher, pids)


def test_launcher_refuses_a_second_run_on_the_same_folder(
    home: Path, port_args: list[str], tmp_path: Path
) -> None:
    first = Launcher(home, port_args, tmp_path / "launcher.log")
    try:
        second = subprocess.run(
            [sys.executable, "-m", "mutate.devstack.cli", "infra", "--home", str(home)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert "another mutate-dev is running" in second.stderr
    finally:
        pids = first.owned_pids()
        assert first.stop(signal.SIGINT) == 0
    _assert_nothing_left(first, pids)


def test_platform_runs_services_in_order_and_stops_them(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stand-ins for the four services: the dummy serves gRPC health, and
    # answers `migrate` and `admin create-org` like the real commands would.
    dummy = [sys.executable, str(Path(__file__).with_name("dummy_service.py"))]
    monkeypatch.setattr(stk, "service_executable", lambda service: dummy)
    names = list(DEFAULT_PORTS)
    ports = dict(zip(names, _proc.free_ports(len(names)), strict=True))
    platform = Platform(PlatformConfig(home=home, ports=ports))
    try:
        info = platform.start()
        assert [p.name for p in platform.processes] == list(stk.SERVICES)
        for service in stk.SERVICES:
            assert check_health(info.address(service))
        assert platform.api_key == f"dummy-key-{ports['gateway-grpc']}"
        state = json.loads(platform.state_path.read_text())
        assert state["api_key"] == platform.api_key
        assert state["services"]["gateway"] == f"127.0.0.1:{ports['gateway-grpc']}"
        commands = (home / "logs" / "gateway-commands.log").read_text()
        assert "migrated" in commands
        assert "dummy-key" in platform.summary()
        pids = [pid for pid in state["pids"].values() if pid]
    finally:
        platform.stop()
    assert len(pids) == 7
    assert wait_gone(pids) == []
    assert processes_mentioning(str(home)) == []
    assert not platform.state_path.exists()


def test_a_port_held_for_a_moment_is_waited_for(home: Path) -> None:
    # As a process forked while the ports were being picked holds them
    # until it execs.
    names = list(DEFAULT_PORTS)
    ports = dict(zip(names, _proc.free_ports(len(names)), strict=True))
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", ports["nats"]))
    releasing = threading.Timer(0.3, holder.close)
    releasing.start()
    platform = Platform(PlatformConfig(home=home, ports=ports))
    try:
        platform._check_ports()
    finally:
        releasing.join()
        holder.close()

    assert _proc.port_is_free("127.0.0.1", ports["nats"])


def test_platform_refuses_a_busy_port_before_starting_anything(home: Path) -> None:
    names = list(DEFAULT_PORTS)
    ports = dict(zip(names, _proc.free_ports(len(names)), strict=True))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        # Another engineer's platform (or any program) listening there.
        other.bind(("127.0.0.1", ports["nats"]))
        other.listen()
        platform = Platform(PlatformConfig(home=home, ports=ports))
        with pytest.raises(PortInUseError) as caught:
            platform.start()
    message = str(caught.value)
    assert f"{ports['nats']} (nats)" in message
    assert "--port nats=N" in message and "MUTATE_DEV_PORT_NATS=N" in message
    assert "gateway-http" not in message  # only the busy one is named
    assert [s.state.name for s in platform.servers] == ["NEW", "NEW", "NEW"]
    assert not platform.state_path.exists()
    # The folder's lock was released: a run with free ports may follow.
    assert platform._lock_file is None
