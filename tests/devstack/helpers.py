"""Process and socket checks shared by the devstack tests."""

from __future__ import annotations

import time
from collections.abc import Iterable

import psutil

LOOPBACK = "127.0.0.1"


def alive(pid: int) -> bool:
    """Whether `pid` is a running (non-zombie) process."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def wait_gone(pids: Iterable[int], timeout: float = 10.0) -> list[int]:
    """Wait until none of `pids` is alive; return those still alive."""
    remaining = [pid for pid in pids if alive(pid)]
    deadline = time.monotonic() + timeout
    while remaining and time.monotonic() < deadline:
        time.sleep(0.1)
        remaining = [pid for pid in remaining if alive(pid)]
    return remaining


def processes_mentioning(text: str) -> list[psutil.Process]:
    """Live processes whose command line contains `text`."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if text in cmdline and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(ip, port) of every TCP socket `pid` listens on."""
    return {
        (conn.laddr.ip, conn.laddr.port)
        for conn in psutil.Process(pid).net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    }


def remote_addresses(pid: int) -> set[str]:
    """Remote IPs of every connected inet socket of `pid`."""
    return {
        conn.raddr.ip
        for conn in psutil.Process(pid).net_connections(kind="inet")
        if conn.raddr
    }
