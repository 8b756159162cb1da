"""Error texts as API users see them: size limits, and no internal storage keys.

Object keys (`input/{org}/{job}/{file}`, ARCHITECTURE "Object keys") are how
services name files to each other; users know a job and its file name. The
transformer drops keys from the errors it reports, and every job error the
gateway hands out passes through `public_job_error` as well: rows stored
before that, and errors from older workers, can still quote one.
"""

from __future__ import annotations

from mutate.common.errors import InvalidArgument
from mutate.common.keys import without_storage_keys
from mutate.gateway.rest._errors import FILE_TOO_LARGE
from mutate.v1 import job_pb2

_MIB = 1024 * 1024
_KIB = 1024


def size_text(size: int) -> str:
    """`209715200 bytes (200 MiB)`: exact for machines, readable for people."""
    for unit, name in ((_MIB, "MiB"), (_KIB, "KiB")):
        if size >= unit:
            amount = f"{size / unit:.1f}".removesuffix(".0")
            return f"{size} bytes ({amount} {name})"
    return f"{size} bytes"


def file_too_large(
    limit: int, *, field: str, what: str = "file", size: int | None = None
) -> InvalidArgument:
    """The refusal of an input over `limit` (MUTATE_MAX_INPUT_BYTES); its
    reason makes it HTTP 413 on REST."""
    over = f"is {size} bytes, over" if size is not None else "is over"
    return InvalidArgument(
        f"the {what} {over} the largest input accepted, {size_text(limit)}",
        field_violations=[(field, "too large")],
        reason=FILE_TOO_LARGE,
    )


def public_job_error(error: job_pb2.JobError, organization_id: str) -> None:
    """Make a job's error fit for its owner (`organization_id`), in place."""
    if error.message:
        error.message = without_storage_keys(error.message, organization_id)


__all__ = ["FILE_TOO_LARGE", "file_too_large", "public_job_error", "size_text"]
