"""`vcf-agent bench query`'s store: the genome rows it writes through the writer's own LanceStore
are the rows the pipeline would store, carriers table included."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import lancedb
import pytest

from vcf_agent.app._query_bench import build_store, time_store_queries
from vcf_agent.app._scale_bench import (
    CHROMOSOMES,
    GENES,
    SAMPLE,
    _unindexed_rows,
    store_megabytes,
    wait_indexed,
)
from vcf_agent.services.writer import CompactionPolicy, LanceStore, VariantQuery

from ._writes import make_batch


def test_the_query_bench_store_holds_every_row_and_a_carrier_row_per_alt_holding_call(tmp_path: Path) -> None:
    store = build_store(tmp_path / "store", 3_000)
    try:
        assert store.count() == 3_000
        variants, total = store.query(VariantQuery(limit=3_000))
        assert total == 3_000
        # VCFv4.1 section 1.4.2: a call carries the ALT when its GT holds allele 1 (alt_index 0).
        holding = [v for v in variants if "1" in v.genotypes[0].genotype]
        assert holding, "the generator gives one sample three ALT-holding calls in four"
        carried, carried_total = store.query(VariantQuery(sample=SAMPLE, limit=3_000))
        assert carried_total == len(holding)
        assert {v.correlation_id for v in carried} == {v.correlation_id for v in holding}
        figures = time_store_queries(store, 3_000)
        # The sample in each of the bench's genes, as many as hold an ALT there.
        assert figures["sample_gene_matched"] == [sum(1 for v in holding if v.gene == gene) for gene in GENES]
        # A 3,000-variant file spans less than a region per chromosome: each chromosome whole once.
        assert figures["region_1mb_matched"] == [
            sum(1 for v in variants if v.chromosome == chromosome) for chromosome in CHROMOSOMES
        ]
    finally:
        store.close()


def test_the_benchmark_times_queries_only_once_every_index_covers_every_row(tmp_path: Path) -> None:
    # Rows written since the last compaction are not in the scalar indexes; the writer's idle
    # compaction folds them in, and `wait_indexed` waits for that, not for files going quiet.
    path = tmp_path / "lance"
    with _compacted_only_when_told(path) as store:
        store.write(make_batch(range(10)))
        assert _unindexed_rows(str(path), {}) > 0
        store.compact()
        assert _unindexed_rows(str(path), {}) == 0
        assert asyncio.run(wait_indexed(str(path), {}, timeout_s=30.0)) < 30.0


@contextmanager
def _compacted_only_when_told(path: Path) -> Iterator[LanceStore]:
    """An open store whose write path never compacts: its rows stay unindexed until compact()."""
    store = LanceStore(path, compaction=CompactionPolicy(max_fragments=1000))
    store.open()
    try:
        yield store
    finally:
        store.close()


def test_the_benchmark_reports_what_each_tables_latest_version_holds(tmp_path: Path) -> None:
    path = tmp_path / "lance"
    with _compacted_only_when_told(path) as store:
        # Enough rows that every table passes the 0.1 MB the figures are rounded to.
        store.write(make_batch(range(3_000)))
        store.write(make_batch(range(3_000, 6_000)))
        # Compaction folds the two writes' fragments into one and indexes them; the files of the
        # version before stay on disk for a minute, for readers still on it.
        store.compact()
    sizes = store_megabytes(str(path), {})
    assert set(sizes) == {"variants", "analyses", "carriers"}
    assert all(size > 0 for size in sizes.values())
    before_cleanup = _megabytes_on_disk(path)
    db = lancedb.connect(str(path))
    for name in sizes:
        # The store is closed: no reader is left on an old version.
        with pytest.warns(UserWarning, match="removes every version except the latest"):
            db.open_table(name).optimize(cleanup_older_than=timedelta(0))
    # The figure is what the store takes once no old version is kept: its data and indexes.
    assert _megabytes_on_disk(path) == pytest.approx(sum(sizes.values()), rel=0.05)
    assert before_cleanup > sum(sizes.values()) + 1.0


def _megabytes_on_disk(path: Path) -> float:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file()) / 1e6


def test_waiting_for_the_indexes_of_a_store_that_is_not_there_fails(tmp_path: Path) -> None:
    # The benchmark once looked for the writer's store one directory too high, found no tables,
    # and so timed its queries without waiting for a single index.
    with pytest.raises(FileNotFoundError, match="no LanceDB tables at"):
        asyncio.run(wait_indexed(str(tmp_path / "elsewhere"), {}, timeout_s=5.0))
