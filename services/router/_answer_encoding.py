"""Protobuf wire encoding of the local provider's answers, field by field.

Setting each field of an AnalysisResult through upb and serializing it cost twice as much
as writing the bytes directly; the fields are written in field-number order, as upb does,
so the bytes are the same (tests/router/test_answer_encoding.py checks it against upb).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
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


def vocabulary(tag: bytes, names: Iterable[str]) -> dict[str, bytes]:
    """Each name's encoded field, for fields whose values come from a fixed set."""
    return {name: text_field(tag, name) for name in names}
