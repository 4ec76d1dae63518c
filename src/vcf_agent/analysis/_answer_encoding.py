"""Protobuf wire encoding of the few AnalysisResult fields the local provider writes in Python:
the fixed provider, model and status, and the per-answer latency and requested providers that
follow what the answer encoder wrote. As upb does, proto3 defaults are left out, so the bytes are
the same (tests/router/test_variant_reader.py compares them with upb's). Tags come from the
generated vcf_agent.v1.wire_numbers.
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


def text_field(tag: bytes, text: str) -> bytes:
    """A singular string field; proto3 leaves out the empty string, its default."""
    return element(tag, text) if text else b""


def double_field(tag: bytes, number: float) -> bytes:
    """A singular double field; proto3 leaves out +0.0 only (the default, bit for bit), not -0.0."""
    if number == 0.0 and copysign(1.0, number) > 0:
        return b""
    return tag + _pack_double(number)
