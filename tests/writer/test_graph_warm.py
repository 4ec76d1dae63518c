"""The writer warms its graph at start by running a batch's statements on a made-up variant and
rolling them back: the graph must hold nothing of it, in the file or in what the store remembers
of committed nodes, whatever is written next."""

from __future__ import annotations

from pathlib import Path

from vcf_agent.services.writer._graph_store import GraphCounts, GraphStore
from vcf_agent.services.writer._rows import build_rows

from ._writes import make_write

EMPTY = GraphCounts(0, 0, 0, 0, 0, 0, 0, 0, 0)


def test_warming_leaves_nothing_in_the_graph_or_its_log(graph: GraphStore, tmp_path: Path) -> None:
    log = tmp_path / "graph.lbug.wal"
    logged = log.stat().st_size if log.exists() else 0
    graph.warm()
    assert graph.counts() == EMPTY
    assert (log.stat().st_size if log.exists() else 0) == logged
    graph.close()
    graph.open()
    assert graph.counts() == EMPTY


def test_the_nodes_a_warm_up_touched_are_merged_by_a_real_write(graph: GraphStore) -> None:
    """The made-up variant's file, sample and gene were rolled back: a batch naming the same
    ones (tenant `warm`, sample `warm`, gene `WARM`) must create them, not take them as known."""
    graph.warm()
    write = make_write(
        0, file_id="0" * 64, job_id="warm", tenant_id="warm", gene="WARM", calls=[("warm", (0, 1), False)]
    )
    graph.write(build_rows([write]))
    counts = graph.counts()
    assert (counts.files, counts.samples, counts.variants, counts.genes) == (1, 1, 1, 1)
    assert (counts.in_file, counts.carried_by, counts.in_gene, counts.analyzed_by) == (1, 1, 1, 1)
