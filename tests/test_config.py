"""Settings come from the environment in one place and are validated."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from vcf_agent.config import ConfigError, Settings


def test_defaults_use_the_embedded_log_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings.from_env({}, data_dir=tmp_path)
    assert settings.bus_url == f"embedded://{(tmp_path / 'bus').resolve()}"
    assert dict(settings.topology.specs())["vcf-variants"] == 10
    assert dict(settings.topology.specs())["user-notifications"] == 1


def test_design_variables_give_iggy_primary_with_kafka_fallback() -> None:
    settings = Settings.from_env(
        {"KAFKA_BOOTSTRAP_SERVERS": "k1:9092", "IGGY_HOST": "iggy", "IGGY_STREAM_NAME": "lab"}
    )
    url = urlsplit(settings.bus_url)
    assert url.scheme == "failover"
    query = parse_qs(url.query)
    assert query["primary"] == ["iggy://iggy:iggy@iggy:8090?stream=lab"]
    assert query["fallback"] == ["kafka://k1:9092"]
    assert Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k1:9092"}).bus_url == "kafka://k1:9092"


def test_stream_names_and_partitions_are_configurable() -> None:
    settings = Settings.from_env(
        {"VCF_AGENT_STREAM_VARIANTS": "lab-variants", "VCF_AGENT_PARTITIONS_VARIANTS": "12"}
    )
    assert dict(settings.topology.specs())["lab-variants"] == 12


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"VCF_AGENT_PARTITIONS_VARIANTS": "zero"}, "VCF_AGENT_PARTITIONS_VARIANTS"),
        ({"VCF_AGENT_PARTITIONS_VARIANTS": "0"}, "VCF_AGENT_PARTITIONS_VARIANTS"),
        ({"VCF_AGENT_BATCH_SIZE": "-1"}, "batch_size"),
        ({"VCF_AGENT_GRPC_PORT": "x"}, "VCF_AGENT_GRPC_PORT"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env)


def test_acmg_thresholds_and_population_pattern_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "VCF_AGENT_ACMG_BS1_AF": "0.005",
            "VCF_AGENT_ACMG_PM2_AF": "0.0001",
            "VCF_AGENT_POPULATION_AF_PATTERN": "labdb",
        }
    )
    assert (settings.acmg_bs1_af, settings.acmg_pm2_af, settings.population_af_pattern) == (
        0.005,
        0.0001,
        "labdb",
    )
    # BS1 above BA1's 5% (ACMG/AMP 2015 Table 4) or a broken pattern is refused.
    with pytest.raises(ConfigError, match="ACMG thresholds"):
        Settings.from_env({"VCF_AGENT_ACMG_BS1_AF": "0.2"})
    with pytest.raises(ConfigError, match="population_af_pattern"):
        Settings.from_env({"VCF_AGENT_POPULATION_AF_PATTERN": "("})
