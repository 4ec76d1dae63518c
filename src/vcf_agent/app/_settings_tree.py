"""The settings tree: every setting of every service and client, read once, at the edge.

Sources, each overriding the one before: the defaults (those of `vcf_agent.config`'s dataclasses),
an optional TOML file (`--config FILE` or VCF_AGENT_CONFIG), environment variables, command-line
flags. A setting's TOML key is its name; its variable is VCF_AGENT_<NAME> (the design's KAFKA_* and
IGGY_* variables keep their names). LLM providers are TOML tables, `[provider.<name>]`, or
VCF_AGENT_PROVIDER_<NAME>_<FIELD> variables; their API keys come only from the variable named by
`api_key_env` or the file named by `api_key_file`, never from the settings file.

`load_settings` turns the tree into the frozen dataclasses the services and clients are given, so
nothing below the command line reads the environment. Every bad value becomes one line naming
where it came from and what is allowed (`SettingsError`).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

from vcf_agent.bus import BUS_SCHEMES
from vcf_agent.config import (
    BUILTIN_PROVIDERS,
    DEFAULT_API_KEY_ENV,
    DISK_RESERVE_MARGIN_BYTES,
    ClientSettings,
    ConfigError,
    Kind,
    ProviderSettings,
    RouterSettings,
    Secret,
    SecuritySettings,
    Settings,
    StoreSettings,
    Strategy,
    Topology,
    allowed_dirs,
    check_store_url,
)

ENV_PREFIX = "VCF_AGENT_"
CONFIG_VARIABLE = "VCF_AGENT_CONFIG"
PROVIDER_PREFIX = "VCF_AGENT_PROVIDER_"
MASK = "***"
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class SettingsError(ConfigError):
    """One or more bad settings; `str()` is one line per bad value."""


def _default(owner: type[Any], name: str) -> Any:
    """A dataclass field's default, so the tree and the dataclasses cannot disagree."""
    for spec in fields(owner):
        if spec.name == name:
            if spec.default is not MISSING:
                return spec.default
            if spec.default_factory is not MISSING:
                return spec.default_factory()
    raise KeyError(name)


def _settings_default(name: str) -> Any:
    return _default(Settings, name)


def _stream(role: str) -> Any:
    return Field(
        default=_default(Topology, role),
        min_length=1,
        description=f"name of the `{_default(Topology, role)}` stream",
        json_schema_extra={"section": "streams"},
    )


def _partitions(role: str) -> Any:
    return Field(
        default=_default(Topology, f"{role}_partitions"),
        ge=1,
        description=f"partitions of the `{_default(Topology, role)}` stream",
        json_schema_extra={"section": "streams"},
    )


def _design(variable: str, default: Any, description: str, section: str = "bus") -> Any:
    """A variable read under its own, standard name (no VCF_AGENT_ prefix): the design's, AWS's."""
    return Field(
        default=default,
        validation_alias=AliasChoices(variable.lower(), variable),
        description=description,
        json_schema_extra={"section": section, "variable": variable},
    )


def _comma_list(value: object) -> object:
    return (
        tuple(part.strip() for part in value.split(",") if part.strip()) if isinstance(value, str) else value
    )


class ProviderTable(BaseModel):
    """One `[provider.<name>]` table, or its VCF_AGENT_PROVIDER_<NAME>_<FIELD> variables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind | None = Field(None, description="openai, claude or ollama (default: the name's own kind)")
    base_url: str | None = Field(None, pattern=r"^https?://", description="http(s) URL of the endpoint")
    model: str | None = None
    api_key_env: str | None = Field(None, description="variable holding the API key")
    api_key_file: Path | None = Field(None, description="file holding the API key")
    timeout_s: PositiveFloat | None = None
    max_concurrency: PositiveInt | None = None
    rate_per_s: NonNegativeFloat | None = None
    burst: PositiveInt | None = None
    weight: NonNegativeFloat | None = None
    max_attempts: PositiveInt | None = None
    backoff_base_s: NonNegativeFloat | None = None
    backoff_max_s: NonNegativeFloat | None = None
    breaker_failures: PositiveInt | None = None
    breaker_reset_s: NonNegativeFloat | None = None
    max_tokens: PositiveInt | None = None
    input_cost_per_mtok: NonNegativeFloat | None = None
    output_cost_per_mtok: NonNegativeFloat | None = None

    @field_validator("kind", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value


class SettingsTree(BaseSettings):
    """Every setting, with its type, default and what is allowed."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        env_ignore_empty=True,
        validate_default=False,
    )

    # Where things are.
    data_dir: Path = Field(
        _settings_default("data_dir"),
        description="where stores and the embedded log live",
        json_schema_extra={"flag": "--data-dir"},
    )
    bus: str = Field(
        "",
        description="bus URL: embedded:///dir, memory://name, kafka://host:port, iggy://user:pass@host:port,"
        " failover://?primary=URL&fallback=URL (default: from KAFKA_*/IGGY_*, else the embedded log"
        " under data_dir)",
        json_schema_extra={"flag": "--bus", "section": "bus"},
    )
    kafka_bootstrap_servers: str = _design("KAFKA_BOOTSTRAP_SERVERS", "", "Kafka bootstrap host:port")
    iggy_host: str = _design("IGGY_HOST", "", "Iggy host (with Kafka too: Iggy primary, Kafka fallback)")
    iggy_port: int = _design("IGGY_PORT", 8090, "Iggy TCP port")
    iggy_username: str = _design("IGGY_USERNAME", "iggy", "Iggy user")
    iggy_password: SecretStr = _design("IGGY_PASSWORD", SecretStr("iggy"), "Iggy password")
    iggy_stream_name: str = _design("IGGY_STREAM_NAME", "vcf-agent", "Iggy stream holding the topics")
    grpc_host: str = Field(
        _settings_default("grpc_host"),
        min_length=1,
        description="address the gRPC and WebSocket servers bind",
        json_schema_extra={"flag": "--grpc-host"},
    )
    grpc_port: int = Field(
        _settings_default("grpc_port"),
        ge=0,
        le=65535,
        description="gRPC port (0: any free port)",
        json_schema_extra={"flag": "--grpc-port"},
    )
    websocket_port: int = Field(
        _settings_default("websocket_port"),
        ge=0,
        le=65535,
        description="notifier's WebSocket port (0: any free port)",
        json_schema_extra={"flag": "--websocket-port"},
    )
    log_level: LogLevel = Field(
        "WARNING", description="logging threshold", json_schema_extra={"flag": "--log-level"}
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="text, or json: one object per line with trace and job ids",
        json_schema_extra={"flag": "--log-format"},
    )
    # A port, or off; unset: off for `vcf-agent run`, 9464 for `vcf-agent serve`.
    metrics_port: str | None = Field(
        None,
        description="port of Prometheus /metrics on grpc_host (0: any free port), or off (unset: off for"
        " run, 9464 for serve)",
        json_schema_extra={"flag": "--metrics-port"},
    )
    shutdown_grace_s: NonNegativeFloat = Field(
        _settings_default("shutdown_grace_s"), description="how long in-flight calls may finish at shutdown"
    )
    shutdown_drain_s: NonNegativeFloat = Field(
        _settings_default("shutdown_drain_s"),
        description="how long stages may store and commit what they hold at shutdown; the rest comes again",
    )
    shutdown_timeout_s: PositiveFloat = Field(
        _settings_default("shutdown_timeout_s"),
        description="bound on a whole shutdown: past it the process logs every stack and exits with 70",
    )

    # Security.
    tokens_file: Path | None = Field(
        None,
        description='JSON file {"admins": {"alice": "TOKEN"}, "tenants": {"lab-a": "TOKEN" or [..]}}',
        json_schema_extra={"section": "security"},
    )
    admin_tokens: SecretStr = Field(
        SecretStr(""),
        description="NAME:TOKEN,... (the name is the audit actor)",
        json_schema_extra={"section": "security"},
    )
    tenant_tokens: SecretStr = Field(
        SecretStr(""), description="TENANT:TOKEN,...", json_schema_extra={"section": "security"}
    )
    tls_cert: Path | None = Field(
        None,
        description="PEM certificate the servers present (with tls_key)",
        json_schema_extra={"section": "security"},
    )
    tls_key: Path | None = Field(
        None, description="PEM private key (with tls_cert)", json_schema_extra={"section": "security"}
    )
    insecure: bool = Field(
        False,
        description="allow binding a non-loopback address with no tokens configured",
        json_schema_extra={"flag": "--insecure", "section": "security"},
    )

    # Ingest.
    batch_size: PositiveInt = Field(
        _settings_default("batch_size"), description="variants per message on the variants stream"
    )
    batch_linger_ms: NonNegativeInt = Field(
        _settings_default("batch_linger_ms"), description="flush a partial batch after this long"
    )
    max_pending_batches: PositiveInt = Field(
        _settings_default("max_pending_batches"), description="batches between the VCF reader and publisher"
    )
    ingest_validation: Literal["strict", "lenient"] = Field(
        _settings_default("ingest_validation"),
        description="lenient: bad records are dead-lettered, bad values kept as text or left out; strict: any"
        " error fails the job",
    )
    ingest_allowed_dirs: str = Field(
        "",
        description="directories SubmitVcf may read by path: TENANT=DIR;*=DIR;DIR (empty: paths are off)",
    )
    upload_max_bytes: PositiveInt = Field(
        _settings_default("upload_max_bytes"), description="largest upload accepted"
    )
    ingest_max_line_bytes: PositiveInt = Field(
        _settings_default("ingest_max_line_bytes"), description="longest VCF line; a job over it fails"
    )
    ingest_max_header_bytes: PositiveInt = Field(
        _settings_default("ingest_max_header_bytes"), description="largest VCF header; a job over it fails"
    )
    ingest_max_samples: PositiveInt = Field(
        _settings_default("ingest_max_samples"), description="most samples in a file; a job over it fails"
    )
    ingest_max_record_bytes: PositiveInt = Field(
        _settings_default("ingest_max_record_bytes"),
        description="largest encoded record (ALTs x every sample's call); a job over it fails",
    )
    job_stall_s: NonNegativeFloat = Field(
        _settings_default("job_stall_s"),
        description="a job whose counts have not moved for this long is reported stalled (0: never)",
    )
    republish_grace_s: NonNegativeFloat = Field(
        _settings_default("republish_grace_s"),
        description="failover bus: a job idle this long after a backend switch is published again from"
        " its file (0: never)",
    )
    writer_disk_reserve_bytes: NonNegativeInt | None = Field(
        None,
        description="the writer pauses (readiness NOT_SERVING) while its data directory has less free"
        " space than this (default: writer_graph_checkpoint_bytes and 64 MiB; 0: no check)",
    )
    upload_retention_s: NonNegativeFloat = Field(
        _settings_default("upload_retention_s"), description="how long a finished job's upload is kept"
    )
    compression_threshold: NonNegativeInt = Field(
        _settings_default("compression_threshold"), description="payloads larger than this are compressed"
    )

    # Analysis.
    providers: Annotated[tuple[str, ...], NoDecode] = Field(
        _settings_default("providers"),
        min_length=1,
        description="comma-separated providers or pools analysing each variant",
        json_schema_extra={"flag": "--providers", "section": "analysis"},
    )
    analysis_deadline_s: PositiveFloat = Field(
        _settings_default("analysis_deadline_s"),
        description="a variant is marked partial once this has passed without every answer",
        json_schema_extra={"section": "analysis"},
    )
    genes_file: Path | None = Field(
        None,
        description="GTF/GFF3/BED file for gene overlap",
        json_schema_extra={"flag": "--genes", "section": "analysis"},
    )
    population_af_pattern: str = Field(
        "",
        description="regex for INFO keys holding population allele frequencies (empty: built-in list)",
        json_schema_extra={"section": "analysis"},
    )
    acmg_bs1_af: float = Field(
        _settings_default("acmg_bs1_af"),
        ge=0,
        le=0.05,
        description="ACMG/AMP BS1 allele-frequency threshold (at most BA1's 0.05)",
        json_schema_extra={"section": "analysis"},
    )
    acmg_pm2_af: float = Field(
        _settings_default("acmg_pm2_af"),
        ge=0,
        le=0.05,
        description="PM2_Supporting applies at or below this frequency (at most acmg_bs1_af)",
        json_schema_extra={"section": "analysis"},
    )
    provider_strategy: Strategy = Field(
        "round_robin", description="how a pool picks a member", json_schema_extra={"section": "analysis"}
    )
    provider_pools: str = Field(
        "",
        description="pools a request may name: llm=openai,claude;local_llm=ollama",
        json_schema_extra={"section": "analysis"},
    )
    provider_cache_max_bytes: NonNegativeInt = Field(
        64 * 2**20, description="bound of the LLM answer cache", json_schema_extra={"section": "analysis"}
    )
    provider: dict[str, ProviderTable] = Field(
        default_factory=dict,
        description="LLM endpoints, [provider.<name>] tables (variables: VCF_AGENT_PROVIDER_<NAME>_<FIELD>)",
        json_schema_extra={"section": "analysis", "variable": "VCF_AGENT_PROVIDER_<NAME>_<FIELD>"},
    )

    # Writer and notifier.
    writer_batch_rows: PositiveInt = Field(
        _settings_default("writer_batch_rows"), description="rows per store transaction"
    )
    writer_batch_bytes: PositiveInt = Field(
        _settings_default("writer_batch_bytes"),
        description="serialized bytes per store transaction (bounds a batch of many samples)",
    )
    writer_linger_ms: NonNegativeInt = Field(
        _settings_default("writer_linger_ms"),
        description="how long a batch waits to grow while the graph is busy",
    )
    writer_idle_compaction_after_ms: NonNegativeInt = Field(
        _settings_default("writer_idle_compaction_after_ms"),
        description="how long the writer's input is quiet before it compacts LanceDB and checkpoints"
        " its graph",
    )
    writer_graph_buffer_pool_bytes: PositiveInt = Field(
        _settings_default("writer_graph_buffer_pool_bytes"),
        description="the graph engine's page cache (resident only as used; holds its key indexes)",
    )
    writer_graph_checkpoint_bytes: PositiveInt = Field(
        _settings_default("writer_graph_checkpoint_bytes"),
        description="graph write-ahead log size that triggers a checkpoint (bounds the engine's"
        " memory outside its page cache)",
    )
    store: str = Field(
        "",
        description="where the writer keeps its LanceDB tables: empty (data_dir/writer/lance), a local"
        " directory, or s3://bucket/prefix (S3-compatible; endpoint and credentials from the AWS_*"
        " variables or store_options); the graph always stays under data_dir",
        json_schema_extra={"flag": "--store", "section": "store"},
    )
    store_options: SecretStr = Field(
        SecretStr(""),
        description="LanceDB storage options for an s3:// store, KEY=VALUE,... (e.g. aws_region=eu-west-1,"
        "client_max_retries=3); they override the AWS_* variables",
        json_schema_extra={"section": "store"},
    )
    aws_endpoint_url: str = _design(
        "AWS_ENDPOINT_URL", "", "endpoint of an s3:// store's server (http:// allows plain HTTP)", "store"
    )
    aws_access_key_id: str = _design("AWS_ACCESS_KEY_ID", "", "access key of an s3:// store", "store")
    aws_secret_access_key: SecretStr = _design(
        "AWS_SECRET_ACCESS_KEY", SecretStr(""), "secret key of an s3:// store", "store"
    )
    aws_session_token: SecretStr = _design(
        "AWS_SESSION_TOKEN", SecretStr(""), "session token of an s3:// store (temporary credentials)", "store"
    )
    aws_region: str = _design("AWS_REGION", "", "region of an s3:// store", "store")
    websocket_ticket_ttl_s: PositiveFloat = Field(
        _settings_default("websocket_ticket_ttl_s"), description="lifetime of a single-use WebSocket ticket"
    )
    notifier_job_wait_s: NonNegativeFloat = Field(
        _settings_default("notifier_job_wait_s"), description="how long Watch waits for a job's first event"
    )

    # Streams.
    stream_variants: str = _stream("variants")
    partitions_variants: int = _partitions("variants")
    stream_analysis_requests: str = _stream("analysis_requests")
    partitions_analysis_requests: int = _partitions("analysis_requests")
    stream_analysis_results: str = _stream("analysis_results")
    partitions_analysis_results: int = _partitions("analysis_results")
    stream_database_writes: str = _stream("database_writes")
    partitions_database_writes: int = _partitions("database_writes")
    stream_cache_events: str = _stream("cache_events")
    partitions_cache_events: int = _partitions("cache_events")
    stream_user_notifications: str = _stream("user_notifications")
    partitions_user_notifications: int = _partitions("user_notifications")
    stream_control_events: str = _stream("control_events")
    partitions_control_events: int = _partitions("control_events")
    stream_dead_letters: str = _stream("dead_letters")
    partitions_dead_letters: int = _partitions("dead_letters")

    # Clients (`submit`, `query`).
    token: SecretStr = Field(
        SecretStr(""),
        description="bearer token the clients send",
        json_schema_extra={"flag": "--token", "section": "client"},
    )
    tls_ca: Path | None = Field(
        None,
        description="PEM file of the CA that signed the services' certificate (implies tls)",
        json_schema_extra={"flag": "--tls-ca", "section": "client"},
    )
    tls: bool = Field(
        False,
        description="clients use TLS, trusting the system's roots unless tls_ca is set",
        json_schema_extra={"flag": "--tls", "section": "client"},
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _port_or_off(cls, value: object) -> object:
        text = str(value).strip().lower()
        if text != "off" and not (text.isdigit() and 0 <= int(text) <= 65535):
            raise ValueError("must be a port number 0..65535 or off")
        return text

    @field_validator("ingest_validation", "provider_strategy", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower().replace("-", "_") if isinstance(value, str) else value

    @field_validator("providers", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return _comma_list(value)

    @field_validator("bus")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in BUS_SCHEMES:
            raise ValueError(f"must be a URL whose scheme is one of {', '.join(BUS_SCHEMES)}")
        return value

    @field_validator("store")
    @classmethod
    def _store_location(cls, value: str) -> str:
        try:
            check_store_url(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("store_options")
    @classmethod
    def _key_values(cls, value: SecretStr) -> SecretStr:
        _store_options(value.get_secret_value())
        return value

    @field_validator("aws_endpoint_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("population_af_pattern")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"must be a regular expression ({exc})") from None
        return value

    @field_validator("ingest_allowed_dirs")
    @classmethod
    def _directories(cls, value: str) -> str:
        try:
            allowed_dirs(value)
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("VCF_AGENT_INGEST_ALLOWED_DIRS").lstrip(": ")) from None
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Built only through `load_settings`, which passes its own sources; constructing the class
        # directly gives the defaults plus keyword arguments, never the process environment.
        return (init_settings,)


class _EnvironmentSource(EnvSettingsSource):
    """VCF_AGENT_* variables from a mapping the edge passes (os.environ there, a dict in tests)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = dict(environ)
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name == "provider":  # VCF_AGENT_PROVIDER_<NAME>_<FIELD>, gathered by `_provider_variables`
            return None, field_name, False
        return super().get_field_value(field, field_name)


class _ValuesSource(PydanticBaseSettingsSource):
    """Values already read (the TOML file, the flags), unknown keys included so they are refused."""

    def __init__(self, settings_cls: type[BaseSettings], values: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self._values = dict(values)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


@dataclass(frozen=True, slots=True)
class LoadedSettings:
    """The tree as read, and what it gives the services and the clients."""

    tree: SettingsTree
    service: Settings
    client: ClientSettings
    # provider -> ("api_key_env", variable) or ("api_key_file", path): where its API key comes
    # from, for `config show` (which never shows the key).
    api_key_sources: Mapping[str, tuple[str, str]]


@dataclass(frozen=True, slots=True)
class _Origins:
    """Where a value came from, to name it in an error the way the user wrote it."""

    environ: Mapping[str, str]
    file: Path | None
    file_values: Mapping[str, Any]
    flags: Mapping[str, Any]

    def name(self, key: str) -> str:
        return self._find(key)[0]

    def value(self, key: str, fallback: object) -> object:
        """The value as written (before any normalising), for the error message."""
        return self._find(key, fallback)[1]

    def _find(self, key: str, fallback: object = None) -> tuple[str, object]:
        spec = SettingsTree.model_fields.get(key)
        extra = (
            spec.json_schema_extra if spec is not None and isinstance(spec.json_schema_extra, dict) else {}
        )
        if key in self.flags and extra.get("flag"):
            return str(extra["flag"]), self.flags[key]
        variable = str(extra.get("variable", ENV_PREFIX + key.upper()))
        if self.environ.get(variable, "") != "":
            return variable, self.environ[variable]
        if key in self.file_values and self.file is not None:
            return f"{self.file}: {key}", self.file_values[key]
        return key, fallback


def load_settings(
    environ: Mapping[str, str],
    *,
    config_file: Path | None = None,
    flags: Mapping[str, Any] | None = None,
) -> LoadedSettings:
    """Defaults, then the TOML file (`config_file`, else $VCF_AGENT_CONFIG), then `environ`, then `flags`.

    `flags` maps setting names to command-line values; None means the flag was not given.
    """
    given = {key: value for key, value in (flags or {}).items() if value is not None}
    path = config_file or (Path(environ[CONFIG_VARIABLE]) if environ.get(CONFIG_VARIABLE) else None)
    file_values = _read_file(path) if path is not None else {}
    origins = _Origins(environ, path, file_values, given)

    class _Sourced(SettingsTree):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (
                _ValuesSource(settings_cls, given),
                _EnvironmentSource(settings_cls, environ),
                _ValuesSource(settings_cls, file_values),
            )

    try:
        tree: SettingsTree = _Sourced()
    except ValidationError as exc:
        raise SettingsError(_describe(exc, origins)) from None
    router, key_sources = _router(tree, environ, origins)
    service = Settings(
        bus_url=tree.bus or _bus_from_design(tree),
        data_dir=tree.data_dir,
        grpc_host=tree.grpc_host,
        grpc_port=tree.grpc_port,
        websocket_port=tree.websocket_port,
        topology=Topology(**{f.name: getattr(tree, _topology_key(f.name)) for f in fields(Topology)}),
        batch_size=tree.batch_size,
        batch_linger_ms=tree.batch_linger_ms,
        max_pending_batches=tree.max_pending_batches,
        providers=tree.providers,
        router=router,
        analysis_deadline_s=tree.analysis_deadline_s,
        genes_file=tree.genes_file,
        population_af_pattern=tree.population_af_pattern,
        acmg_bs1_af=tree.acmg_bs1_af,
        acmg_pm2_af=tree.acmg_pm2_af,
        ingest_validation=tree.ingest_validation,
        compression_threshold=tree.compression_threshold,
        writer_batch_rows=tree.writer_batch_rows,
        writer_batch_bytes=tree.writer_batch_bytes,
        writer_linger_ms=tree.writer_linger_ms,
        shutdown_grace_s=tree.shutdown_grace_s,
        shutdown_drain_s=tree.shutdown_drain_s,
        shutdown_timeout_s=tree.shutdown_timeout_s,
        log_level=tree.log_level,
        log_format=tree.log_format,
        metrics_port=None if tree.metrics_port in (None, "off") else int(tree.metrics_port),
        security=_security(tree),
        insecure=tree.insecure,
        ingest_allowed_dirs=allowed_dirs(tree.ingest_allowed_dirs),
        upload_max_bytes=tree.upload_max_bytes,
        upload_retention_s=tree.upload_retention_s,
        websocket_ticket_ttl_s=tree.websocket_ticket_ttl_s,
        notifier_job_wait_s=tree.notifier_job_wait_s,
        ingest_max_line_bytes=tree.ingest_max_line_bytes,
        ingest_max_header_bytes=tree.ingest_max_header_bytes,
        ingest_max_samples=tree.ingest_max_samples,
        ingest_max_record_bytes=tree.ingest_max_record_bytes,
        job_stall_s=tree.job_stall_s,
        republish_grace_s=tree.republish_grace_s,
        writer_disk_reserve_bytes=(
            tree.writer_graph_checkpoint_bytes + DISK_RESERVE_MARGIN_BYTES
            if tree.writer_disk_reserve_bytes is None
            else tree.writer_disk_reserve_bytes
        ),
        store=StoreSettings(tree.store, _lance_storage_options(tree)),
        writer_graph_buffer_pool_bytes=tree.writer_graph_buffer_pool_bytes,
        writer_graph_checkpoint_bytes=tree.writer_graph_checkpoint_bytes,
    )
    if tree.tls_ca is not None and not tree.tls_ca.is_file():
        raise SettingsError(f"{origins.name('tls_ca')}: no file at {tree.tls_ca}")
    client = ClientSettings(
        token=tree.token.get_secret_value().strip(),
        tls_ca=tree.tls_ca,
        tls=tree.tls or tree.tls_ca is not None,
    )
    return LoadedSettings(tree, service, client, key_sources)


def _topology_key(name: str) -> str:
    """Topology.variants -> stream_variants, Topology.variants_partitions -> partitions_variants."""
    if name.endswith("_partitions"):
        return "partitions_" + name.removesuffix("_partitions")
    return "stream_" + name


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise SettingsError(f"--config / {CONFIG_VARIABLE} {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None


def _describe(error: ValidationError, origins: _Origins) -> str:
    lines: list[str] = []
    for problem in error.errors(include_url=False):
        location = [str(part) for part in problem["loc"]]
        key = _field_for(location[0]) if location else ""
        if problem["type"] == "extra_forbidden":
            where = f"{origins.file}: " if origins.file is not None else ""
            lines.append(
                f"{where}unknown setting {'.'.join(location)!r} (the settings are listed in README.md's"
                " settings table and by `vcf-agent config show`)"
            )
            continue
        message = str(problem["msg"]).removeprefix("Value error, ")
        message = message[0].lower() + message[1:]
        shown = origins.value(key, problem.get("input")) if len(location) == 1 else problem.get("input")
        secret = key in _SECRET_FIELDS
        got = "" if secret or isinstance(shown, dict) else f", got {_short(shown)}"
        where = origins.name(key) + "".join(f".{part}" for part in location[1:])
        lines.append(f"{where}: {message}{got}")
    return "\n".join(lines)


def _field_for(key: str) -> str:
    """The field a validation location names (a design variable's alias included)."""
    for name, spec in SettingsTree.model_fields.items():
        extra = spec.json_schema_extra if isinstance(spec.json_schema_extra, dict) else {}
        if key in (name, extra.get("variable"), str(extra.get("variable", "")).lower()):
            return name
    return key


def _short(value: object) -> str:
    # A URL's user:password@ part is a credential: never echoed.
    text = _USERINFO.sub("//***@", repr(value))
    return text if len(text) <= 80 else text[:77] + "..."


_USERINFO = re.compile(r"//[^/@\s]*@")

_SECRET_FIELDS = frozenset(
    name for name, spec in SettingsTree.model_fields.items() if spec.annotation is SecretStr
)


def _security(tree: SettingsTree) -> SecuritySettings:
    admins: dict[str, str] = {}
    tenants: dict[str, str] = {}
    if tree.tokens_file is not None:
        file_admins, file_tenants = _read_token_file(tree.tokens_file)
        admins.update(file_admins)
        tenants.update(file_tenants)
    admins.update(_pairs("VCF_AGENT_ADMIN_TOKENS", tree.admin_tokens.get_secret_value()))
    tenants.update(_pairs("VCF_AGENT_TENANT_TOKENS", tree.tenant_tokens.get_secret_value()))
    return SecuritySettings(admins, tenants, tree.tls_cert, tree.tls_key)


def _pairs(variable: str, text: str) -> dict[str, str]:
    """token -> name from "name:token,name:token"."""
    tokens: dict[str, str] = {}
    for number, item in enumerate(filter(None, (part.strip() for part in text.split(","))), 1):
        name, sep, token = item.partition(":")
        if not sep or not name or not token:
            # The entry itself is not shown: it may be a token.
            raise SettingsError(
                f"{variable}: entries must be NAME:TOKEN, comma-separated; entry {number} is not"
            )
        tokens[token] = name
    return tokens


def _read_token_file(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SettingsError(f"VCF_AGENT_TOKENS_FILE {path}: {exc}") from None
    if not isinstance(document, dict):
        raise SettingsError(f"VCF_AGENT_TOKENS_FILE {path}: expected a JSON object")
    result: list[dict[str, str]] = []
    for section in ("admins", "tenants"):
        entries = document.get(section, {})
        if not isinstance(entries, dict):
            raise SettingsError(f"VCF_AGENT_TOKENS_FILE {path}: {section!r} must map names to tokens")
        tokens: dict[str, str] = {}
        for name, value in entries.items():
            for token in [value] if isinstance(value, str) else value:
                if not isinstance(token, str) or not token:
                    raise SettingsError(f"VCF_AGENT_TOKENS_FILE {path}: bad token for {section}.{name}")
                tokens[token] = name
        result.append(tokens)
    return result[0], result[1]


def _store_options(text: str) -> dict[str, str]:
    """KEY=VALUE,... (LanceDB storage options); an entry is never shown, it may hold a secret."""
    options: dict[str, str] = {}
    for number, item in enumerate(filter(None, (part.strip() for part in text.split(","))), 1):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"entries must be KEY=VALUE, comma-separated; entry {number} is not")
        options[key.strip().lower()] = value.strip()
    return options


def _lance_storage_options(tree: SettingsTree) -> dict[str, str]:
    """The standard AWS_* variables as LanceDB storage options, then store_options over them.

    Passed explicitly (LanceDB would also read the process environment) so that the settings tree
    stays the one place the environment is read, and `config show` shows what the writer uses.
    """
    options = {
        key: value
        for key, value in (
            ("aws_endpoint", tree.aws_endpoint_url),
            ("aws_access_key_id", tree.aws_access_key_id),
            ("aws_secret_access_key", tree.aws_secret_access_key.get_secret_value()),
            ("aws_session_token", tree.aws_session_token.get_secret_value()),
            ("aws_region", tree.aws_region),
        )
        if value
    }
    if tree.aws_endpoint_url.startswith("http://"):
        options["allow_http"] = "true"
    return options | _store_options(tree.store_options.get_secret_value())


def _bus_from_design(tree: SettingsTree) -> str:
    """The design's variables: Iggy primary with Kafka fallback when both are set."""
    kafka_url = f"kafka://{tree.kafka_bootstrap_servers}" if tree.kafka_bootstrap_servers else ""
    iggy_url = ""
    if tree.iggy_host:
        user, password = quote(tree.iggy_username), quote(tree.iggy_password.get_secret_value())
        iggy_url = f"iggy://{user}:{password}@{tree.iggy_host}:{tree.iggy_port}?stream={quote(tree.iggy_stream_name)}"
    if iggy_url and kafka_url:
        return f"failover://?primary={quote(iggy_url, safe='')}&fallback={quote(kafka_url, safe='')}"
    return iggy_url or kafka_url


# VCF_AGENT_PROVIDER_<suffix> names that are router-wide settings, not a provider's.
_ROUTER_WIDE = ("STRATEGY", "POOLS", "CACHE_MAX_BYTES")
# Longest first, so a field whose name ends another's is matched whole.
_PROVIDER_SUFFIXES = sorted((name.upper() for name in ProviderTable.model_fields), key=len, reverse=True)


def _provider_variables(environ: Mapping[str, str]) -> dict[str, dict[str, tuple[str, str]]]:
    """name -> field -> (variable, value) from VCF_AGENT_PROVIDER_<NAME>_<FIELD> (NAME may hold '_')."""
    found: dict[str, dict[str, tuple[str, str]]] = {}
    for variable, value in environ.items():
        if not variable.startswith(PROVIDER_PREFIX) or variable[len(PROVIDER_PREFIX) :] in _ROUTER_WIDE:
            continue
        rest = variable[len(PROVIDER_PREFIX) :]
        for suffix in _PROVIDER_SUFFIXES:
            if rest.endswith("_" + suffix) and len(rest) > len(suffix) + 1:
                found.setdefault(rest[: -len(suffix) - 1].lower(), {})[suffix.lower()] = (variable, value)
                break
        else:
            allowed = ", ".join(sorted(ProviderTable.model_fields))
            raise SettingsError(f"{variable}: not a provider setting; a provider's fields are {allowed}")
    return found


def _router(
    tree: SettingsTree, environ: Mapping[str, str], origins: _Origins
) -> tuple[RouterSettings, dict[str, tuple[str, str]]]:
    variables = _provider_variables(environ)
    providers = dict(BUILTIN_PROVIDERS)
    key_sources: dict[str, tuple[str, str]] = {}
    for name in sorted(set(BUILTIN_PROVIDERS) | set(tree.provider) | set(variables)):
        from_file = tree.provider.get(name, ProviderTable()).model_dump(exclude_none=True)
        from_env = {field: value for field, (_, value) in variables.get(name, {}).items()}
        try:
            table = ProviderTable.model_validate({**from_file, **from_env})
        except ValidationError as exc:
            problems = []
            for problem in exc.errors(include_url=False):
                field = str(problem["loc"][0])
                where = variables.get(name, {}).get(field, (f"{origins.file}: provider.{name}.{field}", ""))[
                    0
                ]
                message = str(problem["msg"])
                problems.append(f"{where}: {message[0].lower()}{message[1:]}, got {_short(problem['input'])}")
            raise SettingsError("\n".join(problems)) from None
        providers[name], key_sources[name] = _provider(name, table, environ)
    pools: dict[str, tuple[str, ...]] = {}
    for part in filter(None, (p.strip() for p in tree.provider_pools.split(";"))):
        pool, _, members = part.partition("=")
        names = tuple(m.strip().lower() for m in members.split(",") if m.strip())
        if not pool.strip() or not names:
            raise SettingsError(
                f"{origins.name('provider_pools')}: expected name=provider,provider;... got {part!r}"
            )
        pools[pool.strip().lower()] = names
    try:
        router = RouterSettings(
            providers=providers,
            pools=pools,
            strategy=tree.provider_strategy,
            cache_max_bytes=tree.provider_cache_max_bytes,
        )
    except ConfigError as exc:
        raise SettingsError(f"{origins.name('provider_pools')}: {exc}") from None
    return router, key_sources


def _provider(
    name: str, table: ProviderTable, environ: Mapping[str, str]
) -> tuple[ProviderSettings, tuple[str, str]]:
    builtin = BUILTIN_PROVIDERS.get(name)
    kind = table.kind or (builtin.kind if builtin is not None else None)
    if kind is None:
        raise SettingsError(
            f"{PROVIDER_PREFIX}{name.upper()}_KIND (or provider.{name}.kind): must be one of"
            f" {', '.join(get_args(Kind))} for a provider that is not built in"
        )
    base = (
        builtin
        if builtin is not None and builtin.kind == kind
        else replace(BUILTIN_PROVIDERS[kind], name=name)
    )
    values = table.model_dump(exclude_none=True, exclude={"kind", "api_key_env", "api_key_file"})
    if table.api_key_file is not None:
        try:
            text = table.api_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(
                f"{PROVIDER_PREFIX}{name.upper()}_API_KEY_FILE: cannot read {table.api_key_file}:"
                f" {exc.strerror}"
            ) from None
        key, source = (Secret(text) if text else None), ("api_key_file", str(table.api_key_file))
    else:
        variable = table.api_key_env or DEFAULT_API_KEY_ENV.get(kind, "")
        value = environ.get(variable, "").strip() if variable else ""
        key, source = (Secret(value) if value else None), ("api_key_env", variable)
    return replace(base, name=name, kind=kind, api_key=key, **values), source


def mask_url(url: str) -> str:
    """A bus URL with any password replaced, nested failover URLs included."""
    parts = urlsplit(url)
    if parts.scheme == "failover":
        return "failover://?" + urlencode([(key, mask_url(value)) for key, value in parse_qsl(parts.query)])
    if parts.password:
        return url.replace(f":{parts.password}@", f":{MASK}@", 1)
    return url


def shown_settings(loaded: LoadedSettings) -> dict[str, Any]:
    """The effective settings as a settings file would hold them, every secret masked.

    Secrets are the SecretStr fields (tokens, passwords), any password inside the bus URL, and API
    keys (never shown: only where each comes from).
    """
    tree = loaded.tree
    shown: dict[str, Any] = {}
    for name in SettingsTree.model_fields:
        value = getattr(tree, name)
        if name in _SECRET_FIELDS:
            shown[name] = MASK if value.get_secret_value() else ""
        elif name == "bus":
            shown[name] = mask_url(loaded.service.bus_url)
        elif name == "writer_disk_reserve_bytes":
            # Derived from the checkpoint size unless set: the value in effect either way.
            shown[name] = loaded.service.writer_disk_reserve_bytes
        elif name == "provider":
            continue
        elif value is None:
            continue  # TOML has no null: an unset optional setting is left out.
        elif isinstance(value, Path):
            shown[name] = str(value)
        elif isinstance(value, tuple):
            shown[name] = list(value)
        else:
            shown[name] = value
    providers: dict[str, dict[str, Any]] = {}
    for name, provider in sorted(loaded.service.router.providers.items()):
        table = {
            f.name: getattr(provider, f.name)
            for f in fields(ProviderSettings)
            if f.name not in ("name", "api_key")
        }
        kind, where = loaded.api_key_sources.get(name, ("", ""))
        if where:
            table[kind] = where
        providers[name] = table
    shown["provider"] = providers
    return shown


def render_settings(loaded: LoadedSettings, *, as_json: bool = False) -> str:
    """`vcf-agent config show`: TOML (loadable with --config) or JSON."""
    import tomli_w

    shown = shown_settings(loaded)
    if as_json:
        return json.dumps(shown, indent=2, sort_keys=True) + "\n"
    return tomli_w.dumps(shown)


def setting_variable(name: str) -> str:
    """The environment variable of a setting in the tree."""
    extra = SettingsTree.model_fields[name].json_schema_extra
    return (
        str(extra.get("variable", ENV_PREFIX + name.upper()))
        if isinstance(extra, dict)
        else ENV_PREFIX + name.upper()
    )


def environment_variables() -> frozenset[str]:
    """Every variable the tree reads by a fixed name (providers' are VCF_AGENT_PROVIDER_<NAME>_<FIELD>)."""
    fixed = {setting_variable(name) for name in SettingsTree.model_fields if name != "provider"}
    return frozenset({*fixed, CONFIG_VARIABLE, *DEFAULT_API_KEY_ENV.values()})


def is_provider_variable(variable: str) -> bool:
    """Whether a variable is a VCF_AGENT_PROVIDER_<NAME>_<FIELD> the tree reads."""
    rest = variable.removeprefix(PROVIDER_PREFIX)
    return rest != variable and any(
        rest.endswith("_" + suffix) and len(rest) > len(suffix) + 1 for suffix in _PROVIDER_SUFFIXES
    )


def _type_name(spec: FieldInfo) -> str:
    annotation = spec.annotation
    if get_args(annotation) and getattr(annotation, "__origin__", None) is Literal:
        return " \\| ".join(f"`{value}`" for value in get_args(annotation))
    names = {
        int: "integer",
        float: "number",
        str: "text",
        bool: "true/false",
        Path: "path",
        SecretStr: "secret",
    }
    for candidate in (annotation, *(united for united, _ in _united_types(spec))):
        if candidate in names:
            return names[candidate]
    return "list" if "tuple" in str(annotation) else "table"


def _united_types(spec: FieldInfo) -> list[tuple[Any, tuple[Any, ...]]]:
    """The types a field's annotation unites (`X | None`), each with its bounds: an `Annotated`
    one (`NonNegativeInt`) as its type and metadata, any other with none."""
    return [
        (getattr(arg, "__origin__", arg), getattr(arg, "__metadata__", ()))
        for arg in get_args(spec.annotation)
    ]


def _constraint(spec: FieldInfo) -> str:
    bounds = []
    # An optional setting's bounds are its type's (`NonNegativeInt | None`).
    for item in (*spec.metadata, *(bound for _, of_type in _united_types(spec) for bound in of_type)):
        for attr, symbol in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            value = getattr(item, attr, None)
            if value is not None:
                bounds.append(f"{symbol} {value}")
    return f" ({', '.join(bounds)})" if bounds else ""


def _shown_default(name: str, spec: FieldInfo) -> str:
    default = spec.get_default(call_default_factory=True)
    if isinstance(default, SecretStr):  # a default is public (Iggy's own "iggy"), a value set is not
        default = default.get_secret_value()
    if default is None or default == "" or default == {}:
        return ""
    if isinstance(default, tuple):
        return f"`{','.join(default)}`"
    return f"`{str(default).lower() if isinstance(default, bool) else default}`"


def settings_table() -> str:
    """README.md's settings table (scripts/generate_settings_table.py writes it there)."""
    rows = [
        "| Setting (TOML key) | Variable | Flag | Type | Default | What it does |",
        "|---|---|---|---|---|---|",
        f"| (the settings file) | `{CONFIG_VARIABLE}` | `--config` | path | | TOML file read before the"
        " environment |",
    ]
    for name, spec in SettingsTree.model_fields.items():
        extra = spec.json_schema_extra if isinstance(spec.json_schema_extra, dict) else {}
        flag = f"`{extra['flag']}`" if "flag" in extra else ""
        description = (spec.description or "").replace("|", "\\|")
        rows.append(
            f"| `{name}` | `{setting_variable(name)}` | {flag} | {_type_name(spec)}{_constraint(spec)}"
            f" | {_shown_default(name, spec)} | {description} |"
        )
    return "\n".join(rows) + "\n"
