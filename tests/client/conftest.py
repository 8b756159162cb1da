"""Fixtures for the client: a real platform, and the `mutate` command.

The platform is started once per session, from mutate.devstack: its own NATS
(other packages' tests wipe the session JetStream), the session S3 and
PostgreSQL, and storage, transformer (`serve --with-worker`), notifier and
gateway as subprocesses. Each test gets a fresh organization and API key
from the gateway's own admin command, as an operator would make them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import nats
import pytest

from mutate.devstack import stack as stk
from mutate.devstack.processes import ServiceProcess, ServiceProcessError
from mutate.devstack.servers import NatsServer, PostgresServer, S3Server

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples" / "configurations"
# Small enough that the streamed and the queued paths are reachable.
SYNC_MAX_BYTES = 64 * 1024
GATEWAY_ENV = {
    "MUTATE_SYNC_MAX_BYTES": str(SYNC_MAX_BYTES),
    "MUTATE_WATCH_POLL_MS": "200",
    "MUTATE_PROJECTOR_FETCH_WAIT_MS": "200",
    "MUTATE_PROJECTOR_RETRY_DELAY_MS": "200",
    "MUTATE_SHUTDOWN_GRACE_MS": "2000",
}
TRANSFORMER_ENV = {
    # Each conversion idles this long first, so a test can cancel mid-job.
    "MUTATE_TEST_ENGINE_DELAY_MS": "1000",
    "MUTATE_WORKER_FETCH_TIMEOUT_MS": "200",
    "MUTATE_SHUTDOWN_GRACE_MS": "2000",
}
COMMON_ENV = {"MUTATE_SHUTDOWN_GRACE_MS": "2000"}


def corpus_dir() -> Path:
    """The shared corpus: MUTATE_CORPUS_DIR, else beside the checkout."""
    configured = os.environ.get("MUTATE_CORPUS_DIR")
    if configured:
        return Path(configured)
    return REPO_ROOT.parent / "shared" / "corpus"


def corpus_file(name: str) -> Path:
    path = corpus_dir() / "files" / name
    if not path.is_file():
        pytest.skip(f"corpus file {name} not found under {corpus_dir()}")
    return path


@dataclasses.dataclass(frozen=True)
class Platform:
    info: stk.StackInfo
    log_dir: Path
    notifier: bool

    @property
    def address(self) -> str:
        return self.info.address("gateway")

    def create_org(self, *, operator: bool = False) -> str:
        """A new organization through the gateway's admin command; its key."""
        argv = [
            *stk.service_executable("gateway"),
            "admin",
            "create-org",
            "--name",
            f"client-test-{uuid.uuid4().hex[:10]}",
            *(["--operator"] if operator else []),
        ]
        output = stk.run_service_command(
            self.info,
            "gateway",
            argv,
            log_dir=self.log_dir,
            base_env=stk.clean_environment(),
            timeout=60.0,
        )
        # The admin command prints the key alone on its last line.
        key = output.strip().splitlines()[-1].strip()
        assert key.startswith("mk_"), output
        return key


async def _ensure_topology(url: str) -> None:
    from mutate.common import topology
    from mutate.common.settings import load

    client = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        await topology.ensure(client.jetstream(), load(topology.TopologySettings, {}))
    finally:
        await client.close()


@pytest.fixture(scope="session")
def platform(
    devstack_dir: Path, s3_server: S3Server, postgres_server: PostgresServer
) -> Iterator[Platform]:
    try:
        stk.service_executable("gateway")
    except stk.ServiceMissingError as exc:
        pytest.skip(f"no gateway to test against: {exc}")
    suffix = uuid.uuid4().hex[:10]
    with NatsServer(devstack_dir / f"client-nats-{suffix}") as nats_server:
        asyncio.run(_ensure_topology(nats_server.url))
        bucket = f"client-{suffix}"
        s3_server.ensure_bucket(bucket)
        info = stk.StackInfo(
            nats_url=nats_server.url,
            database_url=postgres_server.create_database(f"client_{suffix}"),
            s3=stk.S3Settings(
                endpoint=s3_server.endpoint,
                access_key=s3_server.access_key,
                secret_key=s3_server.secret_key,
                bucket=bucket,
                region=s3_server.region,
            ),
            ports=stk.ServicePorts.free(),
        )
        log_dir = devstack_dir / f"client-logs-{suffix}"
        processes: list[ServiceProcess] = []
        notifier = False
        try:
            stk.run_migrations(info, log_dir=log_dir, base_env=stk.clean_environment())
            for name, extra in (
                ("storage", COMMON_ENV),
                ("transformer", TRANSFORMER_ENV),
                ("notifier", COMMON_ENV),
                ("gateway", GATEWAY_ENV),
            ):
                try:
                    processes.append(
                        stk.start_service(
                            info,
                            name,  # type: ignore[arg-type]
                            log_dir=log_dir,
                            base_env=stk.clean_environment(),
                            extra_env=extra,
                            start_timeout=60.0,
                        )
                    )
                except (ServiceProcessError, stk.ServiceMissingError):
                    if name != "notifier":
                        raise
                    logger.warning("notifier did not start; delivery checks skip")
                    continue
                notifier = notifier or name == "notifier"
            yield Platform(info, log_dir, notifier)
        finally:
            for process in reversed(processes):
                with contextlib.suppress(Exception):
                    process.stop()


@pytest.fixture
def api_key(platform: Platform) -> str:
    return platform.create_org()


@dataclasses.dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


@dataclasses.dataclass(frozen=True)
class Cli:
    """Runs the installed `mutate` command in a subprocess, as a user would."""

    address: str
    api_key: str
    cwd: Path

    def __call__(
        self, *args: str, api_key: str | None = None, timeout: float = 60.0
    ) -> Result:
        env = stk.clean_environment()
        env["MUTATE_ADDRESS"] = self.address
        env["MUTATE_API_KEY"] = self.api_key if api_key is None else api_key
        env["MUTATE_RETRY_BACKOFF_MS"] = "50"
        completed = subprocess.run(
            [*mutate_command(), *args],
            cwd=self.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Result(completed.returncode, completed.stdout, completed.stderr)


def mutate_command() -> Sequence[str]:
    script = Path(sys.executable).with_name("mutate")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "mutate.client"]


@pytest.fixture
def cli(platform: Platform, api_key: str, tmp_path: Path) -> Cli:
    return Cli(platform.address, api_key, tmp_path)
