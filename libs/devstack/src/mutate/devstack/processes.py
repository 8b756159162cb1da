"""Mutate services (or any gRPC server) as real subprocesses.

A `ServiceProcess` runs a command in its own process group with a given
environment, appends its output to a log file, and counts as started once its
gRPC health service (grpc.health.v1) answers SERVING. Stopping sends SIGTERM
to the group and SIGKILL after a grace period; `kill()` is the abrupt variant
for fault tests.
"""

from __future__ import annotations

import enum
import logging
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mutate.devstack import _proc
from mutate.devstack._reaper import get_reaper

logger = logging.getLogger(__name__)


class ProcessState(enum.Enum):
    """Where a service process is in its life."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class ServiceProcessError(RuntimeError):
    """A process did not become healthy; the message has its log tail."""


def check_health(address: str, *, service: str = "", timeout: float = 1.0) -> bool:
    """Whether the gRPC server at `address` reports `service` as SERVING."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


class ServiceProcess:
    """One subprocess with a health address, stopped as a process group."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        health_address: str | None = None,
        health_service: str = "",
        cwd: Path | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = _proc.DEFAULT_STOP_TIMEOUT,
    ) -> None:
        self.name = name
        self.argv = [os.fspath(arg) for arg in argv]
        self.log_path = log_path
        self.env = dict(env) if env is not None else dict(os.environ)
        self.health_address = health_address
        self.health_service = health_service
        self.cwd = cwd
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._state = ProcessState.NEW

    def __repr__(self) -> str:
        return (
            f"<ServiceProcess {self.name} {self._state.value} pid={self.pid} "
            f"health={self.health_address}>"
        )

    @property
    def state(self) -> ProcessState:
        return self._state

    @property
    def pid(self) -> int | None:
        """Process id (and process group id) while started."""
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """Exit code once the process ended, else None."""
        return self._process.poll() if self._process is not None else None

    def is_alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self, *, wait: bool = True) -> Self:
        """Start the process; with `wait`, block until it is healthy."""
        if self.is_alive():
            return self
        self._state = ProcessState.STARTING
        self._process = _proc.spawn(
            self.argv, log_path=self.log_path, env=self.env, cwd=self.cwd
        )
        get_reaper().track_group(self._process.pid)
        logger.info("started %s (pid %s)", self.name, self._process.pid)
        if wait:
            try:
                self.wait_healthy()
            except BaseException:
                self._state = ProcessState.FAILED
                self._end(lambda p: _proc.stop_group(p, timeout=self.stop_timeout))
                raise
        return self

    def wait_healthy(self, timeout: float | None = None) -> None:
        """Block until the health check answers SERVING (or fail with the log)."""
        if self.health_address is None:
            self._state = ProcessState.RUNNING
            return
        limit = self.start_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if not self.is_alive():
                raise ServiceProcessError(
                    self._failure(f"exited with code {self.returncode} while starting")
                )
            if check_health(
                self.health_address, service=self.health_service, timeout=0.5
            ):
                self._state = ProcessState.RUNNING
                logger.info("%s healthy on %s", self.name, self.health_address)
                return
            time.sleep(0.1)
        raise ServiceProcessError(
            self._failure(f"not healthy on {self.health_address} after {limit:.0f}s")
        )

    def stop(self) -> int | None:
        """SIGTERM the process group, SIGKILL after `stop_timeout`; exit code."""
        if self._process is None:
            return None
        self._state = ProcessState.STOPPING
        code = self._end(lambda p: _proc.stop_group(p, timeout=self.stop_timeout))
        self._state = ProcessState.STOPPED
        logger.info("stopped %s (exit code %s)", self.name, code)
        return code

    def kill(self) -> int | None:
        """SIGKILL the process group at once (fault injection); exit code."""
        if self._process is None:
            return None
        code = self._end(_proc.kill_group)
        self._state = ProcessState.STOPPED
        return code

    def restart(self, *, wait: bool = True) -> Self:
        self.stop()
        return self.start(wait=wait)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _end(self, how: Callable[[subprocess.Popen[bytes]], int | None]) -> int | None:
        process = self._process
        if process is None:
            return None
        code = how(process)
        get_reaper().untrack_group(process.pid)
        return code

    def _failure(self, message: str) -> str:
        return (
            f"{self.name} ({' '.join(self.argv)}) {message}\n"
            f"--- last lines of {self.log_path}:\n{_proc.tail(self.log_path)}"
        )
