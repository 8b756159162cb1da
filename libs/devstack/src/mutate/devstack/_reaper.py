"""A watchdog that stops our servers when the process that started them dies.

Servers run in their own sessions, and embedded PostgreSQL daemonizes, so a
launcher or pytest killed with SIGKILL would leave them running. The owner
starts one reaper (`python -m mutate.devstack._reaper`) and keeps the write
end of its stdin; it tells the reaper, one line at a time, which process
groups and PostgreSQL data directories it owns. The kernel closes the pipe
when the owner dies however it dies; at end of input the reaper stops what is
still listed. An owner that cleaned up after itself has unlisted everything,
so the reaper then just exits.

Protocol: one JSON object a line, `{"op": "group", "pgid": N}`, `ungroup`,
`{"op": "postgres", "pgdata": PATH, "user": USER or null}`, `unpostgres`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

logger = logging.getLogger(__name__)

_GRACE = 5.0


class Reaper:
    """The owner's handle on its reaper process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None

    def track_group(self, pgid: int) -> None:
        self._send({"op": "group", "pgid": pgid})

    def untrack_group(self, pgid: int) -> None:
        self._send({"op": "ungroup", "pgid": pgid})

    def track_postgres(self, pgdata: Path, user: str | None) -> None:
        self._send({"op": "postgres", "pgdata": str(pgdata), "user": user})

    def untrack_postgres(self, pgdata: Path) -> None:
        self._send({"op": "unpostgres", "pgdata": str(pgdata)})

    def _send(self, message: dict[str, object]) -> None:
        line = json.dumps(message)
        with self._lock:
            process = self._ensure_started()
            assert process.stdin is not None
            try:
                process.stdin.write(line.encode() + b"\n")
                process.stdin.flush()
            except OSError as exc:
                logger.warning("reaper unreachable, %r not recorded: %s", line, exc)

    def _ensure_started(self) -> subprocess.Popen[bytes]:
        if self._process is None or self._process.poll() is not None:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "mutate.devstack._reaper"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self._process


_reaper: Reaper | None = None
_reaper_pid = 0
_reaper_lock = threading.Lock()


def get_reaper() -> Reaper:
    """The reaper of this process (a fork gets its own), started on first use."""
    global _reaper, _reaper_pid
    with _reaper_lock:
        if _reaper is None or _reaper_pid != os.getpid():
            _reaper = Reaper()
            _reaper_pid = os.getpid()
        return _reaper


# --- the reaper process itself ------------------------------------------------


def _stop_groups(groups: set[int]) -> None:
    for pgid in groups:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + _GRACE
    while groups and time.monotonic() < deadline:
        groups = {pgid for pgid in groups if _group_exists(pgid)}
        time.sleep(0.1)
    for pgid in groups:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except OSError:
        return False
    return True


def _stop_postgres(pgdata: Path, user: str | None) -> None:
    from mutate.devstack.servers import stop_postgres_data_dir

    try:
        stop_postgres_data_dir(pgdata, user=user, timeout=_GRACE)
    except Exception:
        logger.exception("could not stop postgres in %s", pgdata)


def _serve() -> None:
    groups: set[int] = set()
    postgres: dict[Path, str | None] = {}

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_term)
    try:
        for raw in sys.stdin.buffer:
            message = json.loads(raw)
            op = message["op"]
            if op == "group":
                groups.add(int(message["pgid"]))
            elif op == "ungroup":
                groups.discard(int(message["pgid"]))
            elif op == "postgres":
                postgres[Path(message["pgdata"])] = message["user"]
            elif op == "unpostgres":
                postgres.pop(Path(message["pgdata"]), None)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_groups(groups)
        for pgdata, user in postgres.items():
            _stop_postgres(pgdata, user)


if __name__ == "__main__":
    _serve()
