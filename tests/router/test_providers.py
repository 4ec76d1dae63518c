"""LLM providers on the wire, against loopback servers speaking each vendor's format."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from vcf_agent.analysis import ProviderSettings, Secret
from vcf_agent.analysis._dispatch import Answered, Failed, ProviderLane
from vcf_agent.analysis._llm_providers import (
    ANTHROPIC_VERSION,
    CallError,
    Completion,
    LLMProvider,
    RateLimited,
)
from vcf_agent.analysis._local_annotator import LocalAnnotator
from vcf_agent.analysis._prompt import (
    CLASSIFICATIONS,
    PROMPT_VERSION,
    MalformedAnswer,
    Prompt,
    build_prompt,
    parse_answer,
)
from vcf_agent.app._settings_tree import load_settings
from vcf_agent.config import ConfigError
from vcf_agent.localdev import SIMULATED_ANSWER, SIMULATED_API_KEY, Reply, Seen, SimulatedVendor, Vendor
from vcf_agent.v1 import variant_pb2

VENDORS: tuple[Vendor, ...] = ("openai", "claude", "ollama")


def variant() -> variant_pb2.VariantMessage:
    message = variant_pb2.VariantMessage(
        correlation_id="c1",
        chromosome="chr17",
        position=43_045_712,
        reference="G",
        alternate="A",
        all_alternates=["A"],
        has_quality=True,
        quality=99.0,
        filters=["PASS"],
    )
    message.info["CSQ"].strings.values.append(
        "A|stop_gained|HIGH|BRCA1|ENSG00000012048|Transcript|ENST00000357654|protein_coding|10/23||"
        "ENST00000357654.9:c.3607C>T|ENSP00000350283.3:p.Arg1203Ter"
    )
    return message


def prompt() -> Prompt:
    v = variant()
    return build_prompt(v, LocalAnnotator().annotate(v).annotation)


def settings_for(server: SimulatedVendor, **overrides: Any) -> ProviderSettings:
    settings = ProviderSettings(
        server.vendor,
        server.vendor,
        server.base_url,
        f"{server.vendor}-model",
        api_key=Secret(SIMULATED_API_KEY),
        timeout_s=2.0,
        max_concurrency=2,
        rate_per_s=0,
        backoff_base_s=0.01,
        backoff_max_s=0.05,
    )
    return replace(settings, **overrides)


async def complete(server: SimulatedVendor, **overrides: Any) -> Completion:
    provider = LLMProvider(settings_for(server, **overrides))
    await provider.start()
    try:
        return await provider.complete(prompt())
    finally:
        await provider.stop()


@pytest.mark.parametrize("vendor", VENDORS)
async def test_request_shape_auth_and_usage(vendor: Vendor) -> None:
    async with SimulatedVendor(vendor) as server:
        completion = await complete(server)
    assert json.loads(completion.text) == json.loads(SIMULATED_ANSWER)
    assert (completion.input_tokens, completion.output_tokens) == (120, 45)
    [seen] = server.requests
    body = seen.body
    assert body["model"] == f"{vendor}-model"
    assert seen.headers["content-type"] == "application/json"
    if vendor == "openai":
        assert seen.path == "/v1/chat/completions"
        assert seen.headers["authorization"] == f"Bearer {SIMULATED_API_KEY}"
        assert body["response_format"] == {"type": "json_object"}
        assert [m["role"] for m in body["messages"]] == ["system", "user"]
        assert body["stream"] is False
    elif vendor == "claude":
        assert seen.path == "/v1/messages"
        assert seen.headers["x-api-key"] == SIMULATED_API_KEY
        assert seen.headers["anthropic-version"] == ANTHROPIC_VERSION
        assert "authorization" not in seen.headers
        assert "JSON" in body["system"]
        assert [m["role"] for m in body["messages"]] == ["user"]
        assert body["max_tokens"] > 0
    else:
        assert seen.path == "/api/chat"
        assert body["format"] == "json"
        assert body["stream"] is False
    user = body["messages"][-1]["content"]
    assert "chr17:43045712 G>A" in user
    assert "stop_gained" in user and "BRCA1" in user


@pytest.mark.parametrize("vendor", ("openai", "claude"))
async def test_wrong_key_is_a_non_retryable_error_that_never_shows_the_key(
    vendor: Vendor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with SimulatedVendor(vendor, api_key="the-right-key") as server:
        with pytest.raises(CallError) as raised:
            await complete(server)
    assert raised.value.code == "http_401"
    assert not raised.value.retryable
    assert SIMULATED_API_KEY not in str(raised.value)
    assert SIMULATED_API_KEY not in caplog.text
    assert SIMULATED_API_KEY not in repr(settings_for(server))


@pytest.mark.parametrize("vendor", VENDORS)
async def test_error_body_message_is_reported(vendor: Vendor) -> None:
    too_long = "prompt is too long: 300000 tokens"
    async with SimulatedVendor(vendor, lambda v, s: v.error(400, too_long)) as server:
        with pytest.raises(CallError) as raised:
            await complete(server)
    assert raised.value.code == "http_400"
    assert not raised.value.retryable
    assert "prompt is too long" in str(raised.value)


@pytest.mark.parametrize("vendor", VENDORS)
async def test_429_carries_retry_after(vendor: Vendor) -> None:
    script = lambda v, s: v.error(429, "slow down", {"retry-after": "2"})  # noqa: E731
    async with SimulatedVendor(vendor, script) as server:
        with pytest.raises(RateLimited) as raised:
            await complete(server)
    assert raised.value.retry_after == 2.0
    assert "slow down" in str(raised.value)


@pytest.mark.parametrize("vendor", VENDORS)
async def test_500_is_retryable(vendor: Vendor) -> None:
    async with SimulatedVendor(vendor, lambda v, s: v.error(500, "internal failure")) as server:
        with pytest.raises(CallError) as raised:
            await complete(server)
    assert raised.value.retryable
    assert raised.value.code == "http_500"


@pytest.mark.parametrize("vendor", VENDORS)
async def test_timeout_is_retryable(vendor: Vendor) -> None:
    async with SimulatedVendor(vendor, lambda v, s: Reply(hang=True)) as server:
        with pytest.raises(CallError) as raised:
            # The outer bound only guards a hang: the call's own 0.3 s must end it.
            await asyncio.wait_for(complete(server, timeout_s=0.3), 30)
    assert raised.value.code == "timeout"
    assert raised.value.retryable


@pytest.mark.parametrize("vendor", VENDORS)
async def test_invalid_json_body_is_malformed(vendor: Vendor) -> None:
    reply = Reply(200, b"{'not': json", {"content-type": "application/json"})
    async with SimulatedVendor(vendor, lambda v, s: reply) as server:
        with pytest.raises(MalformedAnswer):
            await complete(server)


async def lane_outcome(server: SimulatedVendor, **overrides: Any) -> Answered | Failed:
    lane = ProviderLane(LLMProvider(settings_for(server, **overrides)))
    await lane.start()
    try:
        deadline = asyncio.get_running_loop().time() + 10
        return await lane.submit(prompt(), 1, deadline)
    finally:
        await lane.stop()


@pytest.mark.parametrize("vendor", VENDORS)
async def test_malformed_answer_is_retried_once_then_a_failure(vendor: Vendor) -> None:
    async with SimulatedVendor(vendor, lambda v, s: v.success("I think it is pathogenic.")) as server:
        outcome = await lane_outcome(server)
    assert isinstance(outcome, Failed)
    assert "malformed" in outcome.reason
    assert len(server.requests) == 2


async def test_malformed_answer_then_valid_one_is_answered() -> None:
    replies = iter(['{"classification": "bad"}', SIMULATED_ANSWER])
    async with SimulatedVendor("openai", lambda v, s: v.success(next(replies))) as server:
        outcome = await lane_outcome(server)
    assert isinstance(outcome, Answered)
    assert outcome.answer.classification == "likely_pathogenic"
    assert outcome.calls == 2


async def test_500s_are_retried_with_backoff_up_to_max_attempts() -> None:
    async with SimulatedVendor("claude", lambda v, s: v.error(529, "overloaded")) as server:
        outcome = await lane_outcome(server, max_attempts=3)
    assert isinstance(outcome, Failed)
    assert "529" in outcome.reason
    assert len(server.requests) == 3


async def test_429_waits_retry_after_without_using_attempts() -> None:
    def script(vendor: SimulatedVendor, seen: Seen) -> Reply:
        if len(vendor.requests) <= 3:
            return vendor.error(429, "rate limited", {"retry-after": "0.2"})
        return vendor.success(SIMULATED_ANSWER)

    async with SimulatedVendor("openai", script) as server:
        started = time.perf_counter()
        outcome = await lane_outcome(server, max_attempts=1)
    assert isinstance(outcome, Answered)
    assert len(server.requests) == 4
    assert time.perf_counter() - started >= 0.55


def test_parse_answer_accepts_the_schema_and_fences() -> None:
    answer = parse_answer("```json\n" + SIMULATED_ANSWER + "\n```")
    assert answer.classification == "likely_pathogenic"
    assert answer.confidence == 0.8
    assert answer.criteria[0].startswith("PVS1")
    spelled_out = SIMULATED_ANSWER.replace("likely_pathogenic", "Likely pathogenic")
    assert parse_answer(spelled_out).classification == "likely_pathogenic"
    assert set(CLASSIFICATIONS) == {
        "pathogenic",
        "likely_pathogenic",
        "uncertain_significance",
        "likely_benign",
        "benign",
        "not_classified",
    }
    # Models often answer ACMG's short form; it means the same term.
    assert parse_answer(SIMULATED_ANSWER.replace("likely_pathogenic", "uncertain")).classification == (
        "uncertain_significance"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"classification": "probably bad"}, "not one of"),
        ({"confidence": 1.5}, "outside 0..1"),
        ({"confidence": "high"}, "must be a number"),
        ({"confidence": True}, "must be a number"),
        ({"criteria": "PVS1"}, "list of strings"),
        ({"rationale": ""}, "non-empty"),
    ],
)
def test_parse_answer_rejects_schema_violations(change: dict[str, object], message: str) -> None:
    data = {**json.loads(SIMULATED_ANSWER), **change}
    with pytest.raises(MalformedAnswer, match=message):
        parse_answer(json.dumps(data))
    with pytest.raises(MalformedAnswer, match="lacks rationale"):
        parse_answer(json.dumps({k: v for k, v in data.items() if k != "rationale"}))
    with pytest.raises(MalformedAnswer, match="not JSON"):
        parse_answer("pathogenic")


def test_prompt_is_deterministic_and_versioned() -> None:
    assert prompt() == prompt()
    assert prompt().version == PROMPT_VERSION


def test_router_settings_from_the_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "claude.key"
    key_file.write_text("from-file\n")
    config = load_settings(
        {
            "VCF_AGENT_PROVIDER_OPENAI_BASE_URL": "http://127.0.0.1:8000/v1",
            "VCF_AGENT_PROVIDER_OPENAI_MAX_CONCURRENCY": "16",
            "VCF_AGENT_PROVIDER_OPENAI_RATE_PER_S": "2.5",
            "VCF_AGENT_PROVIDER_OPENAI_API_KEY_ENV": "MY_KEY",
            "MY_KEY": "from-env",
            "VCF_AGENT_PROVIDER_CLAUDE_API_KEY_FILE": str(key_file),
            "VCF_AGENT_PROVIDER_MY_VLLM_KIND": "openai",
            "VCF_AGENT_PROVIDER_MY_VLLM_MODEL": "qwen",
            "VCF_AGENT_PROVIDER_POOLS": "llm=my_vllm,openai;backup=claude",
            "VCF_AGENT_PROVIDER_STRATEGY": "least-outstanding",
            "VCF_AGENT_PROVIDER_CACHE_MAX_BYTES": "1024",
        }
    ).service.router
    openai = config.providers["openai"]
    assert (openai.base_url, openai.max_concurrency, openai.rate_per_s) == (
        "http://127.0.0.1:8000/v1",
        16,
        2.5,
    )
    assert openai.api_key == Secret("from-env")
    assert config.providers["claude"].api_key == Secret("from-file")
    assert (config.providers["my_vllm"].kind, config.providers["my_vllm"].model) == ("openai", "qwen")
    assert config.members("llm") == ("my_vllm", "openai")
    assert config.members("ollama") == ("ollama",)
    assert config.members("nothing") == ()
    assert config.strategy == "least_outstanding"
    assert config.cache_max_bytes == 1024
    assert "from-env" not in repr(config)
    with pytest.raises(ConfigError, match="MAX_CONCURRENCY"):
        load_settings({"VCF_AGENT_PROVIDER_OPENAI_MAX_CONCURRENCY": "many"})
    with pytest.raises(ConfigError, match="unknown providers"):
        load_settings({"VCF_AGENT_PROVIDER_POOLS": "llm=openai,nope"})
