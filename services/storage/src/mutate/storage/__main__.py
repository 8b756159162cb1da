"""`mutate-storage` / `python -m mutate.storage`: run the storage service."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from mutate.common import allocator, logs
from mutate.common.settings import SettingsError, load
from mutate.common.telemetry import setup_telemetry
from mutate.storage._app import StartupError, serve
from mutate.storage.settings import StorageSettings

logger = logging.getLogger("mutate.storage")


def main() -> None:
    try:
        settings = load(StorageSettings, os.environ)
    except SettingsError as exc:
        print(f"mutate-storage: {exc}", file=sys.stderr)
        sys.exit(2)
    logs.configure("storage", level=settings.log_level, fmt=settings.log_format)
    # Every put and get streams fresh buffers; a put holds about two parts.
    allocator.keep_freed_memory(trim_bytes=2 * settings.part_bytes)
    try:
        telemetry = setup_telemetry("storage", env=os.environ)
    except SettingsError as exc:
        print(f"mutate-storage: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        asyncio.run(serve(settings, telemetry))
    except StartupError as exc:
        logger.error("cannot start: %s", exc)
        sys.exit(1)
    finally:
        # After the server stopped: the spans of its last calls are queued.
        telemetry.shutdown(timeout=max(1.0, settings.shutdown_grace))


if __name__ == "__main__":
    main()
