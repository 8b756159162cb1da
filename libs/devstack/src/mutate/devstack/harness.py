"""The whole platform, programmatically: for end-to-end tests and benchmarks.

`start_platform(tmp_dir, ...)` brings up what `mutate-dev up` does (NATS,
SeaweedFS, PostgreSQL, bucket, topology, migrations, storage, transformer,
notifier, gateway) on free ports on 127.0.0.1, with data and logs under
`tmp_dir`, from a clean environment (nothing from the caller's shell), and
returns a `PlatformHarness`::

    platform = start_platform(tmp, workers=2, per_service_env={...})
    try:
        org_id, api_key, webhook_secret = platform.create_tenant()
        ...  # platform.gateway_address, platform.rest_url
        platform.process("worker-1").kill()      # fault injection
        platform.nats.restart()
    finally:
        platform.stop()

It is the launcher's `Platform` with other defaults: the transformer runs
`serve` plus `workers` separate `work` processes (named `worker-1`, ...),
settings are short time constants suitable for tests unless overridden, and
every server and process is exposed for stop/kill/restart.

TODO: each harness starts its own SeaweedFS and PostgreSQL (a few seconds and
~200 MB); there is no option yet to reuse a session's servers.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple, Self, cast

from mutate.devstack import _proc
from mutate.devstack import stack as stk
from mutate.devstack.launcher import DEFAULT_PORTS, Platform, PlatformConfig
from mutate.devstack.processes import ServiceProcess

logger = logging.getLogger(__name__)

LOOPBACK_NETWORKS = "127.0.0.0/8,::1/128"

TEST_ENV: dict[str, str] = {
    "MUTATE_SHUTDOWN_GRACE_MS": "2000",
    "MUTATE_LOG_LEVEL": "INFO",
}
"""Applied to every service unless `env` says otherwise."""

TEST_SERVICE_ENV: dict[str, dict[str, str]] = {
    "transformer": {
        # One engine process per transformer process: 2 cores on CI.
        "MUTATE_ENGINE_PROCESSES": "1",
        "MUTATE_WORKER_FETCH_TIMEOUT_MS": "200",
    },
    "gateway": {
        "MUTATE_WATCH_POLL_MS": "200",
        "MUTATE_PROJECTOR_FETCH_WAIT_MS": "200",
        "MUTATE_PROJECTOR_RETRY_DELAY_MS": "200",
    },
}
"""Short time constants per service, so tests need not wait for defaults."""


class Tenant(NamedTuple):
    """An organization made by the gateway's admin command; unpacks as
    `org_id, api_key, webhook_secret`."""

    org_id: str
    api_key: str
    webhook_secret: str | None
    """The organization's Standard Webhooks secret (`whsec_...`), or None
    when the notifier was not reachable when the organization was made."""


class PlatformHarness(Platform):
    """A running platform on free ports; see the module docstring.

    The servers are `nats`, `s3` and `postgres` (each with stop, kill,
    restart); the service processes are `processes` (by name: `process()`).
    """

    # --- addresses ---------------------------------------------------------

    @property
    def info(self) -> stk.StackInfo:
        """Addresses as the services see them (once started)."""
        assert self.stack is not None, "platform not started"
        return self.stack

    @property
    def gateway_address(self) -> str:
        """host:port of the public gRPC API."""
        return self.info.address("gateway")

    @property
    def rest_url(self) -> str:
        """Base URL of the public REST API (no trailing slash)."""
        return self.info.gateway_http_url

    @property
    def database_url(self) -> str:
        return self.info.database_url

    @property
    def bucket(self) -> str:
        return self.info.s3.bucket

    def address(self, service: stk.ServiceName) -> str:
        return self.info.address(service)

    # --- processes -----------------------------------------------------------

    def process(self, name: str) -> ServiceProcess:
        """A service process by name: storage, transformer, notifier,
        gateway, worker-1, worker-2, ..."""
        for process in self.processes:
            if process.name == name:
                return process
        known = ", ".join(p.name for p in self.processes)
        raise KeyError(f"no process {name!r}; running: {known}")

    @property
    def workers(self) -> list[ServiceProcess]:
        return [p for p in self.processes if p.name.startswith("worker-")]

    def service_env(self, service: str) -> dict[str, str]:
        """The environment `service` (or `worker`) was started with (for a
        worker, but for its own health port in MUTATE_GRPC_PORT)."""
        env = self._base_env()
        real = cast(stk.ServiceName, "transformer" if service == "worker" else service)
        env.update(stk.service_environment(self.info, real))
        env.update(self.service_extra_env(service))
        return env

    def logs(self, name: str, *, chars: int = 8000) -> str:
        """The end of a process's log (for failure messages)."""
        return self.process(name).log_text()[-chars:]

    def all_logs(self, *, chars: int = 4000) -> str:
        return "\n".join(
            f"--- {p.name} ({p.log_path}):\n{p.log_text()[-chars:]}"
            for p in self.processes
        )

    # --- tenants -------------------------------------------------------------

    def create_tenant(
        self, name: str | None = None, *, operator: bool = False
    ) -> Tenant:
        """A new organization via `mutate-gateway admin create-org`.

        Returns (org_id, api_key, webhook_secret) as a `Tenant`.
        """
        name = name or f"tenant-{uuid.uuid4().hex[:12]}"
        argv = [
            *stk.service_executable("gateway"),
            "admin",
            "create-org",
            "--name",
            name,
            *(["--operator"] if operator else []),
        ]
        output = stk.run_service_command(
            self.info,
            "gateway",
            argv,
            log_dir=self.log_dir,
            base_env=self._base_env(),
            timeout=60.0,
        )
        return parse_create_org(output)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def parse_create_org(output: str) -> Tenant:
    """Read what `mutate-gateway admin create-org` printed."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    org = re.search(r"^organization_id: (\S+)", output, re.MULTILINE)
    secret = re.search(r"^webhook_secret[^:]*: (\S+)", output, re.MULTILINE)
    if org is None or not lines:
        raise RuntimeError(f"unexpected output of admin create-org:\n{output}")
    return Tenant(
        org_id=org.group(1),
        api_key=lines[-1],
        webhook_secret=secret.group(1) if secret else None,
    )


def harness_config(
    tmp_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    per_service_env: Mapping[str, Mapping[str, str]] | None = None,
    workers: int = 1,
    webhook_allowed_networks: str = LOOPBACK_NETWORKS,
    test_defaults: bool = True,
    start_timeout: float = 60.0,
) -> PlatformConfig:
    """The launcher configuration `start_platform` uses (free ports)."""
    ports = dict(zip(DEFAULT_PORTS, _proc.free_ports(len(DEFAULT_PORTS)), strict=True))
    common = dict(TEST_ENV) if test_defaults else {}
    common["WEBHOOK_ALLOWED_NETWORKS"] = webhook_allowed_networks
    common.update(env or {})
    service_env: dict[str, dict[str, str]] = {}
    if test_defaults:
        service_env = {k: dict(v) for k, v in TEST_SERVICE_ENV.items()}
    for service, values in (per_service_env or {}).items():
        service_env.setdefault(service, {}).update(values)
    return PlatformConfig(
        home=Path(tmp_dir),
        ports=ports,
        base_env=stk.clean_environment(),
        env=common,
        service_env=service_env,
        workers=workers,
        create_dev_key=False,
        service_start_timeout=start_timeout,
    )


def start_platform(
    tmp_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    per_service_env: Mapping[str, Mapping[str, str]] | None = None,
    workers: int = 1,
    webhook_allowed_networks: str = LOOPBACK_NETWORKS,
    test_defaults: bool = True,
    start_timeout: float = 60.0,
) -> PlatformHarness:
    """Start everything under `tmp_dir`; stop it with `.stop()`.

    `env` goes to every service (and the NATS topology and migrations);
    `per_service_env` per service name, `worker` for the queue workers only
    (they also get the `transformer` entry). `workers` is the number of
    `mutate-transformer work` processes (0: the transformer's server also
    works the queue). `test_defaults` adds short time constants and one
    engine process per transformer process (see TEST_ENV, TEST_SERVICE_ENV).

    `tmp_dir` should be a dedicated folder directly under the temp dir, not
    pytest's tmp_path: embedded PostgreSQL, run as root, opens up the
    permissions of every folder above its data.
    """
    config = harness_config(
        tmp_dir,
        env=env,
        per_service_env=per_service_env,
        workers=workers,
        webhook_allowed_networks=webhook_allowed_networks,
        test_defaults=test_defaults,
        start_timeout=start_timeout,
    )
    platform = PlatformHarness(config)
    platform.start()
    logger.info("platform up in %s: gateway %s", tmp_dir, platform.gateway_address)
    return platform
