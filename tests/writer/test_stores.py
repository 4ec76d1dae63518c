"""Both writer stores on real LanceDB and LadybugDB files: idempotent upserts, reads, compaction."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import ladybug
import lancedb
import pyarrow as pa
import pytest

from vcf_agent.schema import INT64_MAX, parse_region, tenant_key
from vcf_agent.services.writer import _graph_store, _lance_store
from vcf_agent.services.writer._carrier_rows import CARRIER_SCHEMA
from vcf_agent.services.writer._graph_store import GraphCounts, GraphStore
from vcf_agent.services.writer._lance_store import CompactionPolicy, LanceStore, VariantQuery
from vcf_agent.services.writer._rows import ANALYSIS_SCHEMA, VARIANT_SCHEMA, WriteRows, build_rows

from ._writes import CLASSES, FILE_A, FILE_B, Call, make_batch, make_write


def snapshot(store: LanceStore) -> pa.Table:
    rows, total = store.query(VariantQuery(limit=10_000))
    assert total == len(rows)
    return pa.Table.from_pylist([{"v": row.SerializeToString(deterministic=True)} for row in rows])


def counts(**values: int) -> GraphCounts:
    return GraphCounts(**values)


def test_replay_changes_nothing_in_either_store(lance: LanceStore, graph: GraphStore) -> None:
    batch = make_batch(range(40), providers=("local", "openai"))
    rows = build_rows(batch)
    lance.write(rows)
    graph.write(rows)
    before = snapshot(lance)
    expected = counts(
        files=1,
        samples=3,
        variants=40,
        genes=5,
        analyses=80,
        in_file=40,
        # Sample j's call at record i is 0/((i + j) % 2): a carrier for 60 of the 120 calls,
        # and hom-ref calls are no edges.
        carried_by=60,
        in_gene=40,
        analyzed_by=80,
    )
    assert graph.counts() == expected

    lance.write(batch)
    graph.write(batch)

    assert lance.count() == 40
    assert lance.count_analyses() == 80
    assert snapshot(lance).equals(before)
    assert graph.counts() == expected


def test_writes_in_the_writers_order_store_every_row_once(lance: LanceStore, graph: GraphStore) -> None:
    """Graph first, then LanceDB told which variants the graph had; replays and a crash between them."""
    first = build_rows(make_batch(range(10), providers=("local", "openai")))
    assert graph.write(first).to_pylist() == []
    lance.write(first, maybe_stored=pa.chunked_array([], pa.string()))

    # Half of it again plus five new, the second half reaching the graph only (a crash before LanceDB).
    retry = build_rows(make_batch(range(5, 15), providers=("local", "openai")))
    stored_before = graph.write(retry)
    overlap = first.variants.column("correlation_id")[5:]
    assert sorted(stored_before.to_pylist()) == sorted(overlap.to_pylist())
    replay = build_rows(make_batch(range(5, 15), providers=("local", "openai")))
    stored_before = graph.write(replay)
    assert len(stored_before) == 10
    lance.write(replay, maybe_stored=stored_before)

    assert lance.count() == 15
    assert lance.count_analyses() == 30
    assert graph.counts().variants == 15
    assert graph.counts().analyses == 30


def test_partially_overlapping_batch_adds_only_the_new_rows(lance: LanceStore, graph: GraphStore) -> None:
    first = make_batch(range(10))
    # The retry of a batch whose first half already landed, plus five new variants.
    retry = make_batch(range(5, 15))
    for batch in (first, retry):
        lance.write(batch)
        graph.write(batch)

    assert lance.count() == 15
    assert lance.count_analyses() == 15
    assert graph.counts() == counts(
        files=1,
        samples=3,
        variants=15,
        genes=5,
        analyses=15,
        in_file=15,
        carried_by=22,  # 8 even records with one het sample, 7 odd ones with two
        in_gene=15,
        analyzed_by=15,
    )


def test_replay_applies_changed_verdicts_without_duplicating(lance: LanceStore, graph: GraphStore) -> None:
    lance.write(make_batch(range(3)))
    graph.write(make_batch(range(3)))
    changed = [make_write(1, classification="pathogenic", gene="BRCA2", providers=("local", "anthropic"))]
    lance.write(changed)
    graph.write(changed)

    stored = lance.get(changed[0].correlation_id)
    assert stored is not None
    assert (stored.classification, stored.gene) == ("pathogenic", "BRCA2")
    assert [a.provider for a in stored.analyses] == ["anthropic", "local"]
    assert graph.counts().in_gene == 3
    assert graph.counts().analyzed_by == 4
    assert graph.counts().genes == 4  # GENE0..GENE2 stay as nodes, BRCA2 is new


def test_duplicates_within_one_batch_keep_the_last(lance: LanceStore, graph: GraphStore) -> None:
    batch = [make_write(0, classification="benign"), make_write(0, classification="pathogenic")]
    lance.write(batch)
    graph.write(batch)
    stored = lance.get(batch[0].correlation_id)
    assert stored is not None and stored.classification == "pathogenic"
    assert lance.count() == 1
    assert graph.counts().variants == 1


def test_failed_graph_batch_leaves_nothing_behind(graph: GraphStore) -> None:
    rows = build_rows(make_batch(range(4)))
    # A null primary key fails the variant insert, after files, samples and genes were merged.
    ids = [*rows.variants.column("correlation_id").to_pylist()[:-1], None]
    broken = WriteRows(
        rows.variants.set_column(0, pa.field("correlation_id", pa.string()), pa.array(ids, pa.string())),
        rows.analyses,
        rows.calls,
    )
    with pytest.raises(RuntimeError):
        graph.write(broken)
    assert graph.counts() == counts(
        files=0, samples=0, variants=0, genes=0, analyses=0, in_file=0, carried_by=0, in_gene=0, analyzed_by=0
    )

    graph.write(rows)
    assert graph.counts().carried_by == 6  # records 0..3 have 1, 2, 1, 2 het samples


def test_genotypes_of_a_hand_checked_multiallelic_variant(lance: LanceStore, graph: GraphStore) -> None:
    # Record 7 has ALT G,T; this is the T allele (alt_index 1, allele index 2).
    calls: list[Call] = [("NA00001", (0, 2), False), ("NA00002", (1, 2), True), ("NA00003", (-1, -1), False)]
    write = make_write(7, alt_index=1, alternates=("G", "T"), calls=calls)
    lance.write([write])
    graph.write([write])

    stored = lance.get(write.correlation_id)
    assert stored is not None
    assert (stored.alternate, stored.position) == ("T", 1070)
    assert [(g.sample, g.genotype, g.depth, list(g.allele_depths)) for g in stored.genotypes] == [
        ("NA00001", "0/2", 27, [10, 10]),
        ("NA00002", "1|2", 27, [10, 10]),
        ("NA00003", "./.", 27, [10, 10]),
    ]
    # The graph links only the samples whose genotype holds allele 2; the no-call is no edge.
    assert graph.carriers(write.correlation_id, "tenant-1") == ["NA00001", "NA00002"]
    # Their calls are the carriers table's.
    calls = lance.carrier_calls(write.job_id).sort_by("sample").to_pylist()
    assert [(c["sample"], c["genotype"], c["depth"], c["genotype_quality"]) for c in calls] == [
        ("NA00001", "0/2", 27, 60),
        ("NA00002", "1|2", 27, 60),
    ]
    # Carriers are the samples holding this ALT, so both called samples match, the no-call does not.
    assert lance.query(VariantQuery(sample="NA00002"))[1] == 1
    assert lance.query(VariantQuery(sample="NA00003"))[1] == 0
    detail = json.loads(stored.analyses[0].detail_json)
    assert detail["rationale"] == "derived in the test"
    assert "variant" not in detail  # the echoed variant is not stored twice


def test_the_same_file_of_two_tenants_is_stored_twice_and_read_apart(
    lance: LanceStore, graph: GraphStore
) -> None:
    first = make_batch(range(6))
    second = make_batch(range(6), job_id="job-2", tenant_id="tenant-2")
    for batch in (first, second):
        graph.write(batch)
        lance.write(batch)
    assert lance.count() == 12 and lance.count_analyses() == 12
    both = graph.counts()
    # One file node and one node per sample for each tenant; nothing of the first overwritten.
    assert (both.files, both.samples, both.variants, both.in_file, both.analyses) == (2, 6, 12, 12, 12)
    files = graph._connection().execute("MATCH (f:File) RETURN f.id ORDER BY f.id")
    assert [row[0] for row in files.get_all()] == [
        tenant_key("tenant-1", FILE_A),
        tenant_key("tenant-2", FILE_A),
    ]

    own, other = first[0].correlation_id, second[0].correlation_id
    assert own != other
    assert lance.get(own, "tenant-1") is not None and lance.get(own, "tenant-2") is None
    found = lance.get(other, "tenant-2")
    assert found is not None and (found.tenant_id, found.job_id) == ("tenant-2", "job-2")
    # Record 0 is 0/0, 0/1, 0/0 over the three samples: one carrier.
    assert graph.carriers(own, "tenant-2") == [] and len(graph.carriers(own, "tenant-1")) == 1
    rows, total = lance.query(VariantQuery(tenant_id="tenant-2", limit=100))
    assert total == 6 and {row.tenant_id for row in rows} == {"tenant-2"}

    # The first tenant sending its file again changes neither store.
    before = lance.query(VariantQuery(limit=100))
    graph.write(first)
    lance.write(first)
    assert graph.counts() == both
    assert lance.query(VariantQuery(limit=100)) == before


def test_query_filters(lance: LanceStore) -> None:
    lance.write(make_batch(range(30)))
    lance.write(make_batch(range(10), file_id=FILE_B, job_id="job-2", tenant_id="tenant-2"))

    def ids(query: VariantQuery) -> tuple[list[int], int]:
        rows, total = lance.query(query)
        return [row.record_index for row in rows], total

    assert ids(VariantQuery(job_id="job-2", limit=100)) == (list(range(10)), 10)
    assert ids(VariantQuery(tenant_id="tenant-1", limit=3)) == ([0, 1, 2], 30)
    assert ids(VariantQuery(tenant_id="tenant-1", limit=3, offset=28)) == ([28, 29], 30)
    # chr2 holds records 1, 4, 7...; positions 1000 + 10 * index.
    assert ids(VariantQuery(job_id="job-1", region="chr2:1040-1100")) == ([4, 7, 10], 3)
    assert ids(VariantQuery(job_id="job-1", region="chr2:1,070")) == ([7], 1)
    assert ids(VariantQuery(job_id="job-1", region="chr3"))[1] == 10
    assert ids(VariantQuery(job_id="job-1", gene="GENE3")) == ([3, 8, 13, 18, 23, 28], 6)
    # NA00002 (second sample) carries the ALT on even records.
    assert ids(VariantQuery(job_id="job-1", sample="NA00002", gene="GENE2")) == ([2, 12, 22], 3)
    assert ids(VariantQuery(job_id="job-1", classification="pathogenic")) == ([4, 9, 14, 19, 24, 29], 6)
    assert ids(VariantQuery(job_id="job-1", gene="O'Brien")) == ([], 0)
    assert lance.count("job-1") == 30
    assert lance.classifications("job-1") == dict.fromkeys(CLASSES, 6)
    assert lance.count("job-2") == 10
    assert lance.get("no-such-id") is None


def test_parse_region_rejects_garbage() -> None:
    assert parse_region("chrX:5-9") == ("chrX", 5, 9)
    assert parse_region("1") == ("1", None, None)
    assert parse_region(f"chr1:1-{INT64_MAX}") == ("chr1", 1, INT64_MAX)
    for bad in ("chr1:9-5", "chr1:abc", "", f"chr1:1-{INT64_MAX + 1}", "chr1:1-99999999999999999999"):
        with pytest.raises(ValueError) as refused:
            parse_region(bad)
        assert bad not in str(refused.value) or not bad  # never repeated in the description


def test_graph_counts_per_job(graph: GraphStore) -> None:
    graph.write(make_batch(range(6)))
    graph.write(make_batch(range(4), file_id=FILE_B, job_id="job-2", calls=[("NA00001", (0, 1), False)]))

    assert graph.counts("job-2") == counts(
        files=1, samples=1, variants=4, genes=4, analyses=4, in_file=4, carried_by=4, in_gene=4, analyzed_by=4
    )
    # The tenant's NA00001 is one node shared by both files.
    assert graph.counts().samples == 3
    assert graph.counts().files == 2


def test_compaction_keeps_data_and_reduces_fragments(lance: LanceStore) -> None:
    for start in range(0, 60, 10):
        lance.write(make_batch(range(start, start + 10)))
    before = snapshot(lance)
    fragments = lance.fragments()
    assert fragments >= 6

    lance.compact()

    assert lance.fragments() < fragments
    assert snapshot(lance).equals(before)


Compacted = tuple[LanceStore, list[int]]


@pytest.fixture
def compacted(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Compacted]:
    """A store that took `writes` writes of ten new variants under `policy` (the test's
    `compacting_under` parameters), and the variants it held at each compaction, in order."""
    policy, writes = request.param
    held: list[int] = []
    store = LanceStore(
        tmp_path / "lance", compaction=policy, before_compaction=lambda: held.append(store.count())
    )
    store.open()
    for start in range(0, 10 * writes, 10):
        store.write(make_batch(range(start, start + 10)))
    yield store, held
    store.close()


def compacting_under(policy: CompactionPolicy, *, writes: int) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("compacted", [(policy, writes)], indirect=True)


@compacting_under(CompactionPolicy(max_fragments=4), writes=10)
def test_the_write_path_compacts_once_a_table_holds_max_fragments(compacted: Compacted) -> None:
    # Every write adds a fragment to each table.
    # The first at the fourth write; how many fragments a compaction leaves is LanceDB's plan
    # (at 70 it left two in one table), so the later ones come 2-3 writes apart.
    store, held = compacted
    assert held[:2] == [40, 70]
    assert all(later - earlier in (20, 30) for earlier, later in itertools.pairwise(held))
    assert store.fragments() < 4
    assert store.count() == 100


@compacting_under(CompactionPolicy(max_fragments=1000), writes=12)
def test_the_write_path_leaves_compaction_to_idle_time(compacted: Compacted) -> None:
    # Issue 15 (compaction off the hot path): however much the store grows while input keeps
    # coming, it is compacted when the input goes idle (compact_if_written), not in between.
    store, held = compacted
    assert held == []
    assert store.fragments() == 12
    assert store.compact_if_written()
    assert held == [120]
    assert store.fragments() == 1
    assert not store.compact_if_written()


def test_a_compaction_part_is_a_run_of_adjacent_small_fragments_up_to_its_rows() -> None:
    full = _lance_store._TARGET_FRAGMENT_ROWS
    part = _lance_store._next_part
    assert part([(0, 10), (1, 10), (2, 10), (3, 10)], 25) == [0, 1]
    assert part([(0, 10), (1, 10), (2, 10), (3, 10)], 40) == [0, 1, 2, 3]
    # A full fragment ends a run; a small fragment alone is no part.
    assert part([(0, full), (1, 10), (2, full), (3, 10), (4, 10)], 100) == [3, 4]
    assert part([(0, 10), (1, full), (2, 10)], 100) == []
    # A part keeps two fragments, however many rows they hold.
    assert part([(0, full - 1), (1, full - 1), (2, 10)], 100) == [0, 1]
    assert part([(7, full), (9, full)], 100) == []


def test_compaction_commits_at_most_its_part_rows_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A compaction holds every row it rewrites until it commits (issue 15: bounded memory), so a
    # table's small fragments are compacted a bounded part at a time.
    store = LanceStore(tmp_path / "lance", compaction=CompactionPolicy(max_fragments=1000))
    store.open()
    try:
        for start in range(0, 120, 10):
            store.write(make_batch(range(start, start + 10)))
        before = snapshot(store)
        variants, _ = store._tables()
        versions = len(variants.list_versions())
        # Fragments of 30 rows are full, and a part holds 30 rows at most: the 12 fragments of
        # 10 rows are merged three at a time, each part in a commit of its own.
        monkeypatch.setattr(_lance_store, "_TARGET_FRAGMENT_ROWS", 30)
        monkeypatch.setattr(_lance_store, "_COMPACTION_PART_ROWS", 30)
        assert _lance_store._compact_in_parts(variants) == [30, 30, 30, 30]
        assert len(variants.list_versions()) >= versions + 4
        assert _lance_store._fragments(variants) == 4
        assert snapshot(store).equals(before)
        monkeypatch.undo()
        store.compact()
        assert store.fragments() == 1
        assert snapshot(store).equals(before)
    finally:
        store.close()


def test_stores_survive_reopening(tmp_path: Path) -> None:
    batch = make_batch(range(12))
    lance = LanceStore(tmp_path / "lance")
    graph = GraphStore(tmp_path / "graph.lbug", buffer_pool_bytes=256 << 20)
    lance.open()
    graph.open()
    lance.write(batch)
    graph.write(batch)
    lance.close()
    graph.close()

    lance.open()
    graph.open()
    graph.write(batch)
    assert lance.count() == 12
    assert graph.counts().carried_by == 18  # 6 even records with one het sample, 6 odd with two
    graph.close()


def _key_encodings(path: Path) -> dict[str, dict[str, str]]:
    db = lancedb.connect(str(path))
    return {
        name: {
            field.name: (field.metadata or {}).get(b"lance-encoding:compression", b"").decode()
            for field in db.open_table(name).schema
            if field.name in ("correlation_id", "analysis_id")
        }
        for name in ("variants", "analyses", "carriers")
    }


def test_a_new_store_encodes_its_keys_with_lz4_and_keeps_that_through_compaction(tmp_path: Path) -> None:
    # Lance's default string compression (FSST) spent about half of an append's CPU on these
    # unique keys (measured in _lance_store); the tables' own schema is what sets the encoding.
    lz4 = {
        "variants": {"correlation_id": "lz4"},
        "analyses": {"analysis_id": "lz4", "correlation_id": "lz4"},
        "carriers": {"correlation_id": "lz4"},
    }
    store = LanceStore(tmp_path / "lance")
    store.open()
    try:
        store.write(make_batch(range(12)))
        store.write(make_batch(range(6, 18)))
        store.compact()
        assert store.count() == 18
        assert store.query(VariantQuery(sample="NA00001"))[1] == 9
    finally:
        store.close()
    assert _key_encodings(tmp_path / "lance") == lz4


def test_a_store_whose_tables_predate_the_key_encoding_opens_and_keeps_its_own(tmp_path: Path) -> None:
    # Tables created with the plain schemas, as every store was before: opening them with the
    # encoded schemas must not be refused as a schema mismatch, and they keep the encoding they have.
    path = tmp_path / "lance"
    db = lancedb.connect(str(path))
    for name, schema in (
        ("variants", VARIANT_SCHEMA),
        ("analyses", ANALYSIS_SCHEMA),
        ("carriers", CARRIER_SCHEMA),
    ):
        db.create_table(name, schema=schema)
    store = LanceStore(path)
    store.open()
    try:
        batch = make_batch(range(12))
        store.write(batch)
        store.write(batch)
        assert store.count() == 12 and store.count_analyses() == 12
        assert store.query(VariantQuery(sample="NA00002"))[1] == 6
    finally:
        store.close()
    assert _key_encodings(path) == {
        "variants": {"correlation_id": ""},
        "analyses": {"analysis_id": "", "correlation_id": ""},
        "carriers": {"correlation_id": ""},
    }


def test_graph_opens_after_a_crash_tore_its_write_ahead_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A writer SIGKILLed while the engine wrote a transaction's log pages left a last record
    # failing its checksum, and the writer could never start again (a CI crash-recovery run).
    graph = GraphStore(tmp_path / "graph.lbug", buffer_pool_bytes=256 << 20, checkpoint_bytes=1 << 30)
    graph.open()
    wal = tmp_path / "graph.lbug.wal"
    graph.write(make_batch(range(12)))
    committed = wal.stat().st_size
    graph.write(make_batch(range(12, 24)))
    # What a kill leaves: the files as written so far (no close, no checkpoint), the second
    # batch's log cut halfway.
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    shutil.copyfile(tmp_path / "graph.lbug", crashed / "graph.lbug")
    shutil.copyfile(wal, crashed / "graph.lbug.wal")
    torn = (committed + wal.stat().st_size) // 2
    graph.close()
    os.truncate(crashed / "graph.lbug.wal", torn)

    reopened = GraphStore(crashed / "graph.lbug", buffer_pool_bytes=256 << 20)
    with caplog.at_level(logging.WARNING):
        reopened.open()
    try:
        assert "ends in a torn record" in caplog.text
        assert (crashed / "graph.lbug.wal.torn").stat().st_size == torn
        # The committed batch is whole; the torn one is absent until the bus delivers it again.
        assert reopened.counts().variants == 12
        assert reopened.counts().carried_by == 18  # 6 even records with one het sample, 6 odd with two
        reopened.write(make_batch(range(12, 24)))
        assert reopened.counts().variants == 24
        assert reopened.counts().carried_by == 36
    finally:
        reopened.close()


PROBE_TYPES = {
    "c_confidence": pa.float64(),
    "c_pos": pa.int64(),
    "c_key": pa.int64(),
    "c_variant": pa.int64(),
    "c_depth": pa.int32(),
    "c_gq": pa.int32(),
    "c_written": pa.list_(pa.int64()),
    "c_carriers": pa.list_(pa.string()),
}


def _probe_value(kind: pa.DataType | None) -> pa.Array:
    if kind is None:
        return pa.array(["x"])
    if pa.types.is_list(kind):
        return pa.array([["x"] if pa.types.is_string(kind.value_type) else [1]], kind)
    return pa.array([1], kind)


def test_graph_batch_statements_use_primary_key_lookups(graph: GraphStore) -> None:
    """A comma-joined MATCH plans as a cross product of whole tables; that must never come back."""
    conn = graph._connection()
    statements = [
        value for name, value in vars(_graph_store).items() if name.isupper() and isinstance(value, str)
    ]
    batch_statements = [s for s in statements if s.startswith("LOAD FROM") and "MATCH" in s]
    assert len(batch_statements) >= 8
    for statement in batch_statements:
        columns = dict.fromkeys(re.findall(r"\bc_[a-z_]+\b", statement))
        probe = pa.table({c: _probe_value(PROBE_TYPES.get(c)) for c in columns})
        result = conn.execute("EXPLAIN " + statement, {"rows": probe})
        assert not isinstance(result, list)
        plan = str(result.get_all()[0])
        assert "CROSS_PRODUCT" not in plan, statement
        assert "QUERY_PRIMARY_KEY_LOOKUP" in plan, statement


async def test_async_lifecycle(tmp_path: Path) -> None:
    async with LanceStore(tmp_path / "lance") as lance, GraphStore(tmp_path / "g.lbug") as graph:
        lance.write(make_batch(range(2)))
        graph.write(make_batch(range(2)))
        assert lance.count() == 2
        assert graph.counts().variants == 2


def test_no_prepared_statement_keeps_a_written_batch_alive(graph: GraphStore) -> None:
    # ladybug caches a statement per Arrow parameter object, holding the table; unreleased,
    # every batch's rows stayed in the writer's memory.
    for start in (0, 4):
        graph.write(make_batch(range(start, start + 4)))
        assert graph._connection()._pybind_implicit_prepared_cache == {}
    assert graph.counts().variants == 8


def test_a_graph_whose_carrier_edges_held_the_calls_takes_bare_ones(tmp_path: Path) -> None:
    """A store written before the calls left the graph (CARRIED_BY {genotype, depth, gq}) keeps
    its table: new carriers are linked beside the old edges, and read alike."""
    path = tmp_path / "graph.lbug"
    database = ladybug.Database(str(path))
    old = ladybug.Connection(database)
    for statement in _graph_store._SCHEMA:
        if "TABLE IF NOT EXISTS CARRIED_BY" in statement:
            statement = (
                "CREATE REL TABLE CARRIED_BY(FROM Variant TO Sample, genotype STRING, depth INT32,"
                " gq INT32) WITH (storage_direction='fwd')"
            )
        old.execute(statement)
    old.close()
    database.close()
    graph = GraphStore(path, buffer_pool_bytes=256 << 20)
    graph.open()
    try:
        batch = make_batch(range(4))
        graph.write(batch)
        # Records 0..3 have 1, 2, 1, 2 het samples.
        assert graph.counts().carried_by == 6
        # Record 1 is 0/1, 0/0, 0/1 over NA00001..3.
        assert graph.carriers(batch[1].correlation_id, "tenant-1") == ["NA00001", "NA00003"]
        columns = graph._connection().execute("CALL TABLE_INFO('CARRIED_BY') RETURN name")
        assert {row[0] for row in columns.get_all()} == {"genotype", "depth", "gq"}
    finally:
        graph.close()


def test_a_query_page_ends_before_the_variant_that_would_pass_its_byte_budget(lance: LanceStore) -> None:
    lance.write(make_batch(range(10)))
    whole, total = lance.query(VariantQuery(limit=10))
    sizes = [variant.ByteSize() for variant in whole]
    assert total == 10 and len(whole) == 10
    budget = sum(sizes[:3]) + sizes[3] // 2
    page, total = lance.query(VariantQuery(limit=10, max_bytes=budget))
    assert total == 10 and page == whole[:3]
    # A budget below one variant still moves paging on by one.
    assert lance.query(VariantQuery(limit=10, offset=4, max_bytes=1))[0] == whole[4:5]
