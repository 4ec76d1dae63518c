"""Protobuf wire-format pieces for the hot paths that splice serialized messages by hand."""

from __future__ import annotations

_MASK64 = (1 << 64) - 1

# Varint bytes for every value below 2**14, and the low-14-bit prefix (both bytes
# with the continuation bit) for composing larger ones: table lookups beat a
# per-byte Python loop by ~5x for positions in the millions.
SMALL_VARINTS = [bytes([n]) if n < 0x80 else bytes([(n & 0x7F) | 0x80, n >> 7]) for n in range(1 << 14)]
_CONTINUED = [bytes([(n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80]) for n in range(1 << 14)]


def varint(n: int) -> bytes:
    if 0 <= n < 16384:
        return SMALL_VARINTS[n]
    if 0 < n < 268_435_456:
        # Positions and record indexes: two lookups, no loop.
        return _CONTINUED[n & 0x3FFF] + SMALL_VARINTS[n >> 14]
    if n < 0:
        # int32/int64 negatives are 10-byte two's-complement varints.
        n &= _MASK64
    parts = []
    while n >= 16384:
        parts.append(_CONTINUED[n & 0x3FFF])
        n >>= 14
    parts.append(SMALL_VARINTS[n])
    return b"".join(parts)


def length_delimited(tag: bytes, body: bytes) -> bytes:
    return tag + varint(len(body)) + body


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it."""
    value = data[pos]
    pos += 1
    if value < 0x80:
        return value, pos
    value &= 0x7F
    shift = 7
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def split_field(data: bytes, tag: bytes) -> tuple[list[bytes], bytes]:
    """(the values of one length-delimited field, the message's other fields) of a message.

    `tag` is the field's tag as the generated wire_numbers spell it (any length). The values
    come in order, every occurrence; the other fields are kept as they came, in order, so
    they are themselves a serialized message of the same type without that field. Lets a
    stage parse the small part of a message and pass the bulky field on as bytes. Raises
    ValueError on framing upb would reject (a truncated or overlong varint, tag or length, a
    group or an invalid wire type); what is inside the fields is not checked here.
    """
    try:
        wanted, tag_end = read_varint(tag, 0)
    except IndexError:
        wanted, tag_end = 0, -1
    if tag_end != len(tag) or wanted & 7 != 2:
        raise ValueError(f"{tag!r} is not the tag of a length-delimited field")
    values: list[bytes] = []
    kept: list[bytes] = []
    pos, end, kept_from = 0, len(data), 0
    try:
        while pos < end:
            start = pos
            key, pos = read_varint(data, pos)
            if pos - start > 5 or key > 0xFFFFFFFF:
                # As upb (and schema/_wire.h): a tag is a 32-bit varint of at most 5 bytes.
                raise ValueError("malformed field tag")
            wire_type = key & 7
            if wire_type == 2:
                size_at = pos
                size, pos = read_varint(data, pos)
                if pos - size_at > 5:
                    raise ValueError("malformed length")
                if key == wanted:
                    values.append(data[pos : pos + size])
                    if start > kept_from:
                        kept.append(data[kept_from:start])
                    kept_from = pos + size
                pos += size
            elif wire_type == 0:
                value_at = pos
                _, pos = read_varint(data, pos)
                if pos - value_at > 10:
                    raise ValueError("overlong varint")
            elif wire_type == 1:
                pos += 8
            elif wire_type == 5:
                pos += 4
            else:
                raise ValueError(f"unsupported wire type {wire_type}")
            if key >> 3 == 0:
                raise ValueError("field number 0")
    except IndexError:
        raise ValueError("truncated field") from None
    if pos != end:
        raise ValueError("a field runs past the end of the message")
    if kept_from == 0:
        return values, data
    kept.append(data[kept_from:])
    return values, b"".join(kept)
