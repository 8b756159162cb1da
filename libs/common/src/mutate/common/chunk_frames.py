"""Hand-encoded protobuf frames for the bytes that storage streams carry.

A PutObject or GetObject chunk is a protobuf message holding one `bytes`
field. Through upb, sending one copies the payload twice (into the message,
then into the serialized string) and receiving one twice more (parsing, then
reading the field). At 10 MB a transfer those copies, each into freshly
page-faulted memory, were most of the storage path's CPU. `ChunkFrames`
writes the very same wire bytes (field tag, length, payload) in one copy and
reads a payload without copying it; anything else goes through protobuf as
usual, so a peer with plain generated stubs (grpcurl, another language)
sees no difference on the wire.

A serializer built here takes either a message or `bytes`, and `bytes` is
taken to be an already-encoded frame (from `ChunkFrames.frame`). A
deserializer returns a message, or a `memoryview` of the payload when the
frame holds that one bytes field and nothing else.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from mutate.common.protowire import varint

M = TypeVar("M", bound=Message)

_LENGTH_DELIMITED = 2


class ChunkFrames(Generic[M]):
    """Frames of one message type whose `field` is a bytes field."""

    def __init__(self, message_type: type[M], field: str) -> None:
        descriptor = message_type.DESCRIPTOR.fields_by_name[field]
        if descriptor.type != FieldDescriptor.TYPE_BYTES:
            raise TypeError(f"{message_type.__name__}.{field} is not a bytes field")
        self._message_type = message_type
        self._tag = varint(descriptor.number << 3 | _LENGTH_DELIMITED)

    def frame(self, payload: bytes | memoryview) -> bytes:
        """The encoded message holding just `payload` (one copy)."""
        return b"".join((self._tag, varint(len(payload)), payload))

    def serialize(self, message: M | bytes) -> bytes:
        if isinstance(message, bytes):
            return message
        return message.SerializeToString()

    def deserialize(self, data: bytes) -> M | memoryview:
        payload = self.payload(data)
        if payload is not None:
            return payload
        return self._message_type.FromString(data)

    def payload(self, data: bytes) -> memoryview | None:
        """The payload when `data` is exactly one frame of the field."""
        tag = self._tag
        if not data.startswith(tag):
            return None
        length = 0
        shift = 0
        # A length varint of more than 10 bytes is malformed: protobuf decides.
        for position in range(len(tag), min(len(data), len(tag) + 10)):
            byte = data[position]
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                start = position + 1
                if start + length != len(data):
                    return None
                return memoryview(data)[start:]
        return None
