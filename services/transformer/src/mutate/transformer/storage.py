"""The transformer's use of the storage service: read inputs, write outputs.

A thin layer over `mutate.common.storage_client.StorageClient`, which
translates every failed call into the `mutate.common.errors` tree (the worker
and the gRPC service translate from there). Outputs are written by the engine
to a local file and streamed from it, so no output is held in memory whole;
its size and SHA-256 go first, so storage streams it straight to the store
and refuses (stores nothing of) a stream that breaks off early.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath

from mutate.common import keys
from mutate.common.storage_client import (
    CHUNK_BYTES,
    HASH_INLINE_BYTES,
    ObjectInfo,
    StorageClient,
)

Storage = StorageClient

# The output's name when the input's has nothing usable.
DEFAULT_STEM = "output"


def output_key_for(
    organization_id: str, job_id: str, input_file_name: str, extension: str
) -> str:
    """`output/{org}/{job}/{input stem}{extension}`, e.g. `report.csv`.

    Deterministic per job, so a redelivery overwrites the same object.
    """
    name = PureWindowsPath(PurePosixPath(input_file_name).name).name
    stem = PurePosixPath(name).stem.strip() or DEFAULT_STEM
    if extension and not extension.startswith("."):
        extension = f".{extension}"
    return keys.output_key(organization_id, job_id, f"{stem}{extension}")


async def file_chunks(path: Path, size: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
    """The file's content in pieces of `size` bytes.

    Outputs sit in the page cache a moment after the engine wrote them:
    reading them on the loop costs less than a thread hop per chunk.
    """
    with open(path, "rb") as source:
        while chunk := source.read(size):
            yield chunk


async def put_file(
    storage: StorageClient,
    key: str,
    path: Path,
    *,
    content_type: str,
    metadata: Mapping[str, str] | None = None,
) -> ObjectInfo:
    """Stream a local file to `key`, replacing what is there."""
    if path.stat().st_size > HASH_INLINE_BYTES:
        size, sha256 = await asyncio.to_thread(_size_and_sha256, path)
    else:
        size, sha256 = _size_and_sha256(path)
    return await storage.put_stream(
        key,
        file_chunks(path),
        content_type or "application/octet-stream",
        metadata=metadata,
        size=size,
        sha256=sha256,
    )


def _size_and_sha256(path: Path) -> tuple[int, str]:
    with open(path, "rb") as source:
        size = os.fstat(source.fileno()).st_size
        return size, hashlib.file_digest(source, "sha256").hexdigest()


__all__ = ["Storage", "file_chunks", "output_key_for", "put_file"]
