"""Hand-encoded chunk frames are byte-for-byte protobuf's, and parse back."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from google.protobuf.message import DecodeError

from mutate.common.chunk_frames import ChunkFrames
from mutate.common.storage_client import GET_CHUNKS, PUT_CHUNKS
from mutate.v1 import storage_pb2

# Around each varint length boundary, and a real chunk.
SIZES = [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 1024 * 1024]


@pytest.mark.parametrize("size", SIZES)
def test_frame_is_what_protobuf_writes(size: int) -> None:
    payload = os.urandom(size)

    assert PUT_CHUNKS.frame(payload) == (
        storage_pb2.PutObjectRequest(chunk=payload).SerializeToString()
    )
    assert GET_CHUNKS.frame(memoryview(payload)) == (
        storage_pb2.GetObjectResponse(chunk=payload).SerializeToString()
    )


@pytest.mark.parametrize("size", SIZES)
def test_a_chunk_frame_reads_back_as_a_view_of_its_payload(size: int) -> None:
    payload = os.urandom(size)
    wire = storage_pb2.GetObjectResponse(chunk=payload).SerializeToString()

    parsed = GET_CHUNKS.deserialize(wire)

    assert isinstance(parsed, memoryview)
    assert parsed == payload


def test_other_messages_go_through_protobuf() -> None:
    header = storage_pb2.PutObjectRequest(
        header=storage_pb2.PutObjectHeader(key="input/o/j/f.csv", size=3)
    )
    info = storage_pb2.GetObjectResponse(info=storage_pb2.ObjectInfo(key="k"))

    assert PUT_CHUNKS.deserialize(header.SerializeToString()) == header
    assert GET_CHUNKS.deserialize(info.SerializeToString()) == info
    assert PUT_CHUNKS.serialize(header) == header.SerializeToString()
    assert PUT_CHUNKS.serialize(b"\x12\x01x") == b"\x12\x01x"


def test_a_chunk_followed_by_more_fields_is_left_to_protobuf() -> None:
    # Protobuf lets fields repeat: the last one of a oneof wins. Only an
    # exact single frame takes the fast path.
    wire = PUT_CHUNKS.frame(b"first") + PUT_CHUNKS.frame(b"second")

    parsed = PUT_CHUNKS.deserialize(wire)

    assert isinstance(parsed, storage_pb2.PutObjectRequest)
    assert parsed.chunk == b"second"


@pytest.mark.parametrize(
    "wire",
    [
        b"\x12\x05abc",  # shorter than its length
        b"\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # varint too long
        b"\x12",  # no length at all
    ],
    ids=["short", "long-varint", "no-length"],
)
def test_malformed_frames_are_refused_by_protobuf(wire: bytes) -> None:
    with pytest.raises(DecodeError):
        PUT_CHUNKS.deserialize(wire)


def test_only_bytes_fields_can_be_framed() -> None:
    with pytest.raises(TypeError, match="not a bytes field"):
        ChunkFrames(storage_pb2.PutObjectHeader, "key")


def test_allocator_settings_apply_on_this_machine() -> None:
    # In a child: the settings stay with the process that makes them.
    code = (
        "from mutate.common import allocator;"
        "import sys; sys.exit(0 if allocator.keep_freed_memory() else 3)"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, timeout=60)

    assert result.returncode == 0
