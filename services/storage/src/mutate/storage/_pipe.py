"""A bounded byte pipe from the event loop to one blocking reader thread.

The minio client uploads from a file-like object in a worker thread; gRPC
delivers chunks on the event loop. `ChunkPipe` joins them with a byte budget:
the writer awaits (without blocking the loop) while the budget is used up, so
a put of any size holds at most `capacity` bytes here plus the part minio is
sending. Chunks may be bytes or memoryviews (views of received gRPC frames);
`read` hands minio bytes, `read_chunk` passes views on uncopied.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Callable


class PipeClosed(Exception):
    """The reader went away; no more data can be written."""


class ChunkPipe:
    """Write with `await write()` on the loop; `read()` in one thread."""

    def __init__(
        self,
        *,
        capacity: int,
        on_data: Callable[[bytes | memoryview], None] | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        """`on_data` sees every chunk the reader takes, `on_end` runs once at
        the end of data; both in the reader's thread, and an error from
        `on_end` is raised by `read()` in place of the end of data."""
        self._loop = asyncio.get_running_loop()
        self._on_data = on_data
        self._on_end = on_end
        self._capacity = capacity
        self._cond = threading.Condition()
        self._chunks: collections.deque[bytes | memoryview] = collections.deque()
        self._buffered = 0
        self._eof = False
        self._error: BaseException | None = None
        self._reader_gone = False
        self._space = asyncio.Event()

    async def write(self, chunk: bytes | memoryview) -> None:
        """Queue `chunk`, waiting while the pipe holds `capacity` bytes."""
        while True:
            with self._cond:
                if self._reader_gone:
                    raise PipeClosed("the upload ended before its data did")
                # Below capacity a chunk of any size is taken whole.
                if self._buffered < self._capacity:
                    self._chunks.append(chunk)
                    self._buffered += len(chunk)
                    self._cond.notify()
                    return
                self._space.clear()
            await self._space.wait()

    def close(self) -> None:
        """End of data: the reader sees EOF once the queue is empty."""
        with self._cond:
            self._eof = True
            self._cond.notify()

    def abort(self, error: BaseException) -> None:
        """Make the reader raise `error`, so the upload is abandoned."""
        with self._cond:
            self._error = error
            self._chunks.clear()
            self._buffered = 0
            self._cond.notify()

    def reader_done(self) -> None:
        """Called by the reader thread when it stops reading, for any reason."""
        with self._cond:
            self._reader_gone = True
        self._wake_writer()

    # --- reader side (worker thread) -------------------------------------

    def read(self, size: int = -1) -> bytes:
        """`size` bytes (all until EOF when -1), fewer only at end of data.

        Filling the whole request in one piece matters: minio appends what
        each read returns to its part buffer, so many small reads would copy
        the part over and over.
        """
        parts = self._read_parts(size)
        if len(parts) == 1 and isinstance(parts[0], bytes):
            return parts[0]
        return b"".join(parts)

    def read_chunk(self, size: int) -> bytes | memoryview:
        """Up to `size` bytes, as the chunk itself when one chunk holds them
        (no copy); empty at the end of data."""
        parts = self._read_parts(size)
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def _read_parts(self, size: int) -> list[bytes | memoryview]:
        parts: list[bytes | memoryview] = []
        taken = 0
        while size < 0 or taken < size:
            with self._cond:
                while not self._chunks and not self._eof and self._error is None:
                    self._cond.wait()
                if self._error is not None:
                    raise self._error
                if not self._chunks:
                    self._end()
                    break
                chunk = self._take_one(size - taken if size >= 0 else -1)
            self._wake_writer()
            if self._on_data is not None:
                self._on_data(chunk)
            parts.append(chunk)
            taken += len(chunk)
        return parts

    def _end(self) -> None:
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end()

    def _take_one(self, limit: int) -> bytes | memoryview:
        chunk = self._chunks.popleft()
        if 0 <= limit < len(chunk):
            self._chunks.appendleft(chunk[limit:])
            chunk = chunk[:limit]
        self._buffered -= len(chunk)
        return chunk

    def _wake_writer(self) -> None:
        # A closed loop (process shutting down) has nobody waiting.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._space.set)
