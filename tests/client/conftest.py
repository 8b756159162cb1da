"""Fixtures for the client: a real platform, and the `mutate` command.

The platform is started once per session by `mutate.devstack.harness`: its
own NATS, S3 and PostgreSQL, and storage, transformer (`serve
--with-worker`), notifier and gateway as subprocesses. Each test gets a fresh
organization and API key from the gateway's own admin command, as an
operator would make them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from mutate.devstack import stack as stk
from mutate.devstack.harness import PlatformHarness, start_platform

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
    """The session's platform (`mutate.devstack.harness`), as these tests use it."""

    harness: PlatformHarness
    notifier: bool = True

    @property
    def info(self) -> stk.StackInfo:
        return self.harness.info

    @property
    def log_dir(self) -> Path:
        return self.harness.log_dir

    @property
    def address(self) -> str:
        return self.harness.gateway_address

    def create_org(self, *, operator: bool = False) -> str:
        """A new organization through the gateway's admin command; its key."""
        tenant = self.harness.create_tenant(
            f"client-test-{uuid.uuid4().hex[:10]}", operator=operator
        )
        assert tenant.api_key.startswith("mk_"), tenant
        return tenant.api_key


@pytest.fixture(scope="session")
def platform(devstack_dir: Path) -> Iterator[Platform]:
    try:
        stk.service_executable("gateway")
    except stk.ServiceMissingError as exc:
        pytest.skip(f"no gateway to test against: {exc}")
    harness = start_platform(
        devstack_dir / f"client-platform-{uuid.uuid4().hex[:8]}",
        workers=0,
        test_defaults=False,
        env=COMMON_ENV,
        per_service_env={"gateway": GATEWAY_ENV, "transformer": TRANSFORMER_ENV},
    )
    try:
        yield Platform(harness)
    finally:
        harness.stop()


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
        completed = subprocess.run(
            [*mutate_command(), *args],
            cwd=self.cwd,
            env=self._env(api_key),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Result(completed.returncode, completed.stdout, completed.stderr)

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        """The command running, its stdout and stderr pipes to the caller."""
        return subprocess.Popen(
            [*mutate_command(), *args],
            cwd=self.cwd,
            env=self._env(None),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def _env(self, api_key: str | None) -> dict[str, str]:
        env = stk.clean_environment()
        env["MUTATE_ADDRESS"] = self.address
        env["MUTATE_API_KEY"] = self.api_key if api_key is None else api_key
        env["MUTATE_RETRY_BACKOFF_MS"] = "50"
        return env


def mutate_command() -> Sequence[str]:
    script = Path(sys.executable).with_name("mutate")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "mutate.client"]


@pytest.fixture
def cli(platform: Platform, api_key: str, tmp_path: Path) -> Cli:
    return Cli(platform.address, api_key, tmp_path)
