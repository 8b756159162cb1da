"""`mutate-notifier`: serve webhooks (default) or apply the schema migrations.

    mutate-notifier [serve]   run the gRPC API, the event intake and delivery
    mutate-notifier migrate   create or update the `notifier` schema and exit

Settings come from the environment (see docs/webhooks.md), read once here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence

from mutate.common import logs, migrations
from mutate.common.grpc_server import wait_for_signal
from mutate.common.settings import SettingsError, load
from mutate.common.telemetry import Telemetry, setup_telemetry
from mutate.common.topology import TopologyMissing
from mutate.notifier._app import SCHEMA, Notifier
from mutate.notifier.settings import NotifierSettings


def main(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> int:
    parser = argparse.ArgumentParser(
        prog="mutate-notifier", description="Mutate's webhook notifier."
    )
    parser.add_argument(
        "command", nargs="?", default="serve", choices=["serve", "migrate"]
    )
    args = parser.parse_args(argv)
    try:
        settings = load(NotifierSettings, os.environ if env is None else env)
    except SettingsError as exc:
        print(f"mutate-notifier: {exc}", file=sys.stderr)
        return 2
    logs.configure("notifier", level=settings.log_level, fmt=settings.log_format)
    if args.command == "migrate":
        applied = migrations.migrate(
            settings.database_url,
            SCHEMA,
            migrations.discover("mutate.notifier"),
        )
        print("\n".join(applied) if applied else "notifier schema up to date")
        return 0
    try:
        telemetry = setup_telemetry("notifier", env=os.environ if env is None else env)
    except SettingsError as exc:
        print(f"mutate-notifier: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(settings, telemetry))
    except TopologyMissing as exc:
        print(f"mutate-notifier: {exc}", file=sys.stderr)
        return 3
    finally:
        # Last: the spans of the final webhook tries are queued by now.
        telemetry.shutdown(timeout=max(1.0, settings.shutdown_grace))
    return 0


async def _serve(settings: NotifierSettings, telemetry: Telemetry) -> None:
    notifier = Notifier(settings, telemetry=telemetry)
    try:
        await notifier.start()
        await wait_for_signal()
    finally:
        await notifier.stop()


if __name__ == "__main__":
    sys.exit(main())
