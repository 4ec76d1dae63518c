"""The one place environment variables are read.

Everything else receives a frozen, validated `Settings`; CLI flags override
the environment by passing keyword overrides to `Settings.from_env`.

Who may call and how traffic is encrypted (`SecuritySettings`) is parsed here
too, when a service starts (never at import), from a JSON token file or
variables, so one container image serves any deployment:

- VCF_AGENT_TOKENS_FILE: {"admins": {"alice": "TOKEN"}, "tenants": {"lab-a": "TOKEN" or ["T1", "T2"]}}
- VCF_AGENT_ADMIN_TOKENS: "alice:TOKEN,bob:TOKEN"   (name:token; the name is the audit actor)
- VCF_AGENT_TENANT_TOKENS: "lab-a:TOKEN,lab-b:TOKEN" (tenant:token)
- VCF_AGENT_TLS_CERT, VCF_AGENT_TLS_KEY: PEM files; both or neither.

No tokens at all means authentication is off (local development), and then
the services bind only a loopback address unless told `--insecure`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from vcf_agent.schema import TENANT_ID_PATTERN

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
class SecuritySettings:
    # token -> admin name
    admin_tokens: Mapping[str, str] = field(default_factory=dict)
    # token -> tenant id
    tenant_tokens: Mapping[str, str] = field(default_factory=dict)
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both VCF_AGENT_TLS_CERT and VCF_AGENT_TLS_KEY")
        shared = set(self.admin_tokens) & set(self.tenant_tokens)
        if shared:
            raise ConfigError("a token cannot be both an admin token and a tenant token")
        # A token decides its caller's tenant, which becomes part of every stored key.
        for tenant in sorted(set(self.tenant_tokens.values())):
            if not TENANT_ID_PATTERN.fullmatch(tenant):
                raise ConfigError(
                    f"tenant id {tenant[:63]!r}: use 1-63 letters, digits, '.', '_' or '-', starting with"
                    " a letter or digit"
                )

    @property
    def auth_enabled(self) -> bool:
        return bool(self.admin_tokens or self.tenant_tokens)

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SecuritySettings:
        env = os.environ if env is None else env
        admins: dict[str, str] = {}
        tenants: dict[str, str] = {}
        if env.get("VCF_AGENT_TOKENS_FILE"):
            file_admins, file_tenants = _read_token_file(Path(env["VCF_AGENT_TOKENS_FILE"]))
            admins.update(file_admins)
            tenants.update(file_tenants)
        admins.update(_pairs("VCF_AGENT_ADMIN_TOKENS", env.get("VCF_AGENT_ADMIN_TOKENS", "")))
        tenants.update(_pairs("VCF_AGENT_TENANT_TOKENS", env.get("VCF_AGENT_TENANT_TOKENS", "")))
        cert, key = env.get("VCF_AGENT_TLS_CERT"), env.get("VCF_AGENT_TLS_KEY")
        return cls(admins, tenants, Path(cert) if cert else None, Path(key) if key else None)


def _pairs(variable: str, text: str) -> dict[str, str]:
    """token -> name from "name:token,name:token"."""
    tokens: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, token = item.partition(":")
        if not sep or not name or not token:
            raise ConfigError(f"{variable} entries must be NAME:TOKEN, got {item.split(':')[0]!r}...")
        tokens[token] = name
    return tokens


def _read_token_file(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"VCF_AGENT_TOKENS_FILE {path}: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"VCF_AGENT_TOKENS_FILE {path}: expected a JSON object")
    result: list[dict[str, str]] = []
    for section in ("admins", "tenants"):
        entries = document.get(section, {})
        if not isinstance(entries, dict):
            raise ConfigError(f"VCF_AGENT_TOKENS_FILE {path}: {section!r} must map names to tokens")
        tokens: dict[str, str] = {}
        for name, value in entries.items():
            for token in [value] if isinstance(value, str) else value:
                if not isinstance(token, str) or not token:
                    raise ConfigError(f"VCF_AGENT_TOKENS_FILE {path}: bad token for {section}.{name}")
                tokens[token] = name
        result.append(tokens)
    return result[0], result[1]


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
    # The writer stops taking batches (readiness NOT_SERVING, retried) while its data directory
    # has less free space than this: the graph engine aborts the process when its write-ahead
    # log cannot be written at commit, and a checkpoint rewrites up to 256 MiB of that log.
    writer_disk_reserve_bytes: int = 320 * 1024**2
    shutdown_grace_s: float = 5.0
    log_level: str = "WARNING"
    security: SecuritySettings = field(default_factory=SecuritySettings)
    # Binding a non-loopback address with authentication off needs this, said explicitly.
    insecure: bool = False
    # Directories SubmitVcf may read by path, per tenant ("*": every tenant); empty: paths are off.
    ingest_allowed_dirs: Mapping[str, tuple[Path, ...]] = field(default_factory=dict)
    # An upload larger than this is refused while it streams, and nothing of it is kept.
    upload_max_bytes: int = 16 * 1024**3
    # How long a completed job's upload is kept (to resubmit it); 0 deletes it once the job is final.
    upload_retention_s: float = 0.0
    # Lifetime of a single-use WebSocket ticket (the browser login; see NotifierService).
    websocket_ticket_ttl_s: float = 30.0
    # How long a tenant's Watch of a job the notifier has not seen yet waits for its first event.
    notifier_job_wait_s: float = 5.0

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
        if self.writer_disk_reserve_bytes < 0:
            raise ConfigError("writer_disk_reserve_bytes must not be negative")
        if self.upload_max_bytes <= 0:
            raise ConfigError(f"upload_max_bytes must be positive, got {self.upload_max_bytes}")
        for name in ("upload_retention_s", "notifier_job_wait_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative")
        if self.websocket_ticket_ttl_s <= 0:
            raise ConfigError("websocket_ticket_ttl_s must be positive")
        for tenant, directories in self.ingest_allowed_dirs.items():
            for directory in directories:
                if not directory.is_absolute():
                    raise ConfigError(
                        f"VCF_AGENT_INGEST_ALLOWED_DIRS: {tenant}={directory} must be an absolute path"
                    )

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
            "VCF_AGENT_UPLOAD_MAX_BYTES": "upload_max_bytes",
            "VCF_AGENT_WRITER_DISK_RESERVE_BYTES": "writer_disk_reserve_bytes",
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
        seconds = {
            "VCF_AGENT_ANALYSIS_DEADLINE_S": "analysis_deadline_s",
            "VCF_AGENT_UPLOAD_RETENTION_S": "upload_retention_s",
            "VCF_AGENT_WEBSOCKET_TICKET_TTL_S": "websocket_ticket_ttl_s",
            "VCF_AGENT_NOTIFIER_JOB_WAIT_S": "notifier_job_wait_s",
        }
        for var, name in seconds.items():
            if var in env:
                try:
                    values[name] = float(env[var])
                except ValueError as exc:
                    raise ConfigError(f"{var} must be a number of seconds, got {env[var]!r}") from exc
        if env.get("VCF_AGENT_INGEST_ALLOWED_DIRS"):
            values["ingest_allowed_dirs"] = allowed_dirs(env["VCF_AGENT_INGEST_ALLOWED_DIRS"])
        if env.get("VCF_AGENT_INSECURE", "").strip().lower() in ("1", "true", "yes"):
            values["insecure"] = True
        values["security"] = SecuritySettings.from_env(env)
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

    def check_bind(self, security: SecuritySettings | None = None) -> None:
        """Refuse to serve every tenant's data to the network with authentication off.

        `security` is what the server actually uses when a caller passes its own.
        """
        security = security or self.security
        if not security.auth_enabled and not self.insecure and not is_loopback(self.grpc_host):
            raise ConfigError(
                f"no tokens are configured, so binding {self.grpc_host} would let anyone on the network"
                " read and change every tenant's data: configure tokens (VCF_AGENT_TENANT_TOKENS,"
                " VCF_AGENT_ADMIN_TOKENS or VCF_AGENT_TOKENS_FILE), bind 127.0.0.1, or pass --insecure"
                " (VCF_AGENT_INSECURE=1)"
            )


def is_loopback(host: str) -> bool:
    """Whether a bind address reaches only this machine (127.0.0.0/8, ::1, localhost)."""
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_dirs(text: str) -> dict[str, tuple[Path, ...]]:
    """VCF_AGENT_INGEST_ALLOWED_DIRS: `TENANT=DIR;*=DIR;DIR` (a bare DIR is for every tenant).

    A tenant may be named more than once to allow several directories.
    """
    found: dict[str, list[Path]] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        tenant, sep, directory = item.partition("=")
        if not sep:
            tenant, directory = "*", item
        tenant, directory = tenant.strip(), directory.strip()
        if not tenant or not directory:
            raise ConfigError(f"VCF_AGENT_INGEST_ALLOWED_DIRS entries must be TENANT=DIR, got {item!r}")
        path = Path(directory)
        if not path.is_absolute():
            raise ConfigError(f"VCF_AGENT_INGEST_ALLOWED_DIRS: {item!r} must name an absolute path")
        found.setdefault(tenant, []).append(path)
    return {tenant: tuple(paths) for tenant, paths in found.items()}


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """How `vcf-agent submit` and `query` reach a secured deployment: VCF_AGENT_TOKEN, VCF_AGENT_TLS_CA."""

    token: str = ""
    # PEM file of the CA that signed the services' certificate; None with tls means the system roots.
    tls_ca: Path | None = None
    tls: bool = False

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        token: str | None = None,
        tls_ca: str | None = None,
        tls: bool = False,
    ) -> ClientSettings:
        env = os.environ if environ is None else environ
        token = token if token is not None else env.get("VCF_AGENT_TOKEN", "")
        ca = tls_ca if tls_ca is not None else env.get("VCF_AGENT_TLS_CA", "")
        if ca and not Path(ca).is_file():
            raise ConfigError(f"--tls-ca / VCF_AGENT_TLS_CA: no file at {ca}")
        return cls(token.strip(), Path(ca) if ca else None, tls or bool(ca))


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
