"""The commands a new user types first: `vcf-agent run`, `query` and `validate`, as subprocesses."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pysam

EXAMPLE = Path(__file__).resolve().parents[1] / "src" / "vcf_agent" / "examples" / "gatk-multisample.vcf"


def vcf_agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vcf_agent", *args], capture_output=True, text=True, timeout=300
    )


def test_run_on_the_bundled_example_then_query_it_back(tmp_path: Path) -> None:
    with pysam.VariantFile(str(EXAMPLE)) as vcf:
        alleles = sum(len(r.alts or ()) for r in vcf)
        samples = len(vcf.header.samples)
    first = vcf_agent("run", "--data-dir", str(tmp_path), "--json")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["status"] == "complete"
    assert (summary["variants"], summary["stored"], summary["samples"]) == (alleles, alleles, samples)
    assert sum(summary["classifications"].values()) == alleles
    assert {"job_id", "seconds", "providers", "data_dir"} <= summary.keys()

    # The same file again is the same job and stores nothing twice.
    again = json.loads(
        vcf_agent("run", "--data-dir", str(tmp_path), "--json").stdout.strip().splitlines()[-1]
    )
    assert again["job_id"] == summary["job_id"] and again["stored"] == alleles

    listed = vcf_agent(
        "query", "--data-dir", str(tmp_path), "--job", summary["job_id"], "--limit", "500", "--json"
    )
    assert listed.returncode == 0, listed.stderr
    response = json.loads(listed.stdout)
    assert int(response["total"]) == alleles and len(response["variants"]) == alleles
    region = vcf_agent("query", "--data-dir", str(tmp_path), "--region", "chr22:42522392-42522392", "--json")
    found = json.loads(region.stdout)["variants"]
    assert [(v["chromosome"], int(v["position"])) for v in found] == [("chr22", 42522392)]


def test_validate_exit_codes_and_json(tmp_path: Path) -> None:
    ok = vcf_agent("validate", str(EXAMPLE), "--json")
    assert ok.returncode == 0, ok.stdout
    assert json.loads(ok.stdout)["valid"] is True
    broken = tmp_path / "broken.vcf"
    lines = EXAMPLE.read_text().splitlines(keepends=True)
    header = [line for line in lines if line.startswith("#")]
    records = [line for line in lines if not line.startswith("#")]
    fields = records[0].split("\t")
    fields[1] = "not-a-position"
    broken.write_text("".join([*header, "\t".join(fields), *records[1:]]))
    bad = vcf_agent("validate", str(broken), "--json")
    assert bad.returncode == 1
    errors = json.loads(bad.stdout)["errors"]
    assert errors and errors[0]["line"] == len(header) + 1 and errors[0]["column"] == "POS"


def test_version_is_the_installed_package_s_from_both_entry_points() -> None:
    with (Path(__file__).resolve().parents[1] / "pyproject.toml").open("rb") as f:
        declared = tomllib.load(f)["project"]["version"]
    assert importlib.metadata.version("vcf-analysis-agent") == declared
    script = Path(sys.executable).parent / "vcf-agent"
    console = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    module = vcf_agent("--version")
    for ran in (console, module):
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == f"vcf-agent {declared}\n"


def test_python_dash_m_runs_the_cli() -> None:
    usage = vcf_agent()
    # No subcommand: argparse's usage error, from the same parser as the console script.
    assert usage.returncode == 2
    assert usage.stderr.startswith("usage: vcf-agent ")
    assert "the following arguments are required: command" in usage.stderr
    listed = vcf_agent("--help")
    assert listed.returncode == 0
    for command in ("run", "serve", "submit", "query", "validate", "bench"):
        assert f"    {command} " in listed.stdout


def test_every_command_loads_its_settings_with_its_own_defaults() -> None:
    """A command's own option must not collide with a settings flag: `chaos` once had a `--bus`
    list ("embedded,kafka,iggy") that the settings tree read as the bus URL, so every chaos run
    stopped at "bus: unsupported scheme" before doing anything."""
    from vcf_agent.app.cli import build_parser, load

    parser = build_parser()
    for argv in (["chaos", "faults"], ["chaos", "healthy"], ["bench", "e2e"], ["run"], ["config", "show"]):
        load(parser.parse_args(argv), {})


def test_chaos_strands_records_on_the_primary_unless_told_not_to() -> None:
    """The CLI's primary-killed runs never showed GetJob's "records stranded" detail (the stages
    had read everything before the kill); like the CI test, they now pause the writer first."""
    from vcf_agent.app.cli import build_parser, chaos_plan

    parser = build_parser()
    assert chaos_plan(parser.parse_args(["chaos", "primary-killed"]))[2].stranded_wait_s == 60.0
    given = parser.parse_args(["chaos", "primary-killed", "--stranded-wait-s", "0"])
    assert chaos_plan(given)[2].stranded_wait_s == 0.0


def test_chaos_names_its_scenarios_and_gives_each_family_its_own_defaults() -> None:
    from vcf_agent.app.chaos import SCENARIOS
    from vcf_agent.app.cli import build_parser, chaos_plan
    from vcf_agent.app.fault_chaos import FAULT_SCENARIOS

    parser = build_parser()
    faults, scenarios, options = chaos_plan(parser.parse_args(["chaos", "faults"]))
    assert faults and scenarios == list(FAULT_SCENARIOS)
    assert (options.samples, options.kills, options.buses, options.variants) == (
        3,
        3,
        "embedded,kafka,iggy",
        500_000,
    )
    # The failover family's options stay unset: nothing of theirs reaches a fault run.
    assert options.outage_s is None and options.primary is None
    faults, scenarios, options = chaos_plan(parser.parse_args(["chaos"]))
    assert not faults and scenarios == list(SCENARIOS)
    assert (options.outage_s, options.primary, options.stranded_wait_s, options.failover_options) == (
        20.0,
        "iggy",
        60.0,
        "",
    )
    assert options.kills is None
    faults, scenarios, options = chaos_plan(
        parser.parse_args(["chaos", "poison", "--buses", "kafka", "--kills", "0"])
    )
    assert faults and scenarios == ["poison"] and (options.buses, options.kills) == ("kafka", 0)


def test_chaos_refuses_before_starting_anything_what_it_would_have_ignored_or_failed_on() -> None:
    """An unknown name once started Kafka, Iggy and the five services, then reported "the scenario
    broke: ValueError" in its results table; an option of the other family was silently ignored."""
    for argv, message in (
        (["nosuch"], "vcf-agent chaos: unknown scenario 'nosuch'; failover: healthy, primary-killed,"),
        (["healthy", "poison"], "vcf-agent chaos: run fault scenarios and failover scenarios separately"),
        (
            ["healthy", "--kills", "5"],
            "vcf-agent chaos: --kills is read by the fault scenarios only, not the failover ones",
        ),
        (
            ["faults", "--primary", "kafka"],
            "vcf-agent chaos: --primary is read by the failover scenarios only, not the fault ones",
        ),
        (["poison", "--outage-s", "3"], "vcf-agent chaos: --outage-s is read by the failover scenarios only"),
        (
            ["poison", "--buses", "embedded,rabbit"],
            "vcf-agent chaos: --buses: unknown bus 'rabbit'; one of embedded, kafka, iggy",
        ),
    ):
        refused = vcf_agent("chaos", *argv)
        assert refused.returncode == 2, (argv, refused.stderr)
        assert refused.stderr.startswith(message), (argv, refused.stderr)
        assert len(refused.stderr.splitlines()) == 1 and refused.stdout == ""


def test_validate_piped_into_a_reader_that_stops_early_ends_quietly(tmp_path: Path) -> None:
    # 2,000 records each with an undeclared INFO key: ~1,000 warning lines, far more than a pipe
    # holds, so the command is still writing when the reader (like `head -1`) closes it.
    path = tmp_path / "many-warnings.vcf"
    path.write_text(
        "##fileformat=VCFv4.3\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
        + "".join(f"1\t{i + 1}\t.\tA\tG\t50\tPASS\tKEY{i}=1\n" for i in range(2_000))
    )
    command = subprocess.Popen(
        [sys.executable, "-m", "vcf_agent", "validate", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert command.stdout is not None
    assert command.stdout.readline().decode().startswith(f"{path}: valid (2000 records")
    command.stdout.close()
    _, err = command.communicate(timeout=120)
    assert command.returncode == 141, err
    assert err == b""
