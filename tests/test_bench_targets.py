"""`vcf-agent bench e2e --runs N`: the issue's targets read from each run, and the runs that met them."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest

from vcf_agent.app import benchmarks
from vcf_agent.app._scale_bench import Workload, targets_met, targets_summary
from vcf_agent.app.cli import build_parser


def test_latency_is_met_only_under_half_a_second_cold_and_warm() -> None:
    assert targets_met("latency", {"cold_job_latency_s": 0.499, "warm_job_latency_s": 0.5}) == {
        "cold_job_latency_s < 0.5": True,
        "warm_job_latency_s < 0.5": False,
    }


def test_a_genome_run_is_judged_on_throughput_every_service_memory_and_both_queries() -> None:
    figures = {
        "variants_per_s": 25_000,
        # 2 GB read as 2e9 bytes: 1,907 MiB is under it, 1,908 is not.
        "peak_rss_mb_per_service": {"writer": 1908, "router": 139},
        "region_1mb_query_ms": 49.9,
        "sample_gene_query_ms": 100.0,
    }
    assert targets_met("genome", figures) == {
        "variants_per_s >= 25000": True,
        "every service < 2 GB": False,
        "region_1mb_query_ms < 50": True,
        "sample_gene_query_ms < 100": False,
    }
    figures["peak_rss_mb_per_service"] = {"writer": 1907}
    assert targets_met("genome", figures)["every service < 2 GB"]


def test_a_cohort_is_judged_on_genotypes_per_second_from_its_samples() -> None:
    # 100,000 variants of 2,504 samples in 250 s: 1,001,600 genotypes/s.
    assert targets_met("cohort", {"variants": 100_000, "samples": 2504, "seconds": 250.0}) == {
        "genotypes_per_s >= 1000000": True
    }
    assert not targets_met("cohort", {"variants": 100_000, "samples": 2504, "seconds": 251.0})[
        "genotypes_per_s >= 1000000"
    ]


def test_a_figure_the_run_did_not_report_is_no_verdict() -> None:
    # One process reports no per-service memory; a run without --baseline no ratio.
    assert "every service < 2 GB" not in targets_met("genome", {"variants_per_s": 30_000, "peak_rss_mb": 900})
    assert targets_met("cohort-500", {"variants_per_s": 1500}) == {}
    assert targets_met("no-such-preset", {"variants_per_s": 1}) == {}


def test_the_summary_counts_the_runs_that_met_each_target_among_those_that_reported_it() -> None:
    runs = [{"a": True, "b": False}, {"a": False, "b": False}, {"a": True}]
    assert targets_summary(runs) == {"a": "2 of 3", "b": "0 of 2"}


def test_runs_are_each_on_fresh_services_and_counted_against_the_targets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The latency preset's shape at 200 variants, so two whole runs (a cold and a warm job each,
    # through the five services in one process) fit a test.
    monkeypatch.setitem(benchmarks.PRESETS, "latency", Workload(200, 1, warm_jobs=1))
    roots: list[Path] = []
    earlier_left: list[bool] = []
    one_run = benchmarks._e2e_run

    async def recorded(args: argparse.Namespace, root: Path) -> dict[str, object]:
        # Each run starts in its own directory, the one before it already removed.
        earlier_left.append(any(earlier.exists() for earlier in roots))
        roots.append(root)
        return await one_run(args, root)

    monkeypatch.setattr(benchmarks, "_e2e_run", recorded)
    args = argparse.Namespace(
        target="e2e",
        preset="latency",
        variants=0,
        samples=1,
        runs=2,
        bus=None,
        baseline=False,
        processes=False,
        mid_job_queries=False,
        bench_store="local",
    )
    result = asyncio.run(benchmarks.run(args))
    assert len(set(roots)) == 2 and earlier_left == [False, False]
    runs = result["runs"]
    assert isinstance(runs, list) and len(runs) == 2
    for run in runs:
        assert run["variants"] == run["stored"] == 200 and run["status"] == "complete"
        assert len(run["warm_job_latencies_s"]) == 1
        assert set(run["targets_met"]) == {"cold_job_latency_s < 0.5", "warm_job_latency_s < 0.5"}
    met = result["targets_met_in_runs"]
    assert isinstance(met, dict) and set(met) == {"cold_job_latency_s < 0.5", "warm_job_latency_s < 0.5"}
    for name, counted in met.items():
        assert counted == f"{sum(run['targets_met'][name] for run in runs)} of 2"


def test_fewer_than_one_run_is_a_one_line_error() -> None:
    args = argparse.Namespace(target="e2e", preset=None, runs=0, mid_job_queries=False, processes=False)
    with pytest.raises(SystemExit, match="--runs: at least 1"):
        asyncio.run(benchmarks.run(args))


def test_the_printed_form_gives_each_runs_figures_under_its_number() -> None:
    printed = benchmarks.render(
        {"preset": "single", "runs": [{"variants_per_s": 31_000}, {"variants_per_s": 29_000}]}
    ).splitlines()
    assert [line.strip() for line in printed] == [
        "preset: single",
        "run 1:",
        "variants_per_s: 31000",
        "run 2:",
        "variants_per_s: 29000",
    ]


def test_an_option_the_target_does_not_read_is_a_one_line_error_naming_who_reads_it() -> None:
    # `bench query --runs 3` once measured a single run and said nothing of the other two.
    import subprocess
    import sys

    refused = subprocess.run(
        [sys.executable, "-m", "vcf_agent", "bench", "query", "--runs", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1
    assert refused.stderr == "vcf-agent bench query: --runs is read by e2e only\n"
    for argv, message in (
        (["bus", "--preset", "single"], "vcf-agent bench bus: --preset is read by e2e only"),
        (
            ["load", "--variants", "10"],
            "vcf-agent bench load: --variants is read by bus, e2e, providers, query only",
        ),
        (["e2e", "--batch-size", "10"], "vcf-agent bench e2e: --batch-size is read by bus only"),
        (["e2e", "--store-dir", "/tmp/x"], "vcf-agent bench e2e: --store-dir is read by query only"),
        (["query", "--processes"], "vcf-agent bench query: --processes is read by e2e only"),
        (["providers", "--store", "s3"], "vcf-agent bench providers: --store is read by e2e only"),
        (["bus", "x.vcf"], "vcf-agent bench bus: FILE is read by ingest only"),
    ):
        with pytest.raises(SystemExit, match=f"^{message}$"):
            asyncio.run(benchmarks.run(build_parser().parse_args(["bench", *argv])))


def test_options_left_off_take_their_defaults_and_given_ones_are_kept() -> None:
    parsed = build_parser().parse_args(["bench", "e2e", "--preset", "single"])
    assert parsed.runs is None and parsed.variants is None
    options = benchmarks._options_for_target(parsed)
    assert (options.variants, options.samples, options.runs, options.bench_store) == (100_000, 1, 1, "local")
    assert options.batch_size == 1000 and options.preset == "single" and options.bus is None
    given = benchmarks._options_for_target(
        build_parser().parse_args(["bench", "bus", "--variants", "0", "--batch-size", "7"])
    )
    # 0 is given, not left off.
    assert (given.variants, given.batch_size) == (0, 7)
