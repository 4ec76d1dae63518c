"""The router component's configuration: the one place its environment variables are read.

Per provider, ``VCF_AGENT_PROVIDER_<NAME>_<FIELD>`` (NAME case-insensitive, may
contain underscores), for example ``VCF_AGENT_PROVIDER_OPENAI_BASE_URL`` or
``VCF_AGENT_PROVIDER_MYVLLM_KIND=openai``. Router-wide:
``VCF_AGENT_PROVIDER_STRATEGY`` (round_robin, weighted, least_outstanding),
``VCF_AGENT_PROVIDER_POOLS`` (``llm=openai,claude;local_llm=ollama``: a requested
pool name is answered by one member chosen by the strategy, the others being
its failover order) and ``VCF_AGENT_PROVIDER_CACHE_MAX_BYTES``.

API keys come from the environment variable named by ``..._API_KEY_ENV``
(default OPENAI_API_KEY / ANTHROPIC_API_KEY) or the file named by
``..._API_KEY_FILE``; they are held in a `Secret` whose repr never shows them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args

from vcf_agent.config import ConfigError

Kind = Literal["openai", "claude", "ollama"]
Strategy = Literal["round_robin", "weighted", "least_outstanding"]

PREFIX = "VCF_AGENT_PROVIDER_"


class Secret:
    """A credential that never appears in logs, reprs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """One LLM endpoint: where it is, how hard it may be driven, when to give up on it."""

    name: str
    kind: Kind
    base_url: str
    model: str
    api_key: Secret | None = None
    timeout_s: float = 30.0
    max_concurrency: int = 8
    # Requests per second through the token bucket; 0 disables the limit.
    rate_per_s: float = 10.0
    burst: int = 10
    # Share of a pool's traffic under the weighted strategy.
    weight: float = 1.0
    # Calls per request on this provider before failing over (429s do not count).
    max_attempts: int = 3
    backoff_base_s: float = 0.25
    backoff_max_s: float = 8.0
    breaker_failures: int = 5
    breaker_reset_s: float = 10.0
    max_tokens: int = 512
    # USD per million tokens, to turn reported usage into a cost metric.
    input_cost_per_mtok: float = 0.0
    output_cost_per_mtok: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in get_args(Kind):
            raise ConfigError(
                f"provider {self.name}: kind must be one of {get_args(Kind)}, got {self.kind!r}"
            )
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"provider {self.name}: base_url must be http(s), got {self.base_url!r}")
        for name in ("timeout_s", "max_concurrency", "burst", "max_attempts", "breaker_failures"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"provider {self.name}: {name} must be positive")
        for name in ("rate_per_s", "weight", "backoff_base_s", "breaker_reset_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"provider {self.name}: {name} must not be negative")


_DEFAULTS: dict[str, ProviderSettings] = {
    "openai": ProviderSettings("openai", "openai", "https://api.openai.com/v1", "gpt-4o-mini"),
    "claude": ProviderSettings("claude", "claude", "https://api.anthropic.com", "claude-3-5-haiku-latest"),
    "ollama": ProviderSettings(
        "ollama", "ollama", "http://127.0.0.1:11434", "llama3.1", rate_per_s=0, max_concurrency=2
    ),
}
_DEFAULT_KEY_ENV: dict[str, str] = {"openai": "OPENAI_API_KEY", "claude": "ANTHROPIC_API_KEY"}

# Suffixes that are not dataclass fields: where the key comes from.
_KEY_FIELDS = ("API_KEY_ENV", "API_KEY_FILE")
_PROVIDER_FIELDS = {f.name.upper(): f for f in fields(ProviderSettings) if f.name not in ("name", "api_key")}
_ROUTER_KEYS = ("STRATEGY", "POOLS", "CACHE_MAX_BYTES")


@dataclass(frozen=True, slots=True)
class RouterSettings:
    """Every LLM provider, the pools requests may name, the balancing strategy, the cache bound."""

    providers: Mapping[str, ProviderSettings] = field(default_factory=lambda: dict(_DEFAULTS))
    pools: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    strategy: Strategy = "round_robin"
    cache_max_bytes: int = 64 * 2**20

    def __post_init__(self) -> None:
        if self.strategy not in get_args(Strategy):
            raise ConfigError(f"strategy must be one of {get_args(Strategy)}, got {self.strategy!r}")
        if self.cache_max_bytes < 0:
            raise ConfigError("cache_max_bytes must not be negative")
        for pool, members in self.pools.items():
            if pool in self.providers or pool == "local":
                raise ConfigError(f"pool {pool!r} has the name of a provider")
            missing = [m for m in members if m not in self.providers]
            if missing or not members:
                raise ConfigError(f"pool {pool!r} names unknown providers {missing or '(none)'}")

    def members(self, slot: str) -> tuple[str, ...]:
        """The providers that may answer for a requested name, in failover order."""
        if slot in self.pools:
            return self.pools[slot]
        return (slot,) if slot in self.providers else ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RouterSettings:
        """From VCF_AGENT_PROVIDER_* (and the API key variables they name); os.environ when None."""
        env = os.environ if environ is None else environ
        raw: dict[str, dict[str, str]] = {}
        for var, value in env.items():
            if not var.startswith(PREFIX) or var[len(PREFIX) :] in _ROUTER_KEYS:
                continue
            rest = var[len(PREFIX) :]
            for suffix in (*_KEY_FIELDS, *_PROVIDER_FIELDS):
                if rest.endswith("_" + suffix) and len(rest) > len(suffix) + 1:
                    raw.setdefault(rest[: -len(suffix) - 1].lower(), {})[suffix] = value
                    break
        providers = dict(_DEFAULTS)
        for name in sorted(set(raw) | set(_DEFAULTS)):
            providers[name] = _provider(name, raw.get(name, {}), env)
        values: dict[str, Any] = {"providers": providers}
        if PREFIX + "STRATEGY" in env:
            values["strategy"] = env[PREFIX + "STRATEGY"].strip().lower().replace("-", "_")
        if PREFIX + "POOLS" in env:
            values["pools"] = _pools(env[PREFIX + "POOLS"])
        if PREFIX + "CACHE_MAX_BYTES" in env:
            values["cache_max_bytes"] = _number(
                PREFIX + "CACHE_MAX_BYTES", env[PREFIX + "CACHE_MAX_BYTES"], int
            )
        return cls(**values)


def _provider(name: str, raw: Mapping[str, str], env: Mapping[str, str]) -> ProviderSettings:
    kind = raw.get("KIND", "").lower() or (name if name in _DEFAULTS else "")
    if not kind:
        raise ConfigError(f"{PREFIX}{name.upper()}_KIND must say openai, claude or ollama")
    if kind not in _DEFAULTS:
        raise ConfigError(f"{PREFIX}{name.upper()}_KIND must be openai, claude or ollama, got {kind!r}")
    builtin = _DEFAULTS.get(name)
    base = builtin if builtin is not None and builtin.kind == kind else replace(_DEFAULTS[kind], name=name)
    values: dict[str, Any] = {"name": name, "kind": kind}
    for suffix, value in raw.items():
        spec = _PROVIDER_FIELDS.get(suffix)
        if spec is None or suffix == "KIND":
            continue
        var = f"{PREFIX}{name.upper()}_{suffix}"
        default = getattr(base, spec.name)
        values[spec.name] = _number(var, value, type(default)) if isinstance(default, int | float) else value
    values["api_key"] = _api_key(name, kind, raw, env)
    return replace(base, **values)


def _api_key(name: str, kind: str, raw: Mapping[str, str], env: Mapping[str, str]) -> Secret | None:
    if "API_KEY_FILE" in raw:
        path = Path(raw["API_KEY_FILE"])
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{PREFIX}{name.upper()}_API_KEY_FILE: cannot read {path}: {exc.strerror}"
            ) from exc
        return Secret(text) if text else None
    var = raw.get("API_KEY_ENV") or _DEFAULT_KEY_ENV.get(kind, "")
    value = env.get(var, "").strip() if var else ""
    return Secret(value) if value else None


def _pools(text: str) -> dict[str, tuple[str, ...]]:
    pools: dict[str, tuple[str, ...]] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        pool, _, members = part.partition("=")
        names = tuple(m.strip().lower() for m in members.split(",") if m.strip())
        if not pool.strip() or not names:
            raise ConfigError(f"{PREFIX}POOLS: expected name=provider,provider;... got {part!r}")
        pools[pool.strip().lower()] = names
    return pools


def _number(var: str, text: str, kind: type[int] | type[float]) -> int | float:
    try:
        return kind(text)
    except ValueError as exc:
        raise ConfigError(
            f"{var} must be a{'n integer' if kind is int else ' number'}, got {text!r}"
        ) from exc
