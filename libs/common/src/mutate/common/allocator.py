"""glibc malloc settings for processes that stream large buffers.

Every streamed chunk is a fresh 1 MiB buffer (and a whole object a fresh
multi-MiB one). With glibc's defaults such buffers are mapped and unmapped,
or the heap top is trimmed and regrown, again and again, so each copy into
them page-faults its way through new memory: on a 10 MB transfer that was a
third of a process's CPU. Keeping freed memory for reuse (a fixed mmap
threshold at glibc's own dynamic ceiling, and trimming only above
`trim_bytes` of free heap) removes those faults; the cost is that up to
`trim_bytes` of freed memory stays resident.

Does nothing off glibc (musl, macOS), where these knobs do not exist.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

logger = logging.getLogger(__name__)

# mallopt parameter numbers from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: where its dynamic threshold
# would end up anyway after the first large free.
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TRIM_BYTES = 64 * 1024 * 1024


def keep_freed_memory(trim_bytes: int = TRIM_BYTES) -> bool:
    """Apply the settings to this process; False where they do not apply."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    try:
        libc = ctypes.CDLL(libc_name)
        done = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and libc.mallopt(
            _M_TRIM_THRESHOLD, trim_bytes
        )
    except (OSError, AttributeError):
        return False
    if not done:
        logger.warning("mallopt refused the streaming settings")
    return bool(done)
