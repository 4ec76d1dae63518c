"""The one place environment variables are read.

Everything else receives a frozen, validated `Settings`; CLI flags override
the environment by passing keyword overrides to `Settings.from_env`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

# The five services in pipeline order: each consumes what the one before it produces.
SERVICES = ("ingest", "router", "aggregator", "writer", "notifier")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the setting."""


@dataclass(frozen=True, slots=True)
class Topology:
    """Stream names and partition counts (the design's defaults)."""

    variants: str = "vcf-variants"
    variants_partitions: int = 10
    analysis_requests: str = "ai-analysis-requests"
    analysis_requests_partitions: int = 5
    analysis_results: str = "ai-analysis-results"
    analysis_results_partitions: int = 5
    database_writes: str = "database-writes"
    database_writes_partitions: int = 3
    cache_events: str = "cache-events"
    cache_events_partitions: int = 2
    user_notifications: str = "user-notifications"
    user_notifications_partitions: int = 1
    control_events: str = "control-events"
    control_events_partitions: int = 1
    dead_letters: str = "dead-letters"
    dead_letters_partitions: int = 1

    def specs(self) -> list[tuple[str, int]]:
        """(name, partitions) for every stream, for idempotent creation at start-up."""
        names = [f.name for f in fields(self) if not f.name.endswith("_partitions")]
        return [(getattr(self, n), getattr(self, f"{n}_partitions")) for n in names]


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a service needs to run; validated on construction."""

    bus_url: str = ""
    data_dir: Path = Path("vcf-agent-data")
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 0
    websocket_port: int = 0
    topology: Topology = field(default_factory=Topology)
    # Variants per VariantBatch message on `vcf-variants`.
    batch_size: int = 2000
    # Flush a partial batch after this long so small files do not wait.
    batch_linger_ms: int = 50
    # Batches in flight between the VCF reader thread and the publisher.
    max_pending_batches: int = 8
    providers: tuple[str, ...] = ("local",)
    # The aggregator marks a variant partial once this has passed without every answer.
    analysis_deadline_s: float = 30.0
    genes_file: Path | None = None
    # INFO keys (or their Description) matching this regex hold population allele frequencies
    # (ACMG BA1/BS1/PM2 evidence); empty: the built-in list of databases.
    population_af_pattern: str = ""
    # ACMG/AMP BS1 "allele frequency greater than expected for the disorder": disorder-specific,
    # so configurable; PM2_Supporting applies at or below pm2 (0: only when absent, ClinGen SVI).
    acmg_bs1_af: float = 0.01
    acmg_pm2_af: float = 0.0
    # lenient: bad records go to the dead-letter stream; strict: any error fails the job first.
    ingest_validation: Literal["strict", "lenient"] = "lenient"
    compression_threshold: int = 4096
    # Rows the writer buffers before one store transaction.
    writer_batch_rows: int = 10000
    # Fixed per-transaction store costs dominate small batches (measured: ~75 us/variant
    # at 1,000 rows, ~30 at 10,000), so while a store is busy the next batch lingers this
    # long to grow; with the stores idle it leaves at once, and job markers flush at once.
    writer_linger_ms: int = 500
    shutdown_grace_s: float = 5.0
    log_level: str = "WARNING"

    def __post_init__(self) -> None:
        if not self.bus_url:
            object.__setattr__(self, "bus_url", default_bus_url(self.data_dir))
        for name in ("batch_size", "max_pending_batches", "writer_batch_rows"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.grpc_port <= 65535:
            raise ConfigError(f"grpc_port must be 0..65535, got {self.grpc_port}")
        if self.analysis_deadline_s <= 0:
            raise ConfigError("analysis_deadline_s must be positive")
        if self.ingest_validation not in ("strict", "lenient"):
            raise ConfigError(f"ingest_validation must be strict or lenient, got {self.ingest_validation!r}")
        if not (0 <= self.acmg_pm2_af <= self.acmg_bs1_af <= 0.05):
            raise ConfigError("ACMG thresholds must satisfy 0 <= acmg_pm2_af <= acmg_bs1_af <= 0.05 (BA1)")
        if self.population_af_pattern:
            try:
                re.compile(self.population_af_pattern)
            except re.error as exc:
                raise ConfigError(f"population_af_pattern is not a regular expression: {exc}") from exc
        if not self.providers:
            raise ConfigError("providers must name at least one provider")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from VCF_AGENT_* (and the design's KAFKA_/IGGY_) variables, then overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if "VCF_AGENT_DATA_DIR" in env:
            values["data_dir"] = Path(env["VCF_AGENT_DATA_DIR"])
        bus = env.get("VCF_AGENT_BUS") or _bus_from_design_env(env)
        if bus:
            values["bus_url"] = bus
        ints = {
            "VCF_AGENT_GRPC_PORT": "grpc_port",
            "VCF_AGENT_WEBSOCKET_PORT": "websocket_port",
            "VCF_AGENT_BATCH_SIZE": "batch_size",
            "VCF_AGENT_BATCH_LINGER_MS": "batch_linger_ms",
            "VCF_AGENT_WRITER_BATCH_ROWS": "writer_batch_rows",
        }
        for var, name in ints.items():
            if var in env:
                try:
                    values[name] = int(env[var])
                except ValueError as exc:
                    raise ConfigError(f"{var} must be an integer, got {env[var]!r}") from exc
        if "VCF_AGENT_GRPC_HOST" in env:
            values["grpc_host"] = env["VCF_AGENT_GRPC_HOST"]
        if "VCF_AGENT_PROVIDERS" in env:
            values["providers"] = tuple(p.strip() for p in env["VCF_AGENT_PROVIDERS"].split(",") if p.strip())
        if "VCF_AGENT_ANALYSIS_DEADLINE_S" in env:
            values["analysis_deadline_s"] = float(env["VCF_AGENT_ANALYSIS_DEADLINE_S"])
        if "VCF_AGENT_GENES_FILE" in env:
            values["genes_file"] = Path(env["VCF_AGENT_GENES_FILE"])
        if "VCF_AGENT_POPULATION_AF_PATTERN" in env:
            values["population_af_pattern"] = env["VCF_AGENT_POPULATION_AF_PATTERN"]
        for var, name in (("VCF_AGENT_ACMG_BS1_AF", "acmg_bs1_af"), ("VCF_AGENT_ACMG_PM2_AF", "acmg_pm2_af")):
            if var in env:
                try:
                    values[name] = float(env[var])
                except ValueError as exc:
                    raise ConfigError(f"{var} must be a number, got {env[var]!r}") from exc
        if "VCF_AGENT_INGEST_VALIDATION" in env:
            values["ingest_validation"] = env["VCF_AGENT_INGEST_VALIDATION"].strip().lower()
        if "VCF_AGENT_LOG_LEVEL" in env:
            values["log_level"] = env["VCF_AGENT_LOG_LEVEL"]
        topology = _topology_from_env(env)
        if topology is not None:
            values["topology"] = topology
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "data_dir" in values and "bus_url" not in values:
            values["bus_url"] = default_bus_url(Path(values["data_dir"]))
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> Settings:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def _topology_from_env(env: Mapping[str, str]) -> Topology | None:
    """VCF_AGENT_STREAM_<ROLE>=name and VCF_AGENT_PARTITIONS_<ROLE>=n, e.g. ROLE=VARIANTS."""
    changes: dict[str, Any] = {}
    for f in fields(Topology):
        if f.name.endswith("_partitions"):
            var = f"VCF_AGENT_PARTITIONS_{f.name.removesuffix('_partitions').upper()}"
            if var in env:
                try:
                    changes[f.name] = int(env[var])
                except ValueError as exc:
                    raise ConfigError(f"{var} must be an integer, got {env[var]!r}") from exc
                if changes[f.name] < 1:
                    raise ConfigError(f"{var} must be at least 1")
        else:
            var = f"VCF_AGENT_STREAM_{f.name.upper()}"
            if env.get(var):
                changes[f.name] = env[var]
    return Topology(**changes) if changes else None


def default_bus_url(data_dir: Path) -> str:
    """The embedded log under the data directory: the no-server default."""
    return f"embedded://{(data_dir / 'bus').resolve()}"


def _bus_from_design_env(env: Mapping[str, str]) -> str:
    """The design's variables: Iggy primary with Kafka fallback when both are set."""
    kafka = env.get("KAFKA_BOOTSTRAP_SERVERS", "")
    iggy_host = env.get("IGGY_HOST", "")
    kafka_url = f"kafka://{kafka}" if kafka else ""
    iggy_url = ""
    if iggy_host:
        port = env.get("IGGY_PORT", "8090")
        user = env.get("IGGY_USERNAME", "iggy")
        password = env.get("IGGY_PASSWORD", "iggy")
        stream = env.get("IGGY_STREAM_NAME", "vcf-agent")
        iggy_url = f"iggy://{quote(user)}:{quote(password)}@{iggy_host}:{port}?stream={quote(stream)}"
    if iggy_url and kafka_url:
        return f"failover://?primary={quote(iggy_url, safe='')}&fallback={quote(kafka_url, safe='')}"
    return iggy_url or kafka_url
