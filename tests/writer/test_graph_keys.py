"""The graph's INT64 keys for variants and analyses, computed column-wise, against the one-id rule."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pytest

from vcf_agent.schema import correlation_id
from vcf_agent.services.writer._graph_keys import analysis_keys, variant_key, variant_keys


def _blake2b_key(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True)


def test_a_hex_digest_keys_on_its_first_sixteen_digits_as_a_signed_number() -> None:
    ids = ["0123456789abcdef" + "0" * 16, "ffffffffffffffff" + "1" * 16, "8000000000000000" + "a" * 16]
    # By hand: 0x0123456789abcdef; all ones is -1; the sign bit alone is -2^63.
    assert variant_keys(pa.array(ids)).to_pylist() == [81985529216486895, -1, -(2**63)]
    assert [variant_key(cid) for cid in ids] == [81985529216486895, -1, -(2**63)]


def test_the_column_of_real_correlation_ids_keys_as_each_id_alone() -> None:
    ids = [correlation_id("tenant", "file-digest", index, 0) for index in range(2000)]
    column = pa.chunked_array([pa.array(ids[:700]), pa.array(ids[700:])])
    assert variant_keys(column).to_pylist() == [variant_key(cid) for cid in ids]
    # A slice starts inside its buffers.
    assert variant_keys(pa.array(ids).slice(3, 10)).to_pylist() == [variant_key(cid) for cid in ids[3:13]]


@pytest.mark.parametrize(
    "odd",
    [
        "0123456789ABCDEF" + "0" * 16,  # upper-case digits: not a digest this system makes
        "0123456789abcdeg" + "0" * 16,  # not hex
        "0123456789abcdef" + "0" * 15,  # 31 characters
        "hand-made id",
    ],
)
def test_an_id_that_is_not_a_lower_case_digest_is_hashed_and_the_rest_keep_their_keys(odd: str) -> None:
    digest = "0123456789abcdef" + "0" * 16
    keys = variant_keys(pa.array([digest, odd, digest])).to_pylist()
    assert keys == [81985529216486895, _blake2b_key(odd), 81985529216486895]
    assert variant_key(odd) == _blake2b_key(odd)


def test_a_missing_id_gets_no_key() -> None:
    keys = variant_keys(pa.array(["0123456789abcdef" + "0" * 16, None]))
    assert keys.to_pylist() == [81985529216486895, None]


def test_an_analysis_key_is_its_variant_key_xor_its_providers() -> None:
    digest = "0123456789abcdef" + "0" * 16
    keys = variant_keys(pa.array([digest, digest]))
    found = analysis_keys(keys, pa.array(["local", "claude"])).to_pylist()
    assert found == [81985529216486895 ^ _blake2b_key("local"), 81985529216486895 ^ _blake2b_key("claude")]
    assert found[0] != found[1]
