"""Issue 15's graph rule on real LanceDB and LadybugDB files: the graph holds the variants that name
a gene or carry a verdict (with every file, sample and gene); LanceDB holds every variant, once."""

from __future__ import annotations

from pathlib import Path

import ladybug
import pyarrow as pa
import pytest

from vcf_agent.schema import CLASSIFICATIONS, INT64_MAX, genotype_calls, tenant_key
from vcf_agent.services.writer import _graph_store
from vcf_agent.services.writer._graph_store import GRAPH_VERDICTS, GraphStore
from vcf_agent.services.writer._lance_store import LanceStore, VariantQuery
from vcf_agent.services.writer._rows import WriteRows, build_rows
from vcf_agent.v1 import events_pb2

from ._writes import FILE_A, FILE_B, make_write

# Record i: (gene, merged classification). Kept: a gene, or a verdict that is not uncertain.
MIXED = {
    0: ("BRCA2", "uncertain_significance"),  # a gene: kept
    1: ("", "uncertain_significance"),  # neither: left out
    2: ("", "pathogenic"),  # a verdict: kept
    3: ("", "not_classified"),  # neither
    4: ("", "benign"),  # a verdict
    5: ("TP53", "not_classified"),  # a gene
    6: ("", "likely_pathogenic"),
    7: ("", "likely_benign"),
    8: ("", "uncertain_significance"),
    9: ("", "not_classified"),
}
KEPT = [0, 2, 4, 5, 6, 7]


def mixed(indices: range | list[int] = range(10), **kwargs: object) -> list[events_pb2.DatabaseWrite]:
    return [
        make_write(i, gene=MIXED[i][0], classification=MIXED[i][1], **kwargs)  # type: ignore[arg-type]
        for i in indices
    ]


def store(graph: GraphStore, lance: LanceStore, batch: list[events_pb2.DatabaseWrite]) -> pa.ChunkedArray:
    """As the writer does: the graph first, then LanceDB told which variants may be stored already."""
    rows: WriteRows = build_rows(batch)
    maybe_stored = graph.write(rows)
    lance.write(rows, maybe_stored=maybe_stored)
    return maybe_stored


def graph_records(graph: GraphStore) -> list[tuple[int, str]]:
    result = graph._connection().execute(
        "MATCH (v:Variant)-[:IN_FILE]->(f:File) RETURN f.id, v.correlation_id ORDER BY f.id, v.pos"
    )
    assert not isinstance(result, list)
    ids = {make_write(i, file_id=f).correlation_id: i for i in range(40) for f in (FILE_A, FILE_B)}
    return [(row[0], ids[row[1]]) for row in result.get_all()]


def test_the_graph_keeps_variants_with_a_gene_or_verdict_and_lancedb_keeps_every_variant(
    lance: LanceStore, graph: GraphStore
) -> None:
    # The verdicts are classifications the providers answer in, and a VUS is none.
    assert set(CLASSIFICATIONS) >= GRAPH_VERDICTS
    assert "uncertain_significance" not in GRAPH_VERDICTS and "not_classified" not in GRAPH_VERDICTS
    batch = mixed(providers=("local", "openai"))
    assert store(graph, lance, batch).to_pylist() == []

    file_a = tenant_key("tenant-1", FILE_A)
    assert graph_records(graph) == [(file_a, i) for i in KEPT]
    counts = graph.counts()
    # Every sample and file stays; sample j carries the ALT of record i when (i + j) is odd.
    assert (counts.files, counts.samples, counts.genes) == (1, 3, 2)
    assert (counts.variants, counts.in_file, counts.in_gene) == (6, 6, 2)
    assert (counts.analyses, counts.analyzed_by) == (12, 12)
    assert counts.carried_by == sum(1 for i in KEPT for j in range(3) if (i + j) % 2)
    assert graph.carriers(batch[1].correlation_id, "tenant-1") == []
    assert len(graph.carriers(batch[2].correlation_id, "tenant-1")) == 1

    # LanceDB holds all ten with every answer, and the queries, which read it, find all of them.
    assert lance.count() == 10 and lance.count_analyses() == 20
    by_sample, total = lance.query(VariantQuery(sample="NA00002", limit=100))
    assert (total, [v.record_index for v in by_sample]) == (5, [0, 2, 4, 6, 8])
    assert lance.query(VariantQuery(region="chr2", limit=100))[1] == 3  # records 1, 4, 7
    unclassified = lance.query(VariantQuery(classification="not_classified"))[0]
    assert [v.record_index for v in unclassified] == [3, 5, 9]
    assert [v.record_index for v in lance.query(VariantQuery(gene="TP53"))[0]] == [5]

    # A replay doubles nothing in either store.
    before = graph.counts()
    assert sorted(store(graph, lance, batch).to_pylist()) == sorted(w.correlation_id for w in batch)
    assert graph.counts() == before
    assert lance.count() == 10 and lance.count_analyses() == 20


def test_variants_left_out_of_the_graph_are_stored_once_in_lancedb_whatever_the_order(
    lance: LanceStore, graph: GraphStore
) -> None:
    """The graph cannot tell LanceDB which of them are stored: each file's written ranges do."""

    def vus(indices: range, **kwargs: object) -> list[events_pb2.DatabaseWrite]:
        return [make_write(i, gene="", classification="uncertain_significance", **kwargs) for i in indices]  # type: ignore[arg-type]

    assert store(graph, lance, vus(range(100, 120)) + vus(range(5), file_id=FILE_B)).to_pylist() == []
    # Earlier records of the same file after later ones, as the services deliver them: still new.
    assert store(graph, lance, vus(range(10))).to_pylist() == []
    # The graph took a batch and the writer crashed before LanceDB did; it comes again, all of it
    # maybe stored: five records in an earlier range, five in the range the crashed batch added.
    again = vus(range(105, 110)) + [make_write(i, gene="", classification="benign") for i in range(120, 125)]
    graph.write(build_rows(again))
    assert sorted(store(graph, lance, again).to_pylist()) == sorted(w.correlation_id for w in again)
    # The other file's ranges are its own: its next record is new.
    assert store(graph, lance, vus(range(5, 6), file_id=FILE_B)).to_pylist() == []

    assert lance.count() == 41 and lance.count_analyses() == 41
    assert graph.counts().variants == 5  # records 120..124, benign
    assert graph.counts().files == 2
    ranges = graph._connection().execute("MATCH (f:File) RETURN f.id, f.written ORDER BY f.id")
    assert not isinstance(ranges, list)
    assert ranges.get_all() == [
        [tenant_key("tenant-1", FILE_A), [0, 9, 100, 124]],
        [tenant_key("tenant-1", FILE_B), [0, 5]],
    ]


def test_a_variant_entering_the_graph_later_gets_every_edge_and_one_leaving_it_stays_updated(
    lance: LanceStore, graph: GraphStore
) -> None:
    vus = make_write(3, gene="", classification="uncertain_significance")
    store(graph, lance, [vus])
    assert graph.counts().variants == 0

    # Re-analysis names a verdict: the variant enters the graph with its file, carrier and answers.
    verdict = make_write(3, gene="", classification="pathogenic", providers=("local", "openai"))
    assert store(graph, lance, [verdict]).to_pylist() == [vus.correlation_id]
    counts = graph.counts()
    assert (counts.variants, counts.in_file, counts.analyses, counts.analyzed_by) == (1, 1, 2, 2)
    assert graph.carriers(vus.correlation_id, "tenant-1") == ["NA00001", "NA00003"]
    assert lance.count() == 1 and lance.count_analyses() == 2

    # A later answer takes the verdict away: the node stays, with the answer stored.
    store(graph, lance, [vus])
    assert graph.counts() == counts
    found = graph._connection().execute("MATCH (v:Variant) RETURN v.classification")
    assert not isinstance(found, list)
    assert found.get_all() == [["uncertain_significance"]]
    stored = lance.get(vus.correlation_id)
    assert stored is not None and stored.classification == "uncertain_significance"
    assert lance.count() == 1


def test_a_store_from_before_the_written_ranges_counts_every_record_of_its_files_as_maybe_stored(
    tmp_path: Path,
) -> None:
    path = tmp_path / "graph.lbug"
    database = ladybug.Database(str(path))
    conn = ladybug.Connection(database)
    conn.execute("CREATE NODE TABLE File(id STRING PRIMARY KEY, name STRING, tenant_id STRING)")
    file_key = tenant_key("tenant-1", FILE_A)
    conn.execute("CREATE (:File {id: $id, name: 'a.vcf', tenant_id: 'tenant-1'})", {"id": file_key})
    conn.close()
    database.close()

    graph = GraphStore(path, buffer_pool_bytes=256 << 20)
    graph.open()
    try:
        batch = [make_write(i, gene="", classification="not_classified") for i in range(3)]
        assert sorted(graph.write(batch).to_pylist()) == sorted(w.correlation_id for w in batch)
        ranges = graph._connection().execute("MATCH (f:File) RETURN f.written")
        assert not isinstance(ranges, list)
        assert ranges.get_all() == [[[0, INT64_MAX]]]
    finally:
        graph.close()


def test_one_batch_of_two_tenants_keeps_their_same_named_samples_apart(
    lance: LanceStore, graph: GraphStore
) -> None:
    # Sample nodes are keyed by tenant: a batch holding both tenants' writes (the writer batches
    # across jobs) must give each tenant its own samples and point each carrier edge at its own.
    batch = [
        make_write(i, gene="BRCA2", tenant_id=tenant) for tenant in ("tenant-1", "tenant-2") for i in (1, 2)
    ]
    store(graph, lance, batch)

    result = graph._connection().execute("MATCH (s:Sample) RETURN s.id, s.tenant_id ORDER BY s.id")
    assert not isinstance(result, list)
    samples = [tuple(row) for row in result.get_all()]
    names = sorted(
        {
            sample
            for write in batch
            for sample in (call.sample for call in genotype_calls(write.variant.genotypes))
        }
    )
    assert samples == [(f"{tenant}/{name}", tenant) for tenant in ("tenant-1", "tenant-2") for name in names]
    for write in batch:
        carried = graph.carriers(write.correlation_id, write.tenant_id)
        expected = [
            call.sample
            for call in genotype_calls(write.variant.genotypes)
            if write.variant.alt_index + 1 in call.alleles
        ]
        assert carried == sorted(expected) and expected
        # The wrong tenant sees none of them.
        other = "tenant-2" if write.tenant_id == "tenant-1" else "tenant-1"
        assert graph.carriers(write.correlation_id, other) == []


def test_later_batches_merge_no_file_sample_or_gene_they_know_committed_and_read_no_ranges(
    graph: GraphStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second batch of a file, its samples and genes all known: no MERGE, no ranges read; a
    # new gene in a third batch is merged (its IN_GENE edge needs the node).
    statements: list[str] = []
    run, query = _graph_store._run, _graph_store._query_arrow

    def counted_run(conn: ladybug.Connection, statement: str, rows: pa.Table) -> None:
        if rows.num_rows:
            statements.append(statement)
        run(conn, statement, rows)

    def counted_query(conn: ladybug.Connection, statement: str, rows: pa.Table, empty: pa.Schema) -> pa.Table:
        if rows.num_rows:
            statements.append(statement)
        return query(conn, statement, rows, empty)

    monkeypatch.setattr(_graph_store, "_run", counted_run)
    monkeypatch.setattr(_graph_store, "_query_arrow", counted_query)
    shared = (_graph_store._MERGE_FILES, _graph_store._MERGE_SAMPLES, _graph_store._MERGE_GENES)

    graph.write([make_write(i, gene="BRCA2") for i in range(3)])
    assert set(shared) | {_graph_store._WRITTEN_RANGES} <= set(statements)
    statements.clear()
    graph.write([make_write(i, gene="BRCA2") for i in range(3, 6)])
    assert not set(statements) & (set(shared) | {_graph_store._WRITTEN_RANGES})
    statements.clear()
    graph.write([make_write(i, gene="TP53") for i in range(6, 9)])
    assert _graph_store._MERGE_GENES in statements
    assert _graph_store._MERGE_FILES not in statements
    counts = graph.counts()
    assert (counts.files, counts.genes, counts.variants, counts.in_gene) == (1, 2, 9, 9)
    ranges = graph._connection().execute("MATCH (f:File) RETURN f.written")
    assert not isinstance(ranges, list)
    assert ranges.get_all() == [[[0, 8]]]


def test_a_failed_batch_leaves_nothing_known_so_the_next_one_merges_its_nodes_and_reads_its_ranges(
    lance: LanceStore, graph: GraphStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The failed batch merged a new gene and extended the file's ranges inside its transaction;
    # the rollback took both back. Believing either would lose the retry's IN_GENE edges, or
    # (ranges) count its records as never written.
    store(graph, lance, [make_write(i, gene="BRCA2") for i in range(3)])
    upsert = _graph_store._upsert_analyses

    def failing(*args: object) -> None:
        raise RuntimeError("injected: the engine failed mid-batch")

    monkeypatch.setattr(_graph_store, "_upsert_analyses", failing)
    retried = [make_write(i, gene="TP53") for i in range(3, 6)]
    with pytest.raises(RuntimeError, match="injected"):
        graph.write(retried)
    monkeypatch.setattr(_graph_store, "_upsert_analyses", upsert)

    assert store(graph, lance, retried).to_pylist() == []
    counts = graph.counts()
    assert (counts.genes, counts.variants, counts.in_gene, counts.analyzed_by) == (2, 6, 6, 6)
    # A replay of the whole file is known to be written: every variant goes through the merges.
    replay = [make_write(i, gene="TP53") for i in range(6)]
    assert sorted(store(graph, lance, replay).to_pylist()) == sorted(w.correlation_id for w in replay)
    assert lance.count() == 6
    assert graph.counts().variants == 6
