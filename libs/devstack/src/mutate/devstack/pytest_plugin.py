"""pytest fixtures: real NATS, S3 and PostgreSQL servers and service processes.

Load it with `pytest_plugins = ["mutate.devstack.pytest_plugin"]` in a
conftest. Session servers are shared (each test gets its own bucket, its own
database and a JetStream cleaned after it); fault tests that stop, kill or
restart a server take their own from the `make_*_server` factories.

Server data lives in one folder under the temp dir, removed at the end of the
session unless MUTATE_TEST_KEEP_DATA=1 (its path is printed at the start).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
import pytest_asyncio

from mutate.devstack import stack as stk
from mutate.devstack.harness import PlatformHarness, start_platform
from mutate.devstack.processes import ServiceProcess
from mutate.devstack.servers import NatsServer, PostgresServer, S3Server, Server

KEEP_DATA_VARIABLE = "MUTATE_TEST_KEEP_DATA"

S = TypeVar("S", bound=Server)
S_co = TypeVar("S_co", bound=Server, covariant=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes seconds (CI still runs it)")
    config.addinivalue_line("markers", "bench: a benchmark, not run by default")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Keep each phase's report on the item, so teardowns can tell a failed
    # test and print the logs of the processes it ran.
    report = yield
    setattr(item, f"_mutate_report_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "_mutate_report_call", None)
    return bool(report is not None and report.failed)


# --- folders -----------------------------------------------------------------


@pytest.fixture(scope="session")
def devstack_dir() -> Iterator[Path]:
    """The session's data folder for servers (outside pytest's 0700 tree).

    Embedded PostgreSQL, run as root, opens up permissions of every folder
    above its data: a dedicated folder directly in the temp dir keeps that
    away from anything else.
    """
    path = Path(tempfile.mkdtemp(prefix="mutate-test-"))
    yield path
    if os.environ.get(KEEP_DATA_VARIABLE) != "1":
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server_dir(devstack_dir: Path) -> Callable[[str], Path]:
    """Make a fresh, uniquely named folder under the session folder."""

    def make(name: str) -> Path:
        path = devstack_dir / f"{name}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path

    return make


# --- session servers -----------------------------------------------------------


@pytest.fixture(scope="session")
def nats_server(devstack_dir: Path) -> Iterator[NatsServer]:
    """NATS with JetStream, shared by the session."""
    with NatsServer(devstack_dir / "nats") as server:
        yield server


@pytest.fixture(scope="session")
def s3_server(devstack_dir: Path) -> Iterator[S3Server]:
    """SeaweedFS S3 (signed requests only), shared by the session."""
    with S3Server(devstack_dir / "s3") as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server(devstack_dir: Path) -> Iterator[PostgresServer]:
    """Embedded PostgreSQL, shared by the session."""
    with PostgresServer(devstack_dir / "postgres") as server:
        yield server


# --- private servers for fault tests ----------------------------------------------


class ServerFactory(Protocol[S_co]):
    def __call__(self, **kwargs: Any) -> S_co: ...


def _factory(
    cls: type[S], server_dir: Callable[[str], Path]
) -> Iterator[ServerFactory[S]]:
    started: list[S] = []

    def make(**kwargs: Any) -> S:
        server = cls(server_dir(cls.name), **kwargs)
        started.append(server)
        return server.start()

    yield make
    for server in reversed(started):
        server.stop()


@pytest.fixture
def make_nats_server(
    server_dir: Callable[[str], Path],
) -> Iterator[ServerFactory[NatsServer]]:
    """`make_nats_server(**kwargs)`: a started NatsServer of the test's own."""
    yield from _factory(NatsServer, server_dir)


@pytest.fixture
def make_s3_server(
    server_dir: Callable[[str], Path],
) -> Iterator[ServerFactory[S3Server]]:
    """`make_s3_server(**kwargs)`: a started S3Server of the test's own."""
    yield from _factory(S3Server, server_dir)


@pytest.fixture
def make_postgres_server(
    server_dir: Callable[[str], Path],
) -> Iterator[ServerFactory[PostgresServer]]:
    """`make_postgres_server(**kwargs)`: a started PostgresServer of its own."""
    yield from _factory(PostgresServer, server_dir)


# --- per-test resources on the session servers ---------------------------------------


@pytest.fixture(scope="session")
def s3_client(s3_server: S3Server) -> Any:
    """A `minio.Minio` client for the session S3 server."""
    return s3_server.client()


@pytest.fixture
def bucket(s3_server: S3Server, s3_client: Any) -> Iterator[str]:
    """A fresh, empty bucket on the session S3 server; removed afterwards."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_client.make_bucket(name)
    yield name
    with contextlib.suppress(Exception):
        for item in s3_client.list_objects(name, recursive=True):
            s3_client.remove_object(name, item.object_name)
        s3_client.remove_bucket(name)


@pytest.fixture
def database_url(postgres_server: PostgresServer) -> Iterator[str]:
    """URI of a fresh database on the session PostgreSQL; dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


@pytest_asyncio.fixture
async def nats_client(nats_server: NatsServer) -> AsyncIterator[Any]:
    """A connected `nats.aio.client.Client` to the session NATS server."""
    import nats

    client = await nats.connect(
        nats_server.url, connect_timeout=5, max_reconnect_attempts=0
    )
    yield client
    await client.close()


@pytest_asyncio.fixture
async def jetstream(nats_client: Any) -> AsyncIterator[Any]:
    """JetStream of the session NATS server; all streams deleted afterwards.

    Key-value buckets are streams too, so each test starts from nothing.
    """
    js = nats_client.jetstream()
    yield js
    for name in await js.streams_info():
        with contextlib.suppress(Exception):
            await js.delete_stream(name.config.name)


# --- services ------------------------------------------------------------------------


@pytest.fixture
def stack_info(
    nats_server: NatsServer,
    s3_server: S3Server,
    bucket: str,
    database_url: str,
) -> stk.StackInfo:
    """The session servers as the services see them: this test's bucket and
    database, free ports for the four services."""
    return stk.StackInfo(
        nats_url=nats_server.url,
        database_url=database_url,
        s3=stk.S3Settings(
            endpoint=s3_server.endpoint,
            access_key=s3_server.access_key,
            secret_key=s3_server.secret_key,
            bucket=bucket,
            region=s3_server.region,
        ),
        ports=stk.ServicePorts.free(),
    )


class StartProcess(Protocol):
    def __call__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        health_address: str | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> ServiceProcess: ...


@pytest.fixture
def start_process(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[StartProcess]:
    """Start any command as a `ServiceProcess`; stopped at teardown.

    `env` defaults to os.environ without Mutate's service variables.
    """
    started: list[ServiceProcess] = []

    def start(
        name: str,
        argv: Sequence[str],
        *,
        health_address: str | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> ServiceProcess:
        process = ServiceProcess(
            name,
            argv,
            env=env if env is not None else stk.clean_environment(),
            log_path=tmp_path / "logs" / f"{name}.log",
            health_address=health_address,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )
        started.append(process)
        return process.start(wait=wait)

    yield start
    _stop_all(started, show_logs=_failed(request))


class StartService(Protocol):
    def __call__(
        self,
        service: stk.ServiceName,
        *,
        stack: stk.StackInfo | None = None,
        args: Sequence[str] | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> ServiceProcess: ...


@pytest.fixture
def start_service(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[StartService]:
    """Start a Mutate service as a subprocess; stopped at teardown.

    `start_service("storage")` runs it against `stack_info` (the session
    servers, this test's bucket and database); `env` overrides settings
    (e.g. short time constants), `args` replaces the command's arguments.
    """
    started: list[ServiceProcess] = []

    def start(
        service: stk.ServiceName,
        *,
        stack: stk.StackInfo | None = None,
        args: Sequence[str] | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> ServiceProcess:
        info = stack if stack is not None else request.getfixturevalue("stack_info")
        log_dir = tmp_path / "logs"
        same = sum(1 for p in started if p.name.split("-")[0] == service)
        process = stk.start_service(
            info,
            service,
            log_dir=log_dir,
            args=args,
            base_env=stk.clean_environment(),
            extra_env=env,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
            wait=False,
            name=service if same == 0 else f"{service}-{same + 1}",
        )
        started.append(process)
        if wait:
            process.wait_healthy()
        return process

    yield start
    _stop_all(started, show_logs=_failed(request))


def _stop_all(processes: list[ServiceProcess], *, show_logs: bool) -> None:
    for process in reversed(processes):
        process.stop()
        if show_logs:
            sys.stderr.write(
                f"--- log of {process.name} ({process.log_path}):\n"
                f"{process.log_text()[-8000:]}\n"
            )


# --- the whole platform ------------------------------------------------------------


class PlatformFactory(Protocol):
    def __call__(
        self,
        *,
        env: dict[str, str] | None = None,
        per_service_env: dict[str, dict[str, str]] | None = None,
        workers: int = 1,
        webhook_allowed_networks: str = ...,
        test_defaults: bool = True,
    ) -> PlatformHarness: ...


@pytest.fixture
def platform_factory(
    request: pytest.FixtureRequest, server_dir: Callable[[str], Path]
) -> Iterator[PlatformFactory]:
    """`platform_factory(env=..., per_service_env=..., workers=N)`: a whole
    platform of the test's own (its own NATS, S3, PostgreSQL and services;
    see `mutate.devstack.harness.start_platform`), stopped at teardown, with
    the services' logs printed when the test failed."""
    started: list[PlatformHarness] = []

    def make(**kwargs: Any) -> PlatformHarness:
        platform = start_platform(server_dir("platform"), **kwargs)
        started.append(platform)
        return platform

    yield make
    for platform in reversed(started):
        _stop_platform(platform, show_logs=_failed(request))


@pytest.fixture(scope="session")
def shared_platform(devstack_dir: Path) -> Iterator[PlatformHarness]:
    """One whole platform with the harness defaults (one queue worker),
    shared by the session: isolate tests by tenant (`create_tenant()`), and
    never stop, kill or reconfigure anything of it (use `platform_factory`)."""
    platform = start_platform(devstack_dir / "shared-platform")
    yield platform
    _stop_platform(platform, show_logs=False)


def _stop_platform(platform: PlatformHarness, *, show_logs: bool) -> None:
    if show_logs:
        sys.stderr.write(platform.all_logs() + "\n")
    platform.stop()
