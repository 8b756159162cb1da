"""What an image build would prove, without a Docker engine.

Each service installs into an empty virtual environment from the wheels of
its own distribution and the shared ones it declares (mutate-api,
mutate-common), as its Dockerfile does, held to requirements/constraints.txt;
the environment then holds exactly the dependency closure of the service and
the service starts healthy from it against the harness's servers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mutate.devstack import stack as stk

from .deploy_support import REPO, SETTINGS_CLASSES

pytestmark = pytest.mark.slow

SERVICES = sorted(SETTINGS_CLASSES)
SHARED = ("protos", "libs/common")
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]


def _pip(*args: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [*PIP, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"pip {' '.join(args)}:\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels of the shared distributions and every service, built once."""
    out = tmp_path_factory.mktemp("wheels")
    folders = [*SHARED, *(f"services/{s}" for s in SERVICES)]
    _pip(
        "wheel",
        "--no-deps",
        "--quiet",
        "--wheel-dir",
        str(out),
        *(str(REPO / f) for f in folders),
    )
    return out


def _wheel(wheelhouse: Path, distribution: str) -> Path:
    (found,) = wheelhouse.glob(f"{distribution.replace('-', '_')}-*.whl")
    return found


_VENVS: dict[str, Path] = {}


def service_venv(wheelhouse: Path, service: str, root: Path) -> Path:
    """An empty venv with only the service's wheels and their dependencies."""
    if service in _VENVS:
        return _VENVS[service]
    venv = root / f"venv-{service}"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True
    )
    wheels = [
        _wheel(wheelhouse, d)
        for d in ("mutate-api", "mutate-common", f"mutate-{service}")
    ]
    # The wheel files themselves satisfy the mutate-* names: they are never
    # looked up on an index.
    _pip(
        "--python",
        str(venv / "bin" / "python"),
        "install",
        "--quiet",
        "--constraint",
        str(REPO / "requirements" / "constraints.txt"),
        *map(str, wheels),
    )
    _VENVS[service] = venv
    return venv


@pytest.fixture(scope="session")
def venv_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("venvs")


def _installed(venv: Path) -> dict[str, dict[str, Any]]:
    report = json.loads(
        _pip("--python", str(venv / "bin" / "python"), "inspect", "--local")
    )
    return {
        canonicalize_name(item["metadata"]["name"]): item["metadata"]
        for item in report["installed"]
    }


def _closure(installed: dict[str, dict[str, Any]], root: str) -> set[str]:
    """Distributions `root` needs, following markers and extras."""
    environment = default_environment()
    needed: set[str] = set()
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    while todo:
        name, extras = todo.pop()
        if name in needed and not extras:
            continue
        needed.add(name)
        for text in installed[name].get("requires_dist", []):
            requirement = Requirement(text)
            if requirement.marker is not None and not any(
                requirement.marker.evaluate({**environment, "extra": extra})
                for extra in (extras or {""})
            ):
                continue
            todo.append(
                (canonicalize_name(requirement.name), frozenset(requirement.extras))
            )
    return needed


@pytest.mark.parametrize("service", SERVICES)
def test_service_installs_only_what_it_declares(
    wheelhouse: Path, venv_root: Path, service: str
) -> None:
    venv = service_venv(wheelhouse, service, venv_root)
    installed = _installed(venv)
    mutate = {name for name in installed if name.startswith("mutate-")}
    assert mutate == {"mutate-api", "mutate-common", f"mutate-{service}"}
    assert set(installed) == _closure(installed, f"mutate-{service}")
    # Only gateway and notifier talk to PostgreSQL; nothing serves tests.
    assert ("psycopg" in installed) == (service in ("gateway", "notifier"))
    assert not {"pytest", "mutate-devstack", "grpcio-tools"} & set(installed)


@pytest.fixture
def topology_ready(
    stack_info: stk.StackInfo, wheelhouse: Path, venv_root: Path
) -> None:
    """`ensure` from an installed image venv, as the chart's hook runs it."""
    venv = service_venv(wheelhouse, "transformer", venv_root)
    done = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "mutate.common.topology",
            "ensure",
            "--nats-url",
            stack_info.nats_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=stk.clean_environment(),
    )
    assert done.returncode == 0, done.stderr


# The command each chart Deployment runs (see templates/_helpers.tpl).
ROLES = [
    ("gateway", ["serve"]),
    ("notifier", ["serve"]),
    ("storage", []),
    ("transformer", ["serve"]),
    ("transformer", ["work"]),
]


@pytest.mark.parametrize(
    ("service", "args"),
    ROLES,
    ids=[f"{s}-{a[0] if a else 'default'}" for s, a in ROLES],
)
def test_service_starts_healthy_from_its_venv(
    wheelhouse: Path,
    venv_root: Path,
    stack_info: stk.StackInfo,
    topology_ready: None,
    start_process: Any,
    service: str,
    args: list[str],
) -> None:
    venv = service_venv(wheelhouse, service, venv_root)
    script = str(venv / "bin" / f"mutate-{service}")
    env = {**stk.clean_environment(), **stk.service_environment(stack_info, service)}
    if service in stk.MIGRATED_SERVICES:
        # What the chart's pre-install hook does before the pods start.
        done = subprocess.run(
            [script, "migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    process = start_process(
        f"{service}-{'-'.join(args) or 'serve'}",
        [script, *args],
        env=env,
        health_address=stack_info.address(service),
        start_timeout=60,
    )
    # From the installed venv, not from the repository's editable installs.
    assert process.health_address
    done = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "mutate.common.healthcheck",
            process.health_address,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="session", autouse=True)
def _forget_venvs() -> Iterator[None]:
    yield
    _VENVS.clear()
