"""Protobuf wire encoding of the per-answer fields the local provider appends to a serialized
answer: its latency and requested providers. As upb does, proto3 defaults are left out, so the
bytes are the ones upb would write.
"""

from __future__ import annotations

import struct
from math import copysign

from vcf_agent.schema import varint

_pack_double = struct.Struct("<d").pack


def element(tag: bytes, text: str) -> bytes:
    """One element of a repeated string field (`tag` includes the wire type); kept even when empty."""
    data = text.encode()
    return tag + varint(len(data)) + data


def double_field(tag: bytes, number: float) -> bytes:
    """A singular double field; proto3 leaves out +0.0 only (the default, bit for bit), not -0.0."""
    if number == 0.0 and copysign(1.0, number) > 0:
        return b""
    return tag + _pack_double(number)
