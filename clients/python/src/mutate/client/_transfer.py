"""Moving file bytes over presigned URLs (S3 / R2 / MinIO), with httpx.

The gateway never sees these bytes: it hands out a URL, the client PUTs or
GETs it directly. httpx errors are translated here, and only here, into
`TransferError`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from mutate.client._errors import TransferError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024

# Called with (bytes done, bytes expected or 0 when unknown).
ByteProgress = Callable[[int, int], None]


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    import httpx

    try:
        yield
    except httpx.HTTPStatusError as exc:
        excerpt = exc.response.text[:300] if exc.response.is_closed else ""
        raise TransferError(
            f"{what} failed: HTTP {exc.response.status_code} {excerpt}".rstrip()
        ) from exc
    except httpx.HTTPError as exc:
        raise TransferError(f"{what} failed: {exc}") from exc


def put_file(
    url: str,
    path: Path,
    *,
    headers: Mapping[str, str],
    timeout: float,
    verify: bool = True,
) -> None:
    """PUT the file at `path` to a presigned URL, streamed from disk."""
    import httpx  # here, not at the top: it doubles the CLI's start-up time

    size = path.stat().st_size
    logger.info("uploading", extra={"bytes": size, "file": path.name})
    with (
        _translated(f"upload of {path.name}"),
        path.open("rb") as body,
        httpx.Client(timeout=timeout, verify=verify) as http,
    ):
        # A file object gets a Content-Length (S3 refuses chunked PUTs) and is
        # read in chunks, never whole.
        response = http.put(
            url, content=body, headers={**headers, "Content-Length": str(size)}
        )
        response.read()
        response.raise_for_status()


def get_file(
    url: str,
    destination: Path,
    *,
    timeout: float,
    on_progress: ByteProgress | None = None,
    verify: bool = True,
) -> int:
    """Stream a presigned GET into `destination`; returns the byte count.

    Bytes go to a temporary file beside the destination, renamed over it once
    complete: a failed download never leaves a truncated output behind. The
    partial file is private (mkstemp's 0600); the finished one gets the mode
    of any file the user creates, or keeps that of the file it replaces.
    """
    import httpx

    destination.parent.mkdir(parents=True, exist_ok=True)
    final_mode = _output_mode(destination)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=".part", dir=destination.parent
    )
    done = 0
    try:
        with (
            _translated(f"download of {destination.name}"),
            os.fdopen(handle, "wb") as out,
            httpx.Client(timeout=timeout, verify=verify) as http,
            http.stream("GET", url) as response,
        ):
            if response.is_error:
                response.read()
            response.raise_for_status()
            expected = int(response.headers.get("content-length") or 0)
            for chunk in response.iter_bytes(CHUNK_BYTES):
                out.write(chunk)
                done += len(chunk)
                if on_progress is not None:
                    on_progress(done, expected)
        os.chmod(temporary, final_mode)
        os.replace(temporary, destination)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return done


def _output_mode(destination: Path) -> int:
    """The mode `open(destination, "w")` would leave: the existing file's, else
    0o666 less the umask."""
    try:
        return stat.S_IMODE(destination.stat().st_mode)
    except OSError:  # no such file yet
        return 0o666 & ~_process_umask()


def _process_umask() -> int:
    # Linux shows the umask without changing it; elsewhere it can only be read
    # by setting it, which for a moment affects files other threads create.
    with (
        contextlib.suppress(OSError, ValueError),
        open("/proc/self/status", encoding="ascii") as status,
    ):
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o077)
    os.umask(mask)
    return mask
