"""What every service and client is given: frozen, validated settings, and no environment.

The settings are read once, at the edge (`vcf_agent.app._settings_tree`: defaults, an optional TOML
file, VCF_AGENT_* variables, command-line flags) and passed down as these dataclasses; nothing
below the command line reads the environment. Constructing one checks it, so a test or an embedder
building `Settings(...)` by hand gets the same one-line `ConfigError` as the command line.

No tokens at all means authentication is off (local development), and then the services bind
only a loopback address unless told `--insecure`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlsplit

from vcf_agent.schema import TENANT_ID_PATTERN

# The five services in pipeline order: each consumes what the one before it produces.
SERVICES = ("ingest", "router", "aggregator", "writer", "notifier")

# The graph's default checkpoint size, and the free space the writer keeps beyond a checkpoint's
# size (Settings.writer_disk_reserve_bytes).
_GRAPH_CHECKPOINT_BYTES = 1024**3
DISK_RESERVE_MARGIN_BYTES = 64 * 1024**2


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


# An S3 bucket name (AWS's rules: 3-63 lowercase letters, digits, dots and hyphens).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def check_store_url(url: str) -> None:
    """A LanceDB store location: empty (the default directory), a local directory, or s3://bucket/prefix.

    Credentials never go in the URL (they would be logged with it): they come from the AWS_*
    variables or the store options.
    """
    if "://" not in url:
        return
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise ConfigError(f"must be a local directory or s3://bucket/prefix, not a {parts.scheme}:// URL")
    if "@" in parts.netloc or ":" in parts.netloc:
        raise ConfigError(
            "s3:// URL must be s3://bucket/prefix with no credentials or port in it (credentials come"
            " from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or store_options, the endpoint from"
            " AWS_ENDPOINT_URL)"
        )
    if not _BUCKET.fullmatch(parts.netloc):
        raise ConfigError("s3:// URL needs a bucket name of 3-63 lowercase letters, digits, '.' or '-'")
    if parts.query or parts.fragment:
        raise ConfigError("s3:// URL must be s3://bucket/prefix, with no ?query or #fragment")


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Where the writer keeps its LanceDB tables (variants, provider answers), and how to reach them.

    `url` empty: `<data_dir>/writer/lance`; a path: that local directory; `s3://bucket/prefix`: S3-
    compatible object storage, reached with `options` (LanceDB storage options: aws_endpoint,
    aws_region, aws_access_key_id, ...). The graph engine is a local file engine: it stays under
    data_dir whatever the store is.
    """

    url: str = ""
    # They hold the secret key, so they stay out of reprs and logs.
    options: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        try:
            check_store_url(self.url)
        except ConfigError as exc:
            raise ConfigError(f"store {self.url!r}: {exc}") from None

    @property
    def is_object_store(self) -> bool:
        return self.url.startswith("s3://")


Kind = Literal["openai", "claude", "ollama"]
Strategy = Literal["round_robin", "weighted", "least_outstanding"]


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


BUILTIN_PROVIDERS: dict[str, ProviderSettings] = {
    "openai": ProviderSettings("openai", "openai", "https://api.openai.com/v1", "gpt-4o-mini"),
    "claude": ProviderSettings("claude", "claude", "https://api.anthropic.com", "claude-3-5-haiku-latest"),
    "ollama": ProviderSettings(
        "ollama", "ollama", "http://127.0.0.1:11434", "llama3.1", rate_per_s=0, max_concurrency=2
    ),
}
DEFAULT_API_KEY_ENV: dict[str, str] = {"openai": "OPENAI_API_KEY", "claude": "ANTHROPIC_API_KEY"}


@dataclass(frozen=True, slots=True)
class RouterSettings:
    """Every LLM provider, the pools requests may name, the balancing strategy, the cache bound."""

    providers: Mapping[str, ProviderSettings] = field(default_factory=lambda: dict(BUILTIN_PROVIDERS))
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
    # The LLM endpoints, pools and balancing those providers may name (the router and ingest's batch path).
    router: RouterSettings = field(default_factory=RouterSettings)
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
    # Bounds on what one input file may hold; over any of them a job fails at once, naming it.
    # They keep ingest's memory bounded (well under 1 GB) whatever a file's size or shape:
    # a VCF line or header is held whole while parsed, one record becomes one message per ALT
    # each carrying every sample's call, and the sample count multiplies everything downstream.
    # 1000 Genomes' 2,504-sample lines are ~1 MB; raise these for larger cohorts.
    ingest_max_line_bytes: int = 16 * 1024**2
    ingest_max_header_bytes: int = 16 * 1024**2
    ingest_max_samples: int = 20_000
    # Encoded size of one record's variant messages (ALT count x every sample's call).
    ingest_max_record_bytes: int = 16 * 1024**2
    # A job whose counts have not moved for this long is reported `stalled` (0: never).
    job_stall_s: float = 300.0
    # On a failover bus, a job idle this long after a backend switch during its run is
    # published again from its file: records stranded on the dead backend (0: never).
    republish_grace_s: float = 60.0
    # Rows the writer buffers before one store transaction.
    writer_batch_rows: int = 10000
    # Fixed per-transaction store costs dominate small batches (measured: ~75 us/variant
    # at 1,000 rows, ~30 at 10,000), so while a store is busy the next batch lingers this
    # long to grow; with the stores idle it leaves at once, and job markers flush at once.
    writer_linger_ms: int = 500
    # The writer compacts LanceDB and checkpoints its graph once its input has been quiet this
    # long, not at the first empty poll (0.2 s): a job's writes pause that long when the writer
    # catches up, and a compaction started then held the job's last batches (measured: in 3 of
    # 4 single-sample 100,000-variant runs, 20-21k variants/s instead of 27k).
    writer_idle_compaction_after_ms: int = 2000
    # Serialized bytes the writer buffers before one store transaction, whichever of this and
    # writer_batch_rows comes first. A batch's Arrow rows take 1.6 to 5.2 times its payload
    # (1 to 500 samples), and up to four batches are held at once (one filling, three in
    # flight): 8 MiB keeps that under ~180 MB for any sample count, while single-sample
    # batches (~390 bytes per variant) still reach writer_batch_rows first.
    writer_batch_bytes: int = 8 * 1024**2
    # The writer stops taking batches (readiness NOT_SERVING, retried) while its data directory
    # has less free space than this: the graph engine aborts the process when its write-ahead
    # log cannot be written at commit, and a checkpoint rewrites up to writer_graph_checkpoint_bytes
    # of that log, so the reserve is that and DISK_RESERVE_MARGIN_BYTES more (the settings tree
    # derives it from the checkpoint size unless set), or 0 for no check.
    writer_disk_reserve_bytes: int = _GRAPH_CHECKPOINT_BYTES + DISK_RESERVE_MARGIN_BYTES
    # Where the LanceDB tables live: the data directory by default, or S3-compatible object storage
    # (the graph and everything else stay under data_dir; see StoreSettings).
    store: StoreSettings = field(default_factory=StoreSettings)
    # The graph engine's page cache (mapped, resident only as pages are used; every primary-key
    # index lives in it). Measured resident at 1.3M single-sample variants: 142 MB; with 32-byte
    # string keys a 1 GiB pool was full near 1.2M variants, which is why keys are integers now.
    writer_graph_buffer_pool_bytes: int = 1024**3
    # Write-ahead log size at which the graph checkpoints. Until then the engine also keeps the
    # logged changes in malloc memory outside its buffer pool, so this bounds that share of the
    # writer's memory; smaller checkpoints cost CPU, more as the graph grows: each rewrites the
    # key-index pages the batches touched, and random 64-bit keys touch most of them (measurements
    # in _graph_store.py).
    writer_graph_checkpoint_bytes: int = _GRAPH_CHECKPOINT_BYTES
    # The gRPC server's grace at shutdown: how long open calls (health watchers) may finish.
    shutdown_grace_s: float = 5.0
    # How long, at SIGTERM, the stages may finish and store what they hold and commit it before
    # leaving their groups; a batch still unfinished then stays uncommitted and comes again.
    # With the stores' close and the server's grace this fits compose's 30 s stop grace.
    shutdown_drain_s: float = 15.0
    # The bound on a whole shutdown, from the first signal: past it the process logs every
    # thread's and task's stack and exits with status 70 (runner.ShutdownDeadline). Under
    # compose's 30 s stop grace, so the log says what was stuck before a SIGKILL would.
    shutdown_timeout_s: float = 25.0
    log_level: str = "WARNING"
    # text, or json (one object per line with trace and job ids; see vcf_agent.observability).
    log_format: Literal["text", "json"] = "text"
    # Port of the Prometheus /metrics endpoint on grpc_host; None: not served (0: any free port).
    metrics_port: int | None = None
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
        for name in (
            "batch_size",
            "max_pending_batches",
            "writer_batch_rows",
            "writer_batch_bytes",
            "writer_graph_buffer_pool_bytes",
            "writer_graph_checkpoint_bytes",
            "ingest_max_line_bytes",
            "ingest_max_header_bytes",
            "ingest_max_samples",
            "ingest_max_record_bytes",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.grpc_port <= 65535:
            raise ConfigError(f"grpc_port must be 0..65535, got {self.grpc_port}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port must be 0..65535, got {self.metrics_port}")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log_format must be text or json, got {self.log_format!r}")
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
        if 0 < self.writer_disk_reserve_bytes < self.writer_graph_checkpoint_bytes:
            reserve, checkpoint = (
                self.writer_disk_reserve_bytes >> 20,
                self.writer_graph_checkpoint_bytes >> 20,
            )
            raise ConfigError(
                f"writer_disk_reserve_bytes ({reserve} MiB) must be 0 (no check) or at least"
                f" writer_graph_checkpoint_bytes ({checkpoint} MiB): a graph checkpoint writes up to that"
                " much of its log into the database file"
            )
        if self.upload_max_bytes <= 0:
            raise ConfigError(f"upload_max_bytes must be positive, got {self.upload_max_bytes}")
        for name in (
            "upload_retention_s",
            "notifier_job_wait_s",
            "job_stall_s",
            "republish_grace_s",
            "shutdown_drain_s",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative")
        if self.websocket_ticket_ttl_s <= 0:
            raise ConfigError("websocket_ticket_ttl_s must be positive")
        if self.shutdown_timeout_s <= 0:
            raise ConfigError(f"shutdown_timeout_s must be positive, got {self.shutdown_timeout_s}")
        for tenant, directories in self.ingest_allowed_dirs.items():
            for directory in directories:
                if not directory.is_absolute():
                    raise ConfigError(
                        f"VCF_AGENT_INGEST_ALLOWED_DIRS: {tenant}={directory} must be an absolute path"
                    )

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


def default_bus_url(data_dir: Path) -> str:
    """The embedded log under the data directory: the no-server default."""
    return f"embedded://{(data_dir / 'bus').resolve()}"
