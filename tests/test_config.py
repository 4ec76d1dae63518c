"""One settings tree, read once at the command line: defaults, a TOML file, the environment, flags.

Each bad value is one line naming the setting and what is allowed, with exit code 2, never a
traceback; `vcf-agent config show` never prints a secret; README's settings table is generated.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from vcf_agent.app._settings_tree import (
    SettingsError,
    SettingsTree,
    load_settings,
    settings_table,
    shown_settings,
)
from vcf_agent.app.cli import main
from vcf_agent.config import ConfigError, Settings, Topology

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_use_the_embedded_log_under_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings({}, flags={"data_dir": str(tmp_path)}).service
    assert settings.bus_url == f"embedded://{(tmp_path / 'bus').resolve()}"
    assert dict(settings.topology.specs())["vcf-variants"] == 10
    assert dict(settings.topology.specs())["user-notifications"] == 1


def test_the_trees_defaults_are_the_dataclasses_defaults() -> None:
    """The tree takes its defaults from `vcf_agent.config`, so the two cannot drift apart."""
    loaded = load_settings({})
    built, plain = loaded.service, Settings()
    for spec in fields(Settings):
        if spec.name not in ("bus_url", "router"):
            assert getattr(built, spec.name) == getattr(plain, spec.name), spec.name
    assert built.topology == Topology()
    assert built.router.providers.keys() == plain.router.providers.keys()


def test_design_variables_give_iggy_primary_with_kafka_fallback() -> None:
    settings = load_settings(
        {"KAFKA_BOOTSTRAP_SERVERS": "k1:9092", "IGGY_HOST": "iggy", "IGGY_STREAM_NAME": "lab"}
    ).service
    url = urlsplit(settings.bus_url)
    assert url.scheme == "failover"
    query = parse_qs(url.query)
    assert query["primary"] == ["iggy://iggy:iggy@iggy:8090?stream=lab"]
    assert query["fallback"] == ["kafka://k1:9092"]
    assert load_settings({"KAFKA_BOOTSTRAP_SERVERS": "k1:9092"}).service.bus_url == "kafka://k1:9092"


def test_stream_names_and_partitions_are_configurable() -> None:
    settings = load_settings(
        {"VCF_AGENT_STREAM_VARIANTS": "lab-variants", "VCF_AGENT_PARTITIONS_VARIANTS": "12"}
    ).service
    assert dict(settings.topology.specs())["lab-variants"] == 12


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        'batch_size = 500\nanalysis_deadline_s = 12.5\nlog_level = "info"\nproviders = ["local", "llm"]\n'
        'provider_pools = "llm=openai,claude"\n'
        '[provider.openai]\nbase_url = "http://127.0.0.1:9/v1"\nmax_concurrency = 3\n'
    )
    loaded = load_settings(
        {
            "VCF_AGENT_CONFIG": str(config),
            "VCF_AGENT_BATCH_SIZE": "700",
            "VCF_AGENT_PROVIDER_OPENAI_MAX_CONCURRENCY": "4",
        },
        flags={"providers": "local,openai", "grpc_port": 7},
    )
    settings = loaded.service
    # The file sets what nothing later sets; the environment beats the file; flags beat both.
    assert settings.analysis_deadline_s == 12.5 and settings.log_level == "INFO"
    assert settings.batch_size == 700
    assert settings.providers == ("local", "openai") and settings.grpc_port == 7
    openai = settings.router.providers["openai"]
    assert (openai.base_url, openai.max_concurrency) == ("http://127.0.0.1:9/v1", 4)
    assert settings.router.members("llm") == ("openai", "claude")
    # --config wins over VCF_AGENT_CONFIG.
    other = tmp_path / "other.toml"
    other.write_text("batch_size = 9\n")
    assert load_settings({"VCF_AGENT_CONFIG": str(config)}, config_file=other).service.batch_size == 9


def test_acmg_thresholds_and_population_pattern_come_from_the_environment() -> None:
    settings = load_settings(
        {
            "VCF_AGENT_ACMG_BS1_AF": "0.005",
            "VCF_AGENT_ACMG_PM2_AF": "0.0001",
            "VCF_AGENT_POPULATION_AF_PATTERN": "labdb",
        }
    ).service
    assert (settings.acmg_bs1_af, settings.acmg_pm2_af, settings.population_af_pattern) == (
        0.005,
        0.0001,
        "labdb",
    )
    # BS1 above BA1's 5% (ACMG/AMP 2015 Table 4), PM2 above BS1 or a broken pattern is refused.
    with pytest.raises(
        ConfigError, match=r"VCF_AGENT_ACMG_BS1_AF: input should be less than or equal to 0\.05"
    ):
        load_settings({"VCF_AGENT_ACMG_BS1_AF": "0.2"})
    with pytest.raises(ConfigError, match="acmg_pm2_af <= acmg_bs1_af"):
        load_settings({"VCF_AGENT_ACMG_BS1_AF": "0.001", "VCF_AGENT_ACMG_PM2_AF": "0.002"})
    with pytest.raises(ConfigError, match="VCF_AGENT_POPULATION_AF_PATTERN: must be a regular expression"):
        load_settings({"VCF_AGENT_POPULATION_AF_PATTERN": "("})


@pytest.mark.parametrize(
    ("env", "argv", "line"),
    [
        (
            {"VCF_AGENT_ANALYSIS_DEADLINE_S": "abc"},
            [],
            "vcf-agent: VCF_AGENT_ANALYSIS_DEADLINE_S: input should be a valid number, unable to parse"
            " string as a number, got 'abc'",
        ),
        (
            {"VCF_AGENT_ANALYSIS_DEADLINE_S": "0"},
            [],
            "vcf-agent: VCF_AGENT_ANALYSIS_DEADLINE_S: input should be greater than 0, got '0'",
        ),
        (
            {"VCF_AGENT_LOG_LEVEL": "verbose"},
            [],
            "vcf-agent: VCF_AGENT_LOG_LEVEL: input should be 'DEBUG', 'INFO', 'WARNING', 'ERROR' or"
            " 'CRITICAL', got 'verbose'",
        ),
        (
            {},
            ["--bus", "bogus://x"],
            "vcf-agent: --bus: must be a URL whose scheme is one of embedded, failover, iggy, kafka,"
            " memory, got 'bogus://x'",
        ),
        (
            {"VCF_AGENT_PARTITIONS_VARIANTS": "0"},
            [],
            "vcf-agent: VCF_AGENT_PARTITIONS_VARIANTS: input should be greater than or equal to 1, got '0'",
        ),
        (
            {"VCF_AGENT_GRPC_PORT": "x"},
            [],
            "vcf-agent: VCF_AGENT_GRPC_PORT: input should be a valid integer, unable to parse string as an"
            " integer, got 'x'",
        ),
        (
            {"VCF_AGENT_PROVIDER_OPENAI_MAX_CONCURRENCY": "many"},
            [],
            "vcf-agent: VCF_AGENT_PROVIDER_OPENAI_MAX_CONCURRENCY: input should be a valid integer, unable"
            " to parse string as an integer, got 'many'",
        ),
        (
            {"VCF_AGENT_PROVIDER_OPENAI_MAX_CONCURENCY": "4"},
            [],
            "vcf-agent: VCF_AGENT_PROVIDER_OPENAI_MAX_CONCURENCY: not a provider setting; a provider's"
            " fields are api_key_env, api_key_file, backoff_base_s, backoff_max_s, base_url,"
            " breaker_failures, breaker_reset_s, burst, input_cost_per_mtok, kind, max_attempts,"
            " max_concurrency,"
            " max_tokens, model, output_cost_per_mtok, rate_per_s, timeout_s, weight",
        ),
        (
            {"VCF_AGENT_ADMIN_TOKENS": "ops:t1,no-colon-secret"},
            [],
            "vcf-agent: VCF_AGENT_ADMIN_TOKENS: entries must be NAME:TOKEN, comma-separated; entry 2 is not",
        ),
        (
            {},
            ["--store", "gs://bucket/results"],
            "vcf-agent: --store: must be a local directory or s3://bucket/prefix, not a gs:// URL, got"
            " 'gs://bucket/results'",
        ),
        (
            {"VCF_AGENT_STORE": "s3://Lab_Bucket/results"},
            [],
            "vcf-agent: VCF_AGENT_STORE: s3:// URL needs a bucket name of 3-63 lowercase letters, digits,"
            " '.' or '-', got 's3://Lab_Bucket/results'",
        ),
        (
            # The credentials in the URL are refused, and not echoed.
            {"VCF_AGENT_STORE": "s3://AKIA:hunter2@bucket/results"},
            [],
            "vcf-agent: VCF_AGENT_STORE: s3:// URL must be s3://bucket/prefix with no credentials or port in"
            " it (credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or store_options, the"
            " endpoint from AWS_ENDPOINT_URL), got 's3://***@bucket/results'",
        ),
        (
            {"VCF_AGENT_STORE_OPTIONS": "aws_region=eu-west-1,hunter2"},
            [],
            "vcf-agent: VCF_AGENT_STORE_OPTIONS: entries must be KEY=VALUE, comma-separated; entry 2 is not",
        ),
        (
            {"AWS_ENDPOINT_URL": "minio:9000"},
            [],
            "vcf-agent: AWS_ENDPOINT_URL: must be an http:// or https:// URL, got 'minio:9000'",
        ),
        (
            # A reserve under the checkpoint size lets a checkpoint fill the disk.
            {
                "VCF_AGENT_WRITER_GRAPH_CHECKPOINT_BYTES": str(4 << 30),
                "VCF_AGENT_WRITER_DISK_RESERVE_BYTES": str(2 << 30),
            },
            [],
            "vcf-agent: writer_disk_reserve_bytes (2048 MiB) must be 0 (no check) or at least"
            " writer_graph_checkpoint_bytes (4096 MiB): a graph checkpoint writes up to that much of its"
            " log into the database file",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_setting_and_exit_code_2(
    env: dict[str, str],
    argv: list[str],
    line: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["config", "show", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == line + "\n"


def test_a_bad_settings_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("batch_size = \n")
    assert main(["--config", str(broken), "config", "show"]) == 2
    assert (
        capsys.readouterr().err
        == f"vcf-agent: {broken}: not valid TOML: Invalid value (at line 1, column 14)\n"
    )

    unknown = tmp_path / "unknown.toml"
    unknown.write_text("batch_size = 10\nbatch_sise = 10\n")
    assert main(["config", "show", "--config", str(unknown)]) == 2
    assert capsys.readouterr().err == (
        f"vcf-agent: {unknown}: unknown setting 'batch_sise' (the settings are listed in README.md's"
        " settings table and by `vcf-agent config show`)\n"
    )

    typed = tmp_path / "typed.toml"
    typed.write_text('writer_batch_rows = "many"\n[provider.openai]\ntimeout_s = -1\n')
    assert main(["config", "show", "--config", str(typed)]) == 2
    # Every bad value, one line each.
    assert capsys.readouterr().err.splitlines() == [
        f"vcf-agent: {typed}: provider.openai.timeout_s: input should be greater than 0, got -1",
        f"vcf-agent: {typed}: writer_batch_rows: input should be a valid integer, unable to parse string"
        " as an integer, got 'many'",
    ]

    missing = tmp_path / "missing.toml"
    assert main(["config", "show", "--config", str(missing)]) == 2
    assert (
        capsys.readouterr().err
        == f"vcf-agent: --config / VCF_AGENT_CONFIG {missing}: No such file or directory\n"
    )


def test_a_bad_value_never_ends_in_a_traceback(tmp_path: Path) -> None:
    """The installed command, as an operator runs it: exit code 2 and one line on stderr."""
    env = {"PATH": "/usr/bin:/bin", "VCF_AGENT_ANALYSIS_DEADLINE_S": "abc"}
    command = [sys.executable, "-m", "vcf_agent", "serve", "router", "--data-dir", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "vcf-agent: VCF_AGENT_ANALYSIS_DEADLINE_S: input should be a valid number, unable to parse string"
        " as a number, got 'abc'"
    ]
    assert result.stdout == ""


SECRETS = {
    "VCF_AGENT_ADMIN_TOKENS": "ops:admin-SECRET-1",
    "VCF_AGENT_TENANT_TOKENS": "lab-a:tenant-SECRET-2",
    "VCF_AGENT_TOKEN": "client-SECRET-3",
    "IGGY_PASSWORD": "iggy-SECRET-4",
    "OPENAI_API_KEY": "openai-SECRET-5",
    "MY_CLAUDE_KEY": "claude-SECRET-6",
    "VCF_AGENT_PROVIDER_CLAUDE_API_KEY_ENV": "MY_CLAUDE_KEY",
}


@pytest.mark.parametrize("as_json", [False, True])
def test_config_show_prints_the_effective_settings_and_never_a_secret(
    as_json: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "ollama.key"
    key_file.write_text("ollama-SECRET-7\n")
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"admins": {"root": "file-SECRET-8"}}))
    env = {
        **SECRETS,
        "VCF_AGENT_PROVIDER_OLLAMA_API_KEY_FILE": str(key_file),
        "VCF_AGENT_TOKENS_FILE": str(tokens),
        "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
        "IGGY_HOST": "iggy",
        "VCF_AGENT_BATCH_SIZE": "321",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    argv = ["config", "show", "--providers", "local,openai", *(["--json"] if as_json else [])]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for secret in [*SECRETS.values(), "ollama-SECRET-7", "file-SECRET-8"]:
        if secret != "MY_CLAUDE_KEY":
            assert secret not in out
    assert "SECRET" not in out
    shown = json.loads(out) if as_json else tomllib.loads(out)
    assert shown["batch_size"] == 321 and shown["providers"] == ["local", "openai"]
    assert (
        shown["admin_tokens"] == shown["tenant_tokens"] == shown["token"] == shown["iggy_password"] == "***"
    )
    assert shown["tokens_file"] == str(tokens)
    # The bus is the effective one (Iggy primary, Kafka fallback), its password masked.
    primary = parse_qs(urlsplit(shown["bus"]).query)["primary"][0]
    assert primary == "iggy://iggy:***@iggy:8090?stream=vcf-agent"
    # API keys are never shown, only where each comes from.
    assert shown["provider"]["claude"]["api_key_env"] == "MY_CLAUDE_KEY"
    assert shown["provider"]["openai"]["api_key_env"] == "OPENAI_API_KEY"
    assert shown["provider"]["ollama"]["api_key_file"] == str(key_file)


def test_config_show_output_is_a_settings_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What `config show` prints loads back with --config to the same settings (no secrets set)."""
    first = tmp_path / "first.toml"
    first.write_text('batch_size = 42\ningest_validation = "strict"\n[provider.vllm]\nkind = "openai"\n')
    assert main(["config", "show", "--config", str(first)]) == 0
    again = tmp_path / "again.toml"
    again.write_text(capsys.readouterr().out)
    assert load_settings({}, config_file=again).service == load_settings({}, config_file=first).service


def test_the_readme_settings_table_is_generated_from_the_tree() -> None:
    readme = (ROOT / "README.md").read_text()
    begin, end = "<!-- settings-table:begin -->\n", "<!-- settings-table:end -->"
    assert begin in readme and end in readme, "README.md lacks the settings table markers"
    committed = readme.split(begin, 1)[1].split(end, 1)[0]
    assert committed == settings_table(), "stale: run .venv/bin/python scripts/generate_settings_table.py"
    # Every setting has a row naming its variable.
    for name in SettingsTree.model_fields:
        assert f"| `{name}` |" in committed


def test_the_disk_reserve_follows_the_graph_checkpoint_size_unless_set() -> None:
    """A checkpoint writes up to writer_graph_checkpoint_bytes of log into the database file, so
    the free space the writer keeps is that and 64 MiB, whatever the checkpoint size is set to."""
    assert load_settings({}).service.writer_disk_reserve_bytes == (1 << 30) + (64 << 20)
    bigger = load_settings({"VCF_AGENT_WRITER_GRAPH_CHECKPOINT_BYTES": str(4 << 30)})
    assert bigger.service.writer_disk_reserve_bytes == (4 << 30) + (64 << 20)
    # `config show` prints the reserve in effect.
    assert shown_settings(bigger)["writer_disk_reserve_bytes"] == (4 << 30) + (64 << 20)
    set_too = {
        "VCF_AGENT_WRITER_GRAPH_CHECKPOINT_BYTES": str(4 << 30),
        "VCF_AGENT_WRITER_DISK_RESERVE_BYTES": str(5 << 30),
    }
    assert load_settings(set_too).service.writer_disk_reserve_bytes == 5 << 30
    # 0 turns the check off.
    assert load_settings({"VCF_AGENT_WRITER_DISK_RESERVE_BYTES": "0"}).service.writer_disk_reserve_bytes == 0
    with pytest.raises(
        ConfigError, match=r"writer_disk_reserve_bytes \(1088 MiB\) must be 0 \(no check\) or at least"
    ):
        Settings(writer_graph_checkpoint_bytes=2 << 30)


def test_settings_built_by_hand_are_checked_too() -> None:
    with pytest.raises(ConfigError, match="batch_size must be positive"):
        Settings(batch_size=0)
    with pytest.raises(SettingsError):
        load_settings({"VCF_AGENT_BATCH_SIZE": "-1"})


def test_an_s3_store_takes_the_standard_aws_variables_and_store_options_over_them() -> None:
    loaded = load_settings(
        {
            "VCF_AGENT_STORE": "s3://lab-results/vcf-agent",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:7070",
            "AWS_ACCESS_KEY_ID": "lab",
            "AWS_SECRET_ACCESS_KEY": "hunter2",
            "AWS_REGION": "us-east-1",
            "VCF_AGENT_STORE_OPTIONS": "AWS_REGION=eu-west-1, client_max_retries=5",
        }
    )
    store = loaded.service.store
    assert store.url == "s3://lab-results/vcf-agent" and store.is_object_store
    assert dict(store.options) == {
        "aws_endpoint": "http://127.0.0.1:7070",
        # A plain-HTTP endpoint is allowed because it was configured as one.
        "allow_http": "true",
        "aws_access_key_id": "lab",
        "aws_secret_access_key": "hunter2",
        "aws_region": "eu-west-1",
        "client_max_retries": "5",
    }
    assert "hunter2" not in repr(loaded.service)
