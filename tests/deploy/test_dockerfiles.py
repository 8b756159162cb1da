"""Each service's Dockerfile copies and installs exactly its own distribution.

No Docker engine runs here, so the Dockerfiles are parsed: the build stage
may copy and build only the service and the shared distributions it declares
(mutate-api, mutate-common), the final stage may hold only the virtual
environment built from them, and the image runs unprivileged with a gRPC
health check on the port the service listens on.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .deploy_support import REPO, SETTINGS_CLASSES, service_settings

SERVICES = sorted(SETTINGS_CLASSES)
# Folders of the distributions the services may depend on, by name.
SHARED_DISTRIBUTIONS = {"mutate-api": "protos", "mutate-common": "libs/common"}
CONSTRAINTS = "requirements/constraints.txt"


@dataclasses.dataclass
class Instruction:
    keyword: str
    args: str
    flags: dict[str, str]


@dataclasses.dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with line continuations joined."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path} ends inside a continuation"

    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        flags = dict(re.findall(r"--([\w-]+)=(\S+)", rest))
        rest = re.sub(r"^(\s*--[\w-]+=\S+\s+)+", "", rest).strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name, instructions=[]))
        else:
            assert stages, f"{keyword} before FROM in {path}"
            stages[-1].instructions.append(Instruction(keyword, rest, flags))
    return args, stages


def declared_folders(service: str) -> set[str]:
    """The service's folder and those of the mutate-* distributions it needs."""
    folders = {f"services/{service}"}
    todo = [f"services/{service}"]
    while todo:
        project = tomllib.loads((REPO / todo.pop() / "pyproject.toml").read_text())
        for requirement in project["project"].get("dependencies", []):
            name = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()
            if name.startswith("mutate-"):
                folder = SHARED_DISTRIBUTIONS[name]
                if folder not in folders:
                    folders.add(folder)
                    todo.append(folder)
    return folders


def _dockerfile(service: str) -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile(REPO / "services" / service / "Dockerfile")


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"use the exec (JSON) form: {args}"
    return [str(v) for v in value]


@pytest.mark.parametrize("service", SERVICES)
def test_build_stage_copies_only_the_declared_distributions(service: str) -> None:
    _, (build, _) = _dockerfile(service)
    folders = declared_folders(service)
    assert folders == {"protos", "libs/common", f"services/{service}"}

    copied: set[str] = set()
    for copy in build.all("COPY"):
        *sources, _ = shlex.split(copy.args)
        for source in sources:
            source = source.rstrip("/")
            owner = next((f for f in folders if source.startswith(f"{f}/")), None)
            if source in folders:
                copied.add(source)
            elif source == CONSTRAINTS:
                continue
            elif owner == "protos" and source in (
                "protos/pyproject.toml",
                "protos/python",
            ):
                copied.add(owner)
            else:
                pytest.fail(f"{service} image copies {source!r}")
    assert copied == folders


@pytest.mark.parametrize("service", SERVICES)
def test_build_stage_builds_and_installs_exactly_those(service: str) -> None:
    _, (build, _) = _dockerfile(service)
    (run,) = build.all("RUN")
    commands = [shlex.split(c) for c in run.args.split("&&")]

    (wheel,) = [c for c in commands if c[:2] == ["pip", "wheel"]]
    local = {a.removeprefix("./") for a in wheel if a.startswith("./")}
    assert local == declared_folders(service)
    assert wheel[wheel.index("--constraint") : wheel.index("--constraint") + 2] == [
        "--constraint",
        CONSTRAINTS,
    ]

    (install,) = [c for c in commands if "install" in c and c[0] == "pip"]
    assert "--no-index" in install, "the final venv installs only built wheels"
    assert install[-1] == f"mutate-{service}"
    assert install[install.index("--find-links") + 1] == "/wheels"


@pytest.mark.parametrize("service", SERVICES)
def test_final_stage_holds_only_the_virtual_environment(service: str) -> None:
    args, (build, final) = _dockerfile(service)
    assert build.base == final.base
    # Pinned by exact version and by digest.
    assert re.fullmatch(
        r"python:3\.11\.\d+-slim(-\w+)?@sha256:[0-9a-f]{64}", final.base
    ), final.base
    copies = final.all("COPY")
    assert [(c.flags, c.args) for c in copies] == [
        ({"from": "build"}, "/opt/mutate /opt/mutate")
    ]
    assert not final.all("ADD")


@pytest.mark.parametrize("service", SERVICES)
def test_image_runs_unprivileged_with_a_grpc_health_check(service: str) -> None:
    _, (_, final) = _dockerfile(service)
    (user,) = final.all("USER")
    uid, _, gid = user.args.partition(":")
    assert uid.isdigit() and int(uid) != 0, "numeric, so runAsNonRoot can check"
    assert not gid or int(gid) != 0

    (check,) = final.all("HEALTHCHECK")
    assert check.args.startswith("CMD ")
    assert _exec_form(check.args.removeprefix("CMD ")) == [
        "python",
        "-m",
        "mutate.common.healthcheck",
    ]

    defaults = {s.env: s.default for s in service_settings(service)}
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(e.args for e in final.all("ENV"))))
    assert env["MUTATE_GRPC_HOST"] == "0.0.0.0"
    assert int(env["MUTATE_GRPC_PORT"]) == defaults["MUTATE_GRPC_PORT"]
    exposed = {int(p) for e in final.all("EXPOSE") for p in e.args.split()}
    expected = {defaults["MUTATE_GRPC_PORT"]}
    if "MUTATE_HTTP_PORT" in defaults:
        expected.add(defaults["MUTATE_HTTP_PORT"])
        assert env["MUTATE_HTTP_HOST"] == "0.0.0.0"
    assert exposed == expected


@pytest.mark.parametrize("service", SERVICES)
def test_entrypoint_is_the_service_script(service: str) -> None:
    _, (_, final) = _dockerfile(service)
    (entrypoint,) = final.all("ENTRYPOINT")
    project = tomllib.loads(
        (REPO / "services" / service / "pyproject.toml").read_text()
    )
    script = _exec_form(entrypoint.args)
    assert script == [f"mutate-{service}"]
    assert script[0] in project["project"]["scripts"]


# -- the health check command the images run -----------------------------------


@pytest.fixture
def health_server() -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(0)


def _healthcheck(*args: str, env: dict[str, str] | None = None) -> int:
    done = subprocess.run(
        [sys.executable, "-m", "mutate.common.healthcheck", *args],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    return done.returncode


def test_healthcheck_exits_zero_only_when_serving(
    health_server: tuple[str, health.HealthServicer],
) -> None:
    address, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert _healthcheck(address) == 0
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert _healthcheck(address) == 1


def test_healthcheck_defaults_to_the_local_grpc_port(
    health_server: tuple[str, health.HealthServicer],
) -> None:
    address, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    port = address.rpartition(":")[2]
    assert _healthcheck(env={"MUTATE_GRPC_PORT": port, "PATH": ""}) == 0


def test_healthcheck_fails_when_nothing_listens() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The port was free a moment ago and nothing listens on it now.
    assert _healthcheck(f"127.0.0.1:{port}", "--timeout", "0.5") == 1
