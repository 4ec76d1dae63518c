"""The queries `vcf-agent bench e2e` times on its finished store: each a new one, where the data is."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from vcf_agent.app._scale_bench import (
    GENE,
    GENES,
    PRESETS,
    REGION,
    SAMPLE,
    Workload,
    query_regions,
    query_round,
    time_queries,
    time_queries_during,
    write_workload,
)
from vcf_agent.schema import parse_region


def test_the_timed_regions_differ_and_each_holds_records_of_the_workloads_file(tmp_path: Path) -> None:
    workload = Workload(40_000, 1)
    path = write_workload(tmp_path, workload)
    positions: dict[str, list[int]] = {}
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            chrom, pos = line.split("\t", 2)[:2]
            positions.setdefault(chrom, []).append(int(pos))
    regions = query_regions(workload)
    assert len(regions) == len(set(regions)) == 8
    for region in regions:
        chrom, first, last = parse_region(region)
        assert first is not None and last is not None and last - first + 1 == 1_000_000
        inside = sum(first <= pos <= last for pos in positions[chrom])
        # ~100 bases apart: a whole region inside the data holds ~10,000 records.
        assert inside > 5_000, (region, inside)
    # The genome's regions spread over both chromosomes, not clustered at their starts.
    genome = query_regions(PRESETS["genome"])
    starts = sorted(int(region.split(":")[1].split("-")[0]) for region in genome)
    assert {region.split(":")[0] for region in genome} == {"chr1", "chr2"}
    assert starts[0] < 50_000_000 and starts[-1] > 200_000_000


def test_a_file_smaller_than_a_region_is_queried_once_per_chromosome() -> None:
    assert query_regions(Workload(10_000, 1)) == ["chr1:1-1000000", "chr2:1-1000000"]


def test_every_timed_query_but_the_repeated_fixed_ones_is_asked_once() -> None:
    asked: list[tuple[tuple[tuple[str, str], ...], int]] = []

    async def query(filters: dict[str, str], offset: int) -> int:
        asked.append((tuple(sorted(filters.items())), offset))
        return len(asked)

    figures = asyncio.run(time_queries(query, PRESETS["genome"]))
    counts = Counter(asked)
    repeated = {key: times for key, times in counts.items() if times > 1}
    # Only the fixed region and sample + gene, first page, five times each after the new ones
    # (whose first sample + gene page is the fixed one's: asked once before).
    assert repeated == {
        ((("region", REGION),), 0): 5,
        ((("gene", GENE), ("sample", SAMPLE)), 0): 6,
    }
    assert asked[-10:] == [((("region", REGION),), 0)] * 5 + [((("gene", GENE), ("sample", SAMPLE)), 0)] * 5
    assert {offset for _, offset in counts} == {0, 100}
    assert figures["region_1mb_queries"] == 16 and figures["sample_gene_queries"] == 2 * len(GENES)
    # What each first page reported as its total, in the order asked.
    assert (
        figures["sample_gene_matched"]
        == [at + 1 for at, (key, offset) in enumerate(asked) if offset == 0 and ("sample", SAMPLE) in key][
            : len(GENES)
        ]
    )


def test_queries_during_a_job_are_asked_every_interval_until_it_ends_each_a_new_second_page() -> None:
    asked: list[tuple[tuple[tuple[str, str], ...], int]] = []

    async def job_and_queries() -> dict[str, object]:
        job: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def query(filters: dict[str, str], offset: int) -> int:
            asked.append((tuple(sorted(filters.items())), offset))
            if len(asked) == 6:
                # The job ends while the third round is asked: no fourth round follows.
                job.set_result(None)
            return len(asked)

        return await time_queries_during(query, PRESETS["genome"], job, interval_s=0.01)

    figures = asyncio.run(job_and_queries())
    rounds = figures["mid_job_queries"]
    assert isinstance(rounds, list) and len(rounds) == 3
    regions = query_regions(PRESETS["genome"], count=64)
    assert asked == [
        asked_round
        for at in range(3)
        for asked_round in (
            ((("region", regions[at]),), 100),
            ((("gene", GENES[at % len(GENES)]), ("sample", SAMPLE)), 100),
        )
    ]
    # Each round's totals are what its queries answered, in order; the medians are of the rounds.
    assert [(r["region_matched"], r["sample_gene_matched"]) for r in rounds] == [(1, 2), (3, 4), (5, 6)]
    region_ms = sorted(float(r["region_ms"]) for r in rounds)
    assert figures["mid_job_region_query_ms"] == region_ms[1]
    assert figures["mid_job_region_query_max_ms"] == region_ms[-1]
    assert len(set(regions)) == 64


def test_a_query_round_asks_the_second_page_of_its_region_and_sample_gene() -> None:
    asked: list[tuple[dict[str, str], int]] = []

    async def query(filters: dict[str, str], offset: int) -> int:
        asked.append((filters, offset))
        return 7

    figures = asyncio.run(query_round(query, Workload(10_000, 1), 5))
    # A file smaller than a region has one region per chromosome: the 5th of 64 cycles to chr2.
    assert asked == [({"region": "chr2:1-1000000"}, 100), ({"sample": SAMPLE, "gene": GENES[1]}, 100)]
    assert figures["region_matched"] == figures["sample_gene_matched"] == 7
