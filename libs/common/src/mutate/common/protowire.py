"""Protobuf wire-format pieces for the encoders that write messages by hand.

The OTLP span encoder and the storage chunk frames both write protobuf bytes
directly (see their modules for why); they share the varint here.
"""

from __future__ import annotations

_U64 = (1 << 64) - 1
# One-byte varints, by value: most tags, kinds and small counts.
SMALL_VARINTS = [bytes([n]) for n in range(128)]


def varint(value: int) -> bytes:
    """`value` as a base-128 varint; a negative one as its 64-bit two's
    complement (how protobuf writes int32/int64)."""
    if value < 0x80:
        if value >= 0:
            return SMALL_VARINTS[value]
        value &= _U64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
