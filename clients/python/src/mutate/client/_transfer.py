"""Moving file bytes over presigned URLs (S3 / R2 / MinIO), with httpx.

The gateway never sees these bytes: it hands out a URL, the client PUTs or
GETs it directly. httpx errors are translated here, and only here, into
`TransferError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from mutate.client._errors import TransferError, UsageError

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
    except OSError as exc:  # the local side: a full disk, a reader gone
        raise TransferError(f"{what} failed: {exc.strerror or exc}") from exc


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

    A regular file (or a new one) is written to a temporary file beside it,
    renamed over it once complete: a failed download never leaves a truncated
    output behind. The partial file is private (mkstemp's 0600); the finished
    one gets the mode of any file the user creates, or keeps the permission
    bits of the file it replaces. A symbolic link is followed, so its target
    is the file replaced. Anything else that can be opened (a FIFO, a device,
    a `/dev/fd/N` path from `>(cmd)`) is written straight into, as a shell
    redirection would. Raises `UsageError` for a folder, a missing folder or
    a destination that cannot be opened.
    """
    target = check_destination(destination)
    if target.in_place:
        try:
            out = open(destination, "wb")  # noqa: SIM115 (_stream closes it)
        except OSError as exc:
            raise UsageError(f"cannot write {destination}: {exc.strerror}") from exc
        return _stream(url, out, str(destination), timeout, on_progress, verify)

    final_mode = _output_mode(target.path)
    try:
        handle, temporary = tempfile.mkstemp(
            prefix=f".{target.path.name}.", suffix=".part", dir=target.path.parent
        )
    except OSError as exc:
        raise UsageError(f"cannot write {destination}: {exc.strerror}") from exc
    try:
        done = _stream(
            url, os.fdopen(handle, "wb"), destination.name, timeout, on_progress, verify
        )
        with _translated(f"download of {destination.name}"):
            os.chmod(temporary, final_mode)
            os.replace(temporary, target.path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return done


def _stream(
    url: str,
    out: BinaryIO,
    name: str,
    timeout: float,
    on_progress: ByteProgress | None,
    verify: bool,
) -> int:
    """Copy the body of a GET into `out`, and close it."""
    import httpx  # here, not at the top: it doubles the CLI's start-up time

    done = 0
    with (
        _translated(f"download of {name}"),
        out,
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
    return done


@dataclasses.dataclass(frozen=True)
class Destination:
    """Where a download's bytes end up."""

    # The file to replace (symbolic links followed), or with `in_place` the
    # path as given.
    path: Path
    # Not a regular file (FIFO, device, /dev/fd/N): open and write, nothing
    # to rename or chmod.
    in_place: bool


def check_destination(destination: Path) -> Destination:
    """How a download to `destination` will be written; raises `UsageError`
    when it cannot be (a folder, a missing folder, a file in a file)."""
    try:
        found: os.stat_result | None = destination.stat()
    except FileNotFoundError:
        found = None
    except OSError as exc:  # not a folder on the way, a link loop, no access
        raise UsageError(f"cannot write {destination}: {exc.strerror}") from exc
    if found is not None and stat.S_ISDIR(found.st_mode):
        raise UsageError(
            f"{destination} is a folder: give the file name too "
            f"({destination / 'NAME'})"
        )
    if found is not None and not stat.S_ISREG(found.st_mode):
        return Destination(destination, in_place=True)
    target, names_an_open_file = _follow_links(destination)
    if names_an_open_file:
        # /dev/stdout, /dev/fd/N of a regular file: renaming over the file
        # it names would leave the holder of that descriptor writing nowhere.
        return Destination(destination, in_place=True)
    if found is None and not target.parent.is_dir():
        raise UsageError(
            f"cannot write {destination}: folder {target.parent} does not exist"
        )
    return Destination(target, in_place=False)


# /proc/<pid>/fd, or /proc/<pid>/task/<tid>/fd, with symbolic links resolved.
_DESCRIPTOR_FOLDER = re.compile(r"/proc/\d+(?:/task/\d+)?/fd")
_MAX_LINKS = 40  # as Linux's ELOOP limit


def _follow_links(destination: Path) -> tuple[Path, bool]:
    """The path `destination`'s symbolic links lead to (which need not exist
    yet: a dangling link names the file to create), and whether it passes
    through a process's open-descriptor folder (/dev/fd/N, /dev/stdout)."""
    path = os.path.join(os.getcwd(), destination)
    for _ in range(_MAX_LINKS):
        # Each hop from the real folder holding it, so a relative link with
        # `..` means what the kernel would make of it.
        folder = os.path.realpath(os.path.dirname(path))
        if _DESCRIPTOR_FOLDER.fullmatch(folder):
            return Path(path), True
        path = os.path.join(folder, os.path.basename(path))
        try:
            link = os.readlink(path)
        except OSError:  # not a link, or nothing there
            return Path(path), False
        path = os.path.join(folder, link)
    raise UsageError(f"cannot write {destination}: too many levels of symbolic links")


def _output_mode(destination: Path) -> int:
    """The permission bits `open(destination, "w")` would leave: the existing
    file's (without setuid, setgid or sticky, which belong to what was there
    before), else 0o666 less the umask."""
    try:
        return destination.stat().st_mode & 0o777
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
