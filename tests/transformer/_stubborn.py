"""A task that ignores stop requests, to test the pool's hard time limit.

Module level, so the engine pool's spawned children can import it.
"""

from __future__ import annotations

import os
import time


def sleep_ignoring_stop(seconds: float, token: str) -> int:
    time.sleep(seconds)
    return os.getpid()
