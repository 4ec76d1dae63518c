"""The writer warms its stores' write path at start on a made-up variant: the graph runs a batch's
statements and rolls them back, LanceDB builds the batch's carrier rows and answer counts without
writing. Neither store may hold anything of it, in its files or in what it remembers (the graph's
committed nodes, LanceDB's kept counts), whatever is written next."""

from __future__ import annotations

from pathlib import Path

from vcf_agent.services.writer._graph_store import GraphCounts, GraphStore
from vcf_agent.services.writer._lance_store import LanceStore
from vcf_agent.services.writer._rows import build_rows, warming_rows

from ._writes import make_write

EMPTY = GraphCounts(0, 0, 0, 0, 0, 0, 0, 0, 0)


def test_warming_leaves_nothing_in_the_graph_or_its_log(graph: GraphStore, tmp_path: Path) -> None:
    log = tmp_path / "graph.lbug.wal"
    logged = log.stat().st_size if log.exists() else 0
    graph.warm(warming_rows())
    assert graph.counts() == EMPTY
    assert (log.stat().st_size if log.exists() else 0) == logged
    graph.close()
    graph.open()
    assert graph.counts() == EMPTY


def test_the_nodes_a_warm_up_touched_are_merged_by_a_real_write(graph: GraphStore) -> None:
    """The made-up variant's file, sample and gene were rolled back: a batch naming the same
    ones (tenant `warm`, sample `warm`, gene `WARM`) must create them, not take them as known."""
    graph.warm(warming_rows())
    write = make_write(
        0, file_id="0" * 64, job_id="warm", tenant_id="warm", gene="WARM", calls=[("warm", (0, 1), False)]
    )
    graph.write(build_rows([write]))
    counts = graph.counts()
    assert (counts.files, counts.samples, counts.variants, counts.genes) == (1, 1, 1, 1)
    assert (counts.in_file, counts.carried_by, counts.in_gene, counts.analyzed_by) == (1, 1, 1, 1)


def test_lancedb_warms_without_writing(lance: LanceStore, graph: GraphStore) -> None:
    assert lance.count("warm") == 0
    lance.warm(warming_rows())
    assert lance.count() == 0
    assert lance.count_analyses() == 0
    # The warm-up's job, written for real afterwards, counts from zero.
    write = make_write(0, file_id="0" * 64, job_id="warm", tenant_id="warm", gene="WARM")
    rows = build_rows([write])
    lance.write(rows, maybe_stored=graph.write(rows))
    assert lance.count("warm") == 1
    assert {name: (c.ok, c.failed) for name, c in lance.provider_counts("warm").items()} == {"local": (1, 0)}
