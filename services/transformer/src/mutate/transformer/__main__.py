"""`mutate-transformer`: the gRPC service, the queue worker, the offline CLI.

    mutate-transformer serve                  gRPC (Transform, Validate, Preview)
    mutate-transformer work                   queue worker (gRPC health only)
    mutate-transformer serve --with-worker    both in one process (local use)
    mutate-transformer convert ...            convert a file offline, no servers
    mutate-transformer settings               list the environment variables

Settings come from the environment (`MUTATE_*`; see `settings` and
`mutate.common.topology.TopologySettings` for the ack wait).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence

from mutate.common import allocator, logs
from mutate.common.settings import SettingsError, describe, load
from mutate.common.telemetry import setup_telemetry
from mutate.common.topology import TopologySettings
from mutate.transformer.settings import TransformerSettings


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "convert":
        # The offline converter parses its own arguments.
        from mutate.transformer.cli import convert_command

        return int(convert_command(args[1:]) or 0)

    parser = _parser()
    parsed = parser.parse_args(args)
    if parsed.command == "settings":
        _print_settings()
        return 0
    return _run(
        os.environ,
        serve=parsed.command == "serve",
        work=parsed.command == "work" or bool(getattr(parsed, "with_worker", False)),
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mutate-transformer",
        description="Mutate transformer: conversion engine as a gRPC service "
        "and a JetStream queue worker.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gRPC service")
    serve.add_argument(
        "--with-worker",
        action="store_true",
        help="also run the queue worker in this process (local use)",
    )
    commands.add_parser("work", help="run the queue worker")
    commands.add_parser(
        "convert",
        help="convert a file offline (see `mutate-transformer convert --help`)",
        add_help=False,
    )
    commands.add_parser("settings", help="list the environment variables read")
    return parser


def _run(env: Mapping[str, str], *, serve: bool, work: bool) -> int:
    from mutate.transformer import app
    from mutate.transformer.engine import EngineError, Limits

    try:
        settings = load(TransformerSettings, env)
        topology = load(TopologySettings, env)
        limits = Limits.from_env(env)
    except (SettingsError, EngineError) as exc:
        print(f"mutate-transformer: {exc}", file=sys.stderr)
        return 2
    logs.configure("transformer", level=settings.log_level, fmt=settings.log_format)
    # Files pass through as whole buffers and 1 MiB storage chunks.
    allocator.keep_freed_memory()
    try:
        telemetry = setup_telemetry("transformer", env=env)
    except SettingsError as exc:
        print(f"mutate-transformer: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(
            app.run(
                settings=settings,
                topology=topology,
                limits=limits,
                serve=serve,
                work=work,
                telemetry=telemetry,
            )
        )
    finally:
        # Last: the spans of the final jobs are queued by now.
        telemetry.shutdown(timeout=max(1.0, settings.shutdown_grace))


def _print_settings() -> None:
    for cls in (TransformerSettings, TopologySettings):
        for info in describe(cls):
            default = "***" if info.secret else info.default
            print(f"{info.env}={default}\n    {info.help}")


if __name__ == "__main__":
    sys.exit(main())
