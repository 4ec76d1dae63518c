"""LanceDB's carriers table: one row per call holding the variant's ALT, keyed, per tenant.

What a carrier is follows VCFv4.1 section 1.4.2 (GT: allele indices, `|` phased, `/`
unphased, `.` missing): a call carries ALT n when n is among its allele indices. Every
call, hom-ref and no-call included, stays in the variants table's `genotypes`; the
carriers table answers queries by sample.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from lancedb.index import BTree

from vcf_agent.services.writer import _lance_store as lance_store
from vcf_agent.services.writer._carrier_rows import carrier_rows
from vcf_agent.services.writer._lance_store import CompactionPolicy, LanceStore, VariantQuery
from vcf_agent.services.writer._rows import build_rows

from ._writes import FILE_B, Call, make_batch, make_write
from .test_row_builder import hand_made_writes

# Record 7 has ALT G,T; this is the T allele (alt_index 1, allele index 2).
MULTI_ALLELIC_CALLS: list[Call] = [
    ("het-other-alt", (0, 2), False),
    ("phased-both-alts", (1, 2), True),
    ("no-call", (-1, -1), False),
    ("haploid", (2,), False),
    ("hom-ref", (0, 0), False),
    ("first-alt-only", (1, 1), True),
    ("half-missing", (2, -1), False),
]


def _rows(store: LanceStore, job_id: str = "job-1") -> list[tuple[str, str, bool]]:
    calls = store.carrier_calls(job_id).sort_by([("correlation_id", "ascending"), ("sample", "ascending")])
    return list(
        zip(
            calls.column("sample").to_pylist(),
            calls.column("genotype").to_pylist(),
            calls.column("phased").to_pylist(),
            strict=True,
        )
    )


def test_only_calls_holding_the_alt_allele_become_carrier_rows_vcf41_1_4_2(lance: LanceStore) -> None:
    write = make_write(7, alt_index=1, alternates=("G", "T"), calls=MULTI_ALLELIC_CALLS, gene="BRCA2")
    lance.write([write])

    calls = lance.carrier_calls("job-1").sort_by([("sample", "ascending")])
    assert calls.column("sample").to_pylist() == [
        "half-missing",
        "haploid",
        "het-other-alt",
        "phased-both-alts",
    ]
    assert calls.column("genotype").to_pylist() == ["2/.", "2", "0/2", "1|2"]
    assert calls.column("phased").to_pylist() == [False, False, False, True]
    assert set(calls.column("correlation_id").to_pylist()) == {write.correlation_id}
    first = calls.slice(0, 1).to_pylist()[0]
    # The variant's query columns travel with each carrier row.
    assert (first["tenant_id"], first["chromosome"], first["position"], first["gene"]) == (
        "tenant-1",
        "chr2",
        1070,
        "BRCA2",
    )
    assert (first["depth"], first["genotype_quality"], first["allele_depths"]) == (32, 60, [10, 10])
    # Every call still reads back from the variant, hom-ref and no-call included.
    stored = lance.get(write.correlation_id)
    assert stored is not None and len(stored.genotypes) == len(MULTI_ALLELIC_CALLS)
    for sample, _, _ in MULTI_ALLELIC_CALLS:
        carries = sample in calls.column("sample").to_pylist()
        assert lance.query(VariantQuery(sample=sample))[1] == int(carries), sample


def test_replays_leave_the_carriers_table_as_it_was(lance: LanceStore) -> None:
    batch = make_batch(range(20))
    rows = build_rows(batch)
    lance.write(rows, maybe_stored=pa.chunked_array([], pa.string()))
    before = _rows(lance)
    assert len(before) == 30  # one carrier on even records, two on odd ones
    # A replay after the graph committed (every key maybe stored), and one not knowing at all.
    lance.write(rows, maybe_stored=rows.variants.column("correlation_id"))
    lance.write(batch)
    lance.compact()
    assert _rows(lance) == before
    assert lance.query(VariantQuery(sample="NA00002"))[1] == 10


def test_a_tenant_queries_only_its_own_carriers(lance: LanceStore) -> None:
    lance.write(make_batch(range(10)))
    lance.write(make_batch(range(10), file_id=FILE_B, job_id="job-2", tenant_id="tenant-2"))

    own, total = lance.query(VariantQuery(sample="NA00002", tenant_id="tenant-2", limit=100))
    assert total == 5 and {row.tenant_id for row in own} == {"tenant-2"}
    assert lance.query(VariantQuery(sample="NA00002", limit=100))[1] == 10
    assert set(lance.carrier_calls("job-2").column("tenant_id").to_pylist()) == {"tenant-2"}
    # Another tenant's job id does not reach into this tenant's rows.
    assert lance.query(VariantQuery(sample="NA00002", tenant_id="tenant-1", job_id="job-2"))[1] == 0


def test_a_store_written_before_the_carriers_table_gets_it_filled_on_open(tmp_path: Path) -> None:
    path = tmp_path / "lance"
    store = LanceStore(path, compaction=CompactionPolicy(max_fragments=1000))
    store.open()
    store.write(make_batch(range(12)))
    expected = _rows(store)
    store.close()
    lancedb.connect(str(path)).drop_table("carriers")

    for _ in range(2):  # filled, then opened as it is
        store.open()
        try:
            assert _rows(store) == expected and len(expected) == 18
            assert store.query(VariantQuery(sample="NA00001"))[1] == 6
        finally:
            store.close()

    # A fill cut short (no mark that it finished, some rows in) is started over.
    carriers = lancedb.connect(str(path)).open_table("carriers")
    unmarked = {"path": "correlation_id", "metadata": {"vcf_agent.carriers_filled": None}}
    carriers.update_field_metadata(unmarked)
    carriers.delete("sample = 'NA00002'")
    store.open()
    try:
        assert _rows(store) == expected
    finally:
        store.close()


@pytest.mark.parametrize("sample", ["", "NA00002"])
def test_pages_follow_file_order_however_the_rows_were_stored(tmp_path: Path, sample: str) -> None:
    # No threshold: every query first tries the rows in storage order, which serves a page
    # within the first write, and must notice where storage order is not file order (the
    # second file's late records before the first file's, its early ones last).
    store = LanceStore(tmp_path / "lance", read_every_match_up_to=0)
    store.open()
    try:
        store.write(make_batch(range(10)))
        store.write(make_batch(range(10, 20), file_id=FILE_B))
        store.write(make_batch(range(10, 20)))
        store.write(make_batch(range(10), file_id=FILE_B))
        matching = [
            (file_id, index)
            for file_id in sorted(("a" * 64, FILE_B))
            for index in range(20)
            if not sample or index % 2 == 0
        ]
        for offset, limit in ((0, 3), (0, 12), (5, 7), (len(matching) - 2, 5)):
            rows, total = store.query(VariantQuery(sample=sample, offset=offset, limit=limit))
            assert total == len(matching)
            assert [(row.file_id, row.record_index) for row in rows] == matching[offset : offset + limit]
        store.compact()
        rows, _ = store.query(VariantQuery(sample=sample, limit=4))
        assert [(row.file_id, row.record_index) for row in rows] == matching[:4]
    finally:
        store.close()


@pytest.mark.parametrize(("sample", "gene"), [("", ""), ("NA00001", ""), ("NA00001", "GENE1")])
def test_pages_are_found_by_counting_when_writes_came_out_of_file_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample: str, gene: str
) -> None:
    # As the pipeline delivers a job: batches of two files in shuffled order, so the first
    # matches as stored are not the page and the page is bounded on the indexes instead
    # (_record_bound), here with a window of 10 matches so that the search takes steps.
    monkeypatch.setattr(lance_store, "_BOUND_SLACK", 10)
    found_on_indexes: list[bool] = []
    first_matches, record_bound = lance_store._first_matches, lance_store._record_bound
    searched: list[int] = []

    def recording_first_matches(*args: Any, **kwargs: Any) -> pa.Table | None:
        keys = first_matches(*args, **kwargs)
        found_on_indexes.append(keys is not None)
        return keys

    def recording_record_bound(*args: Any, **kwargs: Any) -> int:
        searched.append(record_bound(*args, **kwargs))
        return searched[-1]

    monkeypatch.setattr(lance_store, "_first_matches", recording_first_matches)
    monkeypatch.setattr(lance_store, "_record_bound", recording_record_bound)
    store = LanceStore(tmp_path / "lance", read_every_match_up_to=0)
    store.open()
    try:
        batches = [(file_id, start) for file_id in (FILE_B, "a" * 64) for start in range(0, 1500, 100)]
        random.Random(15).shuffle(batches)
        for file_id, start in batches:
            store.write(make_batch(range(start, start + 100), file_id=file_id))
        # NA00001's call is (0, record % 2): it carries odd records; GENE<record % 5>.
        matching = [
            (file_id, index)
            for file_id in sorted(("a" * 64, FILE_B))
            for index in range(1500)
            if (not sample or index % 2 == 1) and (not gene or index % 5 == 1)
        ]
        pages = ((0, 3), (0, 100), (137, 50), (len(matching) // 2 - 5, 10), (len(matching) - 2, 5))
        for _ in ("as written", "compacted"):
            for offset, limit in pages:
                rows, total = store.query(VariantQuery(sample=sample, gene=gene, offset=offset, limit=limit))
                assert total == len(matching)
                assert [(row.file_id, row.record_index) for row in rows] == matching[offset : offset + limit]
            store.compact()
    finally:
        store.close()
    # Every page was found on the indexes, none by reading every match, and bounds were searched.
    assert found_on_indexes and all(found_on_indexes)
    assert searched


def test_a_page_among_rows_not_yet_indexed_is_read_whole_rather_than_counted_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A genome's rows stay unindexed until the writer's idle compaction, and every count scans
    # them: a query matching few of many unindexed rows reads its matches instead of paging on
    # counts; once they are indexed it pages on counts again. The pages are the same.
    paged_on_counts: list[bool] = []
    first_matches = lance_store._first_matches

    def recording_first_matches(*args: Any, **kwargs: Any) -> pa.Table | None:
        paged_on_counts.append(True)
        return first_matches(*args, **kwargs)

    monkeypatch.setattr(lance_store, "_first_matches", recording_first_matches)
    store = LanceStore(tmp_path / "lance", read_every_match_up_to=0)
    store.open()
    try:
        for start in range(0, 2000, 250):
            store.write(make_batch(range(start, start + 250)))
        carriers = store._carriers
        assert lance_store._unindexed_rows(carriers) == carriers.count_rows() > 0
        # NA00001 carries the odd records, GENE<record % 5>: 200 of the 2,000.
        matching = [index for index in range(2000) if index % 2 == 1 and index % 5 == 1]
        pages = {}
        for state in ("as written", "compacted"):
            rows, total = store.query(VariantQuery(sample="NA00001", gene="GENE1", offset=150, limit=20))
            assert total == len(matching)
            pages[state] = [row.record_index for row in rows]
            if state == "as written":
                assert not paged_on_counts
                store.compact()
                assert lance_store._unindexed_rows(store._carriers) == 0
        assert paged_on_counts == [True]
        assert pages["as written"] == pages["compacted"] == matching[150:170]
    finally:
        store.close()


def test_a_page_is_read_by_its_row_ids_unless_a_compaction_renumbered_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LanceStore(tmp_path / "lance", compaction=CompactionPolicy(max_fragments=1000))
    store.open()
    taken: list[bool] = []
    read_by_row_ids = lance_store._taken

    def recording_taken(*args: Any) -> pa.Table | None:
        rows = read_by_row_ids(*args)
        taken.append(rows is not None)
        return rows

    monkeypatch.setattr(lance_store, "_taken", recording_taken)
    try:
        for start in range(0, 40, 10):  # four fragments, which a compaction merges into one
            store.write(make_batch(range(start, start + 10)))
        variants, _ = store._tables()
        keys = variants.search().select(["correlation_id"]).with_row_id(True).limit(None).to_arrow()
        wanted = keys.slice(12, 6)
        ids, row_ids = wanted.column("correlation_id").to_pylist(), wanted.column("_rowid").to_pylist()
        assert [v.correlation_id for v in store._fetch(ids, "", row_ids)] == ids
        assert taken == [True]
        # The same row ids of another tenant are not read as theirs.
        assert store._fetch(ids, "tenant-2", row_ids) == []
        assert taken == [True, False]
        store.compact()
        assert [v.correlation_id for v in store._fetch(ids, "tenant-1", row_ids)] == ids
        assert taken == [True, False, False]
        # A page of a query is read by row ids, and is the page.
        rows, total = store.query(VariantQuery(offset=5, limit=4))
        assert total == 40 and [row.record_index for row in rows] == [5, 6, 7, 8]
        assert taken[-1] is True
    finally:
        store.close()


class _CountingTable:
    """A LanceDB table whose count_rows calls are counted."""

    def __init__(self, table: object) -> None:
        self.table, self.counts = table, 0

    def count_rows(self, where: str | None = None) -> int:
        self.counts += 1
        return int(self.table.count_rows(where))  # type: ignore[attr-defined]


@pytest.mark.parametrize("spread", ["even", "skewed"])
def test_the_record_bound_lands_in_its_window_in_few_counts(tmp_path: Path, spread: str) -> None:
    records = 200_000
    index = np.arange(records)
    # Evenly, or a few matches early and the rest packed into the file's last 2%.
    matched = index % 20 == 3 if spread == "even" else (index % 5_000 == 0) | (index >= records * 0.98)
    table = lancedb.connect(str(tmp_path)).create_table(
        "rows", pa.table({"record_index": pa.array(index), "matched": pa.array(matched)})
    )
    table.create_index("record_index", config=BTree())
    counting = _CountingTable(table)
    cumulative = np.cumsum(matched)
    for need in (1, 100, 1_000, int(cumulative[-1]) - 1_500):
        counting.counts = 0
        bound = lance_store._record_bound(counting, "matched", need, records - 1)
        assert need <= cumulative[bound] <= need + lance_store._BOUND_SLACK
        # Interpolation, halving whenever a step did not: at most twice a bisection's 18 steps.
        assert counting.counts <= 2 * 18 + 1
        if spread == "even":
            assert counting.counts <= 3


def _region_of_a_genome(tmp_path: Path) -> tuple[_CountingTable, np.ndarray]:
    """200,000 records of which 150,000 to 159,999 match; the matches up to each record."""
    index = np.arange(200_000)
    matched = (index >= 150_000) & (index < 160_000)
    table = lancedb.connect(str(tmp_path)).create_table(
        "rows", pa.table({"record_index": pa.array(index), "matched": pa.array(matched)})
    )
    table.create_index("record_index", config=BTree())
    return _CountingTable(table), np.cumsum(matched)


def test_a_record_holding_a_match_brackets_the_record_bound_search(tmp_path: Path) -> None:
    # A 1 Mb region of a genome: its matches start deep in the file. From the first rows read
    # (a record holding a match), the search counts once before it and lands in a few steps;
    # from the file's start it spends steps where no match lies.
    counting, cumulative = _region_of_a_genome(tmp_path)
    for need in (1, 100, 5_000):
        counting.counts = 0
        bound = lance_store._record_bound(counting, "matched", need, 159_999, from_record=150_037)
        assert need <= cumulative[bound] <= need + lance_store._BOUND_SLACK
        bracketed = counting.counts
        assert bracketed <= 3
        counting.counts = 0
        unbracketed = lance_store._record_bound(counting, "matched", need, 159_999)
        assert need <= cumulative[unbracketed] <= need + lance_store._BOUND_SLACK
        assert counting.counts > bracketed
    # A record after `need` matches bounds the search from above instead.
    counting.counts = 0
    bound = lance_store._record_bound(counting, "matched", 100, 159_999, from_record=155_000)
    assert 100 <= cumulative[bound] <= 100 + lance_store._BOUND_SLACK


def test_the_density_of_the_rows_read_aims_the_record_bound_search(tmp_path: Path) -> None:
    # A 1 Mb region of a genome written out of file order: the first rows read lie after the
    # page, 5,000 matches into the region. Aimed by their density, the search lands after one
    # count before them and one step; as if the matches ran from the file's start, it spent
    # steps on records before the region (7 counts on a 100,000-variant store).
    counting, cumulative = _region_of_a_genome(tmp_path)
    for need in (1, 100, 2_000):
        counting.counts = 0
        bound = lance_store._record_bound(
            counting, "matched", need, 159_999, from_record=155_000, density=1.0
        )
        assert need <= cumulative[bound] <= need + lance_store._BOUND_SLACK
        assert counting.counts == 2
        counting.counts = 0
        lance_store._record_bound(counting, "matched", need, 159_999, from_record=155_000)
        assert counting.counts > 2
    # A density far from the truth (matches read sparsely) costs steps, never the window.
    for density in (0.001, 50.0):
        for from_record in (150_500, 155_000):
            bound = lance_store._record_bound(
                counting, "matched", 100, 159_999, from_record=from_record, density=density
            )
            assert 100 <= cumulative[bound] <= 100 + lance_store._BOUND_SLACK


def test_carrier_rows_are_the_row_builders_carriers_including_its_edge_cases() -> None:
    # Multi-digit allele indexes, haploid and triploid calls, missing alleles, extreme and
    # negative ALT indexes: the hand-made writes the row builders are checked against.
    rows = build_rows(hand_made_writes())
    listed = {
        (row["correlation_id"], sample)
        for row in rows.variants.select(["correlation_id", "carriers"]).to_pylist()
        for sample in row["carriers"]
    }
    found = carrier_rows(rows.variants)
    assert set(zip(found["correlation_id"].to_pylist(), found["sample"].to_pylist(), strict=True)) == listed
    assert listed


def test_carriers_are_replaced_only_for_variants_stored_before(
    lance: LanceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`maybe_stored` (a file's written ranges) names variants out-of-order batches never stored;
    their carrier rows are appended, and only a variant the variants table held before the write
    has its carrier rows deleted (by correlation id) and added again."""
    deletes: list[str] = []
    carriers = lance._carriers
    delete = carriers.delete

    def recording_delete(where: str) -> Any:
        deletes.append(where)
        return delete(where)

    def replaced(batch: list[Any]) -> list[str]:
        return [w.correlation_id for w in batch if any(w.correlation_id in where for where in deletes)]

    monkeypatch.setattr(carriers, "delete", recording_delete)
    first = make_batch(range(4))
    lance.write(first, maybe_stored=pa.chunked_array([], pa.string()))
    before = _rows(lance)
    assert len(before) == 6  # records 0..3 have 1, 2, 1, 2 het samples
    # Named as maybe stored, never stored: appended, nothing deleted.
    later = make_batch(range(4, 8))
    lance.write(later, maybe_stored=pa.chunked_array([[w.correlation_id for w in later]]))
    assert deletes == [] and len(_rows(lance)) == 12
    # A replay of stored variants replaces their carrier rows: nothing doubled.
    lance.write(first, maybe_stored=pa.chunked_array([[w.correlation_id for w in first]]))
    assert replaced(first) == [w.correlation_id for w in first] and replaced(later) == []
    assert len(_rows(lance)) == 12
    # A crash after a variant's row, before its carriers: the replay finds the variant stored
    # and adds the carriers it lacks.
    crashed = make_batch(range(8, 10))
    lance_store._store(lance._variants, "correlation_id", build_rows(crashed).variants, None)
    lance.write(crashed, maybe_stored=pa.chunked_array([[w.correlation_id for w in crashed]]))
    assert replaced(crashed) == [w.correlation_id for w in crashed] and len(_rows(lance)) == 15
    # With no written ranges to go by (None: any may be stored), the lookup decides alike.
    fresh = make_batch(range(10, 12))
    lance.write(fresh, maybe_stored=None)
    assert replaced(fresh) == []
    lance.write(first, maybe_stored=None)
    assert len(_rows(lance)) == 18
    lance.compact()
    calls = lance.carrier_calls("job-1")
    first_ids = pa.array([w.correlation_id for w in first])
    of_first = calls.filter(pc.is_in(calls.column("correlation_id"), first_ids))
    assert sorted(of_first.column("sample").to_pylist()) == sorted(sample for sample, _, _ in before)


def test_a_replay_that_reclassifies_a_variant_updates_its_carrier_rows(lance: LanceStore) -> None:
    # The variant's columns copied beside its carriers follow the variant: a query by sample and
    # classification must not find the classification it had before.
    lance.write([make_write(record, classification="benign") for record in range(4)])
    lance.write([make_write(record, classification="pathogenic") for record in range(4)])
    calls = lance.carrier_calls("job-1")
    assert calls.num_rows == 6
    assert set(calls.column("classification").to_pylist()) == {"pathogenic"}
    assert lance.query(VariantQuery(sample="NA00002", classification="benign"))[1] == 0
    assert lance.query(VariantQuery(sample="NA00002", classification="pathogenic"))[1] == 2


def test_a_carriers_table_keyed_by_call_before_opens_without_the_key_keeping_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Until 2026-12-06 each carrier row had a `call_id` (correlation id + ':' + sample), indexed,
    # and the mark of a finished fill sat on that field.
    path = tmp_path / "lance"
    store = LanceStore(path)
    store.open()
    batch = make_batch(range(12))
    store.write(batch)
    expected = _rows(store)
    store.close()
    carriers = lancedb.connect(str(path)).open_table("carriers")
    carriers.add_columns({"call_id": "concat(correlation_id, ':', sample)"})
    carriers.create_index("call_id", config=BTree())
    unmarked = {"path": "correlation_id", "metadata": {"vcf_agent.carriers_filled": None}}
    carriers.update_field_metadata(unmarked)
    carriers.update_field_metadata({"path": "call_id", "metadata": {"vcf_agent.carriers_filled": "1"}})
    assert "call_id" in carriers.schema.names

    built: list[int] = []
    build = lance_store.carrier_rows

    def counted(*args: Any) -> pa.Table:
        built.append(1)
        return build(*args)

    monkeypatch.setattr(lance_store, "carrier_rows", counted)
    store.open()  # migrated
    try:
        assert built == []  # not filled again from the variants: the mark moved with it
        assert _rows(store) == expected and len(expected) == 18
        store.write(batch)  # a replay: rows replaced, not doubled
        assert _rows(store) == expected
        store.write(make_batch(range(12, 14)))
        assert len(_rows(store)) == 21
    finally:
        store.close()
    store.open()  # opened as it is
    try:
        assert len(_rows(store)) == 21
        assert store.query(VariantQuery(sample="NA00002"))[1] == 7
    finally:
        store.close()
    carriers = lancedb.connect(str(path)).open_table("carriers")
    assert "call_id" not in carriers.schema.names
    assert not [index for index in carriers.list_indices() if "call_id" in index.columns]
    # The key's encoding is kept beside the mark.
    metadata = carriers.schema.field("correlation_id").metadata
    assert metadata[b"vcf_agent.carriers_filled"] == b"1"
    assert metadata[b"lance-encoding:compression"] == b"lz4"
