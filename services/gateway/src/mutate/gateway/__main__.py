"""`mutate-gateway`: serve the public API, migrate, or bootstrap tenants.

    mutate-gateway [serve]        gRPC + REST, projector, sweeper (default)
    mutate-gateway migrate        apply database migrations and exit
    mutate-gateway admin create-org --name NAME [--if-missing] [--operator]
    mutate-gateway admin create-key --org ID --name NAME [--operator]

Settings come from the environment (see mutate.gateway.settings); they are
read once here and passed down.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from mutate.common import allocator, logs
from mutate.common.errors import MutateError
from mutate.common.grpc_server import wait_for_signal
from mutate.common.settings import SettingsError, load, redacted
from mutate.common.telemetry import Telemetry, setup_telemetry
from mutate.gateway import admin
from mutate.gateway.app import Gateway, apply_migrations
from mutate.gateway.settings import GatewaySettings

logger = logging.getLogger("mutate.gateway")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mutate-gateway", description="Mutate's public API gateway."
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve gRPC and REST (the default)")
    commands.add_parser("migrate", help="apply database migrations and exit")
    admin_parser = commands.add_parser("admin", help="bootstrap organizations and keys")
    admin_commands = admin_parser.add_subparsers(dest="admin_command", required=True)
    org = admin_commands.add_parser(
        "create-org", help="create an organization and an API key for it"
    )
    org.add_argument("--name", required=True)
    org.add_argument(
        "--if-missing",
        action="store_true",
        help="when the organization exists, make a new key for it instead of failing",
    )
    org.add_argument("--key-name", help="name of the new key")
    org.add_argument(
        "--operator", action="store_true", help="the key sees the whole queue"
    )
    key = admin_commands.add_parser("create-key", help="create an API key")
    key.add_argument("--org", required=True, help="organization id (org_…)")
    key.add_argument("--name", required=True)
    key.add_argument(
        "--operator", action="store_true", help="the key sees the whole queue"
    )
    return parser


async def _serve(settings: GatewaySettings, telemetry: Telemetry) -> int:
    gateway = Gateway(settings, telemetry=telemetry)
    try:
        await gateway.start()
        received = await wait_for_signal()
        logger.info("stopping", extra={"signal": received.name})
    finally:
        await gateway.stop()
    return 0


def _run(args: argparse.Namespace, settings: GatewaySettings) -> int:
    command = args.command or "serve"
    if command == "serve":
        logger.info("starting", extra={"settings": str(redacted(settings))})
        # Only the server is traced; admin commands and migrate are not.
        telemetry = setup_telemetry("gateway", env=os.environ)
        try:
            return asyncio.run(_serve(settings, telemetry))
        finally:
            # Last: the spans of the final calls are queued by now.
            telemetry.shutdown(timeout=max(1.0, settings.shutdown_grace))
    if command == "migrate":
        applied = apply_migrations(settings)
        print("\n".join(applied) if applied else "database schema up to date")
        return 0
    if settings.migrate_on_start:
        apply_migrations(settings)
    if args.admin_command == "create-org":
        return asyncio.run(
            admin.create_org(
                settings,
                name=args.name,
                if_missing=args.if_missing,
                key_name=args.key_name,
                operator=args.operator,
            )
        )
    return asyncio.run(
        admin.create_key(
            settings, organization_id=args.org, name=args.name, operator=args.operator
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load(GatewaySettings, os.environ)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Admin commands keep stdout for their answer; logs go to stderr anyway.
    logs.configure("gateway", level=settings.log_level, fmt=settings.log_format)
    # Files pass through as whole buffers and 1 MiB storage chunks.
    allocator.keep_freed_memory()
    try:
        return _run(args, settings)
    except MutateError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except SettingsError as exc:
        # A malformed OTEL_* variable, read when the server starts.
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
