"""The answer cache's bound, eviction and entry encoding."""

from __future__ import annotations

import msgpack

from vcf_agent.services.router._cache import AnswerCache, CachedAnswer, cache_key

ANSWER = CachedAnswer("benign", 0.9, ("BA1: AF 0.12",), "Common in gnomAD.", "gpt-test")


def test_entries_are_msgpack_and_round_trip() -> None:
    packed = ANSWER.pack()
    assert msgpack.unpackb(packed)[0] == "benign"
    assert CachedAnswer.unpack(packed) == ANSWER


def test_key_separates_prompt_version_provider_and_model() -> None:
    keys = {
        cache_key("1:10:A:G", "openai", "m", "v1"),
        cache_key("1:10:A:G", "openai", "m", "v2"),
        cache_key("1:10:A:G", "claude", "m", "v1"),
        cache_key("1:10:A:G", "openai", "m2", "v1"),
    }
    assert len(keys) == 4


def test_size_bound_evicts_least_recently_used() -> None:
    packed = ANSWER.pack()
    keys = [cache_key(f"1:{i}:A:G", "openai", "m", "v1") for i in range(3)]
    cache = AnswerCache(max_bytes=2 * (len(keys[0]) + len(packed)))
    cache.put(keys[0], packed)
    cache.put(keys[1], packed)
    assert cache.get(keys[0]) == ANSWER  # keys[0] is now the most recently used
    cache.put(keys[2], packed)
    assert len(cache) == 2
    assert cache.size_bytes <= cache.max_bytes
    assert cache.get(keys[1]) is None
    assert cache.get(keys[0]) == ANSWER
    assert (cache.hits, cache.misses) == (2, 1)


def test_lookup_counts_once_and_clear_by_provider() -> None:
    cache = AnswerCache(max_bytes=2**20)
    openai = cache_key("1:10:A:G", "openai", "m", "v1")
    claude = cache_key("1:10:A:G", "claude", "m", "v1")
    cache.put(claude, ANSWER.pack())
    assert cache.lookup([openai, claude]) == (1, ANSWER)
    assert (cache.hits, cache.misses) == (1, 0)
    cache.put(openai, ANSWER.pack())
    cache.clear("claude")
    assert cache.get(claude) is None
    assert cache.get(openai) == ANSWER
    cache.put(claude, b"\xc1not msgpack")
    assert cache.get(claude) is None
    assert len(cache) == 1
