"""`mutate-storage` / `python -m mutate.storage`: run the storage service."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from mutate.common import logs
from mutate.common.settings import SettingsError, load
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
    try:
        asyncio.run(serve(settings))
    except StartupError as exc:
        logger.error("cannot start: %s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
