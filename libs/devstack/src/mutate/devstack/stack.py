"""What the services need to know about the platform, and how to start them.

`service_environment` is the single mapping from a running stack to the
environment variables the services' settings read; the launcher and the test
fixtures both use it. The hooks into other packages (NATS topology, database
migrations, the development API key) are small functions here so they can be
adjusted in one place as those packages grow.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mutate.devstack import _proc
from mutate.devstack.processes import ServiceProcess

logger = logging.getLogger(__name__)

ServiceName = Literal["gateway", "storage", "transformer", "notifier"]

SERVICES: tuple[ServiceName, ...] = ("storage", "transformer", "notifier", "gateway")
"""Start order: each service only depends on those before it."""

SERVICE_SCRIPTS: dict[ServiceName, str] = {
    "storage": "mutate-storage",
    "transformer": "mutate-transformer",
    "notifier": "mutate-notifier",
    "gateway": "mutate-gateway",
}
"""Console script of each service (`mutate.<service>.__main__:main`)."""

SERVICE_ARGS: dict[ServiceName, tuple[str, ...]] = {
    "storage": (),
    "transformer": ("serve", "--with-worker"),
    "notifier": (),
    "gateway": (),
}
"""Arguments that run each service's server in the foreground."""

MIGRATED_SERVICES: tuple[ServiceName, ...] = ("gateway", "notifier")
"""Services that own PostgreSQL tables and have a `migrate` command."""

HOST = "127.0.0.1"

# Variables a developer's shell may carry that must not leak into a service
# started for a test (the launcher keeps them: a developer may mean them).
_SERVICE_VARIABLE_PREFIXES = (
    "MUTATE_",
    "S3_",
    "STORAGE_",
    "CLOUDFLARE_R2_",
    "WEBHOOK_",
    "OTEL_",
    "AWS_",
)


@dataclass(frozen=True)
class S3Settings:
    """Where the services' bucket lives and the keys to sign requests with."""

    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    bucket: str
    region: str = "us-east-1"


@dataclass(frozen=True)
class ServicePorts:
    """The ports the four services listen on (gateway has gRPC and REST)."""

    gateway_grpc: int = 50051
    gateway_http: int = 8080
    storage: int = 50052
    transformer: int = 50053
    notifier: int = 50054

    @classmethod
    def free(cls) -> ServicePorts:
        """Free ports for all (tests)."""
        return cls(*_proc.free_ports(5))

    def grpc_port(self, service: ServiceName) -> int:
        if service == "gateway":
            return self.gateway_grpc
        port: int = getattr(self, service)
        return port


@dataclass(frozen=True)
class StackInfo:
    """A running platform's addresses, as the services see them."""

    nats_url: str
    database_url: str = field(repr=False)
    s3: S3Settings
    ports: ServicePorts = ServicePorts()
    host: str = HOST

    def address(self, service: ServiceName) -> str:
        """host:port of a service's gRPC server."""
        return f"{self.host}:{self.ports.grpc_port(service)}"

    @property
    def gateway_http_url(self) -> str:
        return f"http://{self.host}:{self.ports.gateway_http}"


def service_environment(stack: StackInfo, service: ServiceName) -> dict[str, str]:
    """The environment variables service `service` reads its settings from.

    Only Mutate's own variables: merge them over a base environment (see
    `clean_environment`) to run the service.
    """
    env = {
        "MUTATE_NATS_URL": stack.nats_url,
        "MUTATE_DATABASE_URL": stack.database_url,
        "STORAGE_PROVIDER": "minio",
        "S3_ENDPOINT": stack.s3.endpoint,
        "S3_ACCESS_KEY_ID": stack.s3.access_key,
        "S3_SECRET_ACCESS_KEY": stack.s3.secret_key,
        "S3_BUCKET": stack.s3.bucket,
        "S3_REGION": stack.s3.region,
        "S3_SECURE": "false",
        "MUTATE_GRPC_HOST": stack.host,
        "MUTATE_GRPC_PORT": str(stack.ports.grpc_port(service)),
        "MUTATE_STORAGE_ADDRESS": stack.address("storage"),
        "MUTATE_TRANSFORMER_ADDRESS": stack.address("transformer"),
        "MUTATE_NOTIFIER_ADDRESS": stack.address("notifier"),
        "MUTATE_LOG_FORMAT": "text",
        # Local receivers only: webhooks to loopback are fine here, never
        # anything else (metadata addresses stay refused by the notifier).
        "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
        "PYTHONUNBUFFERED": "1",
    }
    if service == "gateway":
        env["MUTATE_HTTP_PORT"] = str(stack.ports.gateway_http)
    return env


def clean_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: os.environ) without variables that configure services."""
    source = os.environ if base is None else base
    return {
        name: value
        for name, value in source.items()
        if not name.startswith(_SERVICE_VARIABLE_PREFIXES)
    }


class ServiceMissingError(RuntimeError):
    """A service's package or command is not there (not written yet?)."""


def service_executable(service: ServiceName) -> list[str]:
    """argv prefix of `service`'s command line (its console script).

    Raises `ServiceMissingError` when the service is not there. Every
    command of a service (server, migrate, admin) starts with this.
    """
    script = SERVICE_SCRIPTS[service]
    require_module(f"mutate.{service}.__main__", command=script)
    return [str(_proc.find_executable(script))]


def service_command(service: ServiceName) -> list[str]:
    """argv that runs `service`'s server in the foreground."""
    return [*service_executable(service), *SERVICE_ARGS[service]]


def require_module(module: str, *, command: str) -> None:
    """Raise `ServiceMissingError` unless `module` can be imported."""
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise ServiceMissingError(
            f"`{command}` cannot run: module {module} does not exist yet "
            "(is the service implemented and installed? `make install`); "
            "`mutate-dev up --only-infra` starts just NATS, S3 and PostgreSQL"
        )


def start_service(
    stack: StackInfo,
    service: ServiceName,
    *,
    log_dir: Path,
    args: Sequence[str] | None = None,
    base_env: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    start_timeout: float = 30.0,
    stop_timeout: float = _proc.DEFAULT_STOP_TIMEOUT,
    wait: bool = True,
    name: str | None = None,
) -> ServiceProcess:
    """Start `service` against `stack`; with `wait`, once it is healthy.

    `args` replaces the default arguments of the service's command;
    `extra_env` is applied last (settings a test wants to change); `name`
    (default: the service) names the process and its log file.
    """
    if args is None:
        argv = service_command(service)
    else:
        argv = [*service_executable(service), *args]
    env = dict(os.environ if base_env is None else base_env)
    env.update(service_environment(stack, service))
    env.update(extra_env or {})
    label = name or service
    process = ServiceProcess(
        label,
        argv,
        env=env,
        log_path=log_dir / f"{label}.log",
        health_address=stack.address(service),
        start_timeout=start_timeout,
        stop_timeout=stop_timeout,
    )
    return process.start(wait=wait)


# --- hooks into other packages ---------------------------------------------------


def ensure_topology(
    nats_url: str,
    *,
    env: Mapping[str, str] | None = None,
    required: bool = True,
) -> bool:
    """Create or update the NATS JetStream topology through mutate.common.

    Topology settings (limits, ack wait) are read from `env` (default
    os.environ) by `mutate.common.settings.load`. Returns False (after a
    warning) when `required` is off and mutate.common.topology is missing.
    """
    try:
        topology = importlib.import_module("mutate.common.topology")
    except ModuleNotFoundError as exc:
        if exc.name not in ("mutate.common.topology", "mutate.common"):
            raise
        if required:
            raise ServiceMissingError(
                "mutate.common.topology does not exist yet: cannot create the "
                "NATS streams, consumers and key-value buckets"
            ) from exc
        logger.warning("mutate.common.topology missing: NATS topology not created")
        return False
    from mutate.common.settings import load

    settings = load(topology.TopologySettings, os.environ if env is None else env)

    async def run() -> None:
        import nats

        client = await nats.connect(
            nats_url, connect_timeout=5, max_reconnect_attempts=0
        )
        try:
            changed = await topology.ensure(client.jetstream(), settings)
        finally:
            await client.close()
        logger.info("nats topology: %s", ", ".join(changed) or "up to date")

    asyncio.run(run())
    return True


def run_migrations(
    stack: StackInfo,
    *,
    log_dir: Path,
    base_env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> None:
    """Run `<service> migrate` for every service that owns tables."""
    for service in MIGRATED_SERVICES:
        argv = [*service_executable(service), "migrate"]
        run_service_command(
            stack, service, argv, log_dir=log_dir, base_env=base_env, timeout=timeout
        )


def create_dev_api_key(
    stack: StackInfo,
    *,
    log_dir: Path,
    base_env: Mapping[str, str] | None = None,
) -> str:
    """Create the `dev` organization unless it exists; return a new API key.

    The one place that knows the gateway's admin command line: it prints the
    key alone on the last line of its output (`mutate.gateway.admin`). On an
    existing organization each run adds one more key.
    """
    argv = [
        *service_executable("gateway"),
        "admin",
        "create-org",
        "--name",
        "dev",
        "--if-missing",
    ]
    output = run_service_command(
        stack, "gateway", argv, log_dir=log_dir, base_env=base_env, timeout=60.0
    )
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines:
        raise ServiceMissingError("`mutate-gateway admin create-org` printed no key")
    return lines[-1]


def run_service_command(
    stack: StackInfo,
    service: ServiceName,
    argv: Sequence[str],
    *,
    log_dir: Path,
    base_env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> str:
    """Run a one-off command of a service with its environment; its stdout.

    Output is also appended to `log_dir/<service>-commands.log`.
    """
    env = dict(os.environ if base_env is None else base_env)
    env.update(service_environment(stack, service))
    log_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        list(argv),
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    with open(log_dir / f"{service}-commands.log", "a") as log:
        log.write(f"--- {' '.join(argv)} (exit {result.returncode})\n")
        log.write(result.stdout)
        log.write(result.stderr)
    if result.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(argv)}` failed with exit code {result.returncode}:\n"
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
    return result.stdout
