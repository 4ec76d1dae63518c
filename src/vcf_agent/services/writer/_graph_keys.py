"""Integer keys for the graph's Variant nodes, derived from correlation ids.

The graph engine keeps every node table's primary-key hash index in its
buffer pool. With the 32-character correlation id as the key, each variant
cost a string slot plus its overflow bytes there, and a genome's worth of
variants filled a 1 GiB pool near 1.2M variants. An INT64 key is 8 bytes.

A correlation id is a 128-bit blake2b digest in hex (vcf_agent.schema.correlation_id),
so its first 16 hex digits are already a uniform 64-bit number: the key is
that number as a signed INT64, computed for a whole column at once. Any other
id (hand-made ones in tests, ids from elsewhere) is hashed with blake2b to 64
bits instead, per id, so an id always maps to the same key. Two variants share
a key with probability about n^2 / 2^65 (7e-5 for 50 million variants); LanceDB,
keyed on the full id, is unaffected, and the graph would hold one node for both.
"""

from __future__ import annotations

import binascii
import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_DIGEST_CHARS = 32
_KEY_CHARS = 16


def variant_key(correlation_id: str) -> int:
    """The graph key of one correlation id (the same as variant_keys gives for it)."""
    if len(correlation_id) == _DIGEST_CHARS and all(c in "0123456789abcdef" for c in correlation_id):
        return int.from_bytes(bytes.fromhex(correlation_id[:_KEY_CHARS]), "big", signed=True)
    digest = hashlib.blake2b(correlation_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def variant_keys(ids: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Keys of a column of correlation ids; a null id gets a null key."""
    column = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    column = column.cast(pa.string())
    fast = _hex_digest_keys(column)
    if fast is not None:
        return fast
    return pa.array([None if cid is None else variant_key(cid) for cid in column.to_pylist()], pa.int64())


def _hex_digest_keys(column: pa.Array) -> pa.Array | None:
    """Vectorised keys when every id is a lower-case hex digest; None when any is not.

    binascii decodes (and checks) the whole column's hex at once; upper-case digits, which it
    accepts and variant_key does not, are looked for separately. ~37 us per 2,000 ids, where a
    digit table lookup in numpy took ~215.
    """
    rows = len(column)
    if column.null_count:
        return None
    if rows == 0:
        return pa.array([], pa.int64())
    _, offsets_buffer, data_buffer = column.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32, count=rows + 1, offset=column.offset * 4)
    if not np.all(np.diff(offsets) == _DIGEST_CHARS):
        return None
    data = np.frombuffer(data_buffer, dtype=np.uint8, count=rows * _DIGEST_CHARS, offset=int(offsets[0]))
    try:
        digests = binascii.unhexlify(data.tobytes())
    except binascii.Error:
        return None
    # 'A'..'F' (65..70); below 65 the subtraction wraps to 191 and more.
    if np.any((data - np.uint8(65)) < 6):
        return None
    # Each digest's first 8 of its 16 bytes, big-endian, as a signed number.
    keys = np.frombuffer(digests, dtype=">i8")[:: _DIGEST_CHARS // _KEY_CHARS]
    return pa.array(keys.astype(np.int64), pa.int64())


def analysis_keys(keys: pa.Array, providers: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Keys of Analysis nodes (one per variant and provider) from their variants' `keys`
    (variant_keys): the variant's key XOR the provider's.

    A variant key is uniform over 64 bits, so XOR with a per-provider constant keeps the
    keys uniform and distinct providers of one variant apart; only the few distinct
    provider names are hashed one by one.
    """
    names = providers.combine_chunks() if isinstance(providers, pa.ChunkedArray) else providers
    encoded = names.cast(pa.string()).dictionary_encode()
    per_name = pa.array(
        [
            int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)
            for name in encoded.dictionary.to_pylist()
        ],
        pa.int64(),
    )
    return pc.bit_wise_xor(keys, pc.take(per_name, encoded.indices))
