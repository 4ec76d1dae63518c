"""A job's stored-variant count, kept by the writes once read: always the table's exact count.

The writer asks for it after every batch (progress and the job's end are decided on it), so
LanceStore counts a job once and then adds each write's appended variants. These tests read
the table's own count beside it after each kind of write that could make the two differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from vcf_agent.services.writer import _lance_store
from vcf_agent.services.writer._graph_store import GraphStore
from vcf_agent.services.writer._lance_store import LanceStore
from vcf_agent.services.writer._rows import build_rows

from ._writes import FILE_B, make_batch

NOTHING_STORED = pa.chunked_array([], pa.string())


def table_count(store: LanceStore, job_id: str) -> int:
    """The table's own count, past any kept one."""
    variants, _ = store._tables()
    return int(variants.count_rows(_lance_store._eq("job_id", job_id)))


def test_a_counted_job_gains_each_appended_batch(lance: LanceStore, graph: GraphStore) -> None:
    first = build_rows(make_batch(range(10), job_id="job-1"))
    lance.write(first, maybe_stored=graph.write(first))
    assert lance.count("job-1") == 10

    for start in (10, 30):
        rows = build_rows(make_batch(range(start, start + 20), job_id="job-1"))
        lance.write(rows, maybe_stored=graph.write(rows))
        assert lance.count("job-1") == table_count(lance, "job-1") == start + 20

    # A job counted for the first time mid-run, and one never written.
    other = build_rows(make_batch(range(5), job_id="job-2", file_id=FILE_B))
    lance.write(other, maybe_stored=graph.write(other))
    assert lance.count("job-2") == 5
    assert lance.count("job-3") == 0
    assert lance.count() == 55


def test_a_resubmitted_file_moves_its_variants_to_the_new_job(lance: LanceStore, graph: GraphStore) -> None:
    """The same records under a new job are merged, not appended: they leave the job that held them."""
    rows = build_rows(make_batch(range(20), job_id="job-1"))
    lance.write(rows, maybe_stored=graph.write(rows))
    assert lance.count("job-1") == 20
    assert lance.count("job-2") == 0

    again = build_rows(make_batch(range(5, 25), job_id="job-2"))
    lance.write(again, maybe_stored=graph.write(again))

    assert (lance.count("job-1"), lance.count("job-2")) == (5, 20)
    assert (table_count(lance, "job-1"), table_count(lance, "job-2")) == (5, 20)


def test_a_write_failing_part_way_leaves_the_count_exact(
    lance: LanceStore, graph: GraphStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = build_rows(make_batch(range(10), job_id="job-1"))
    lance.write(rows, maybe_stored=graph.write(rows))
    assert lance.count("job-1") == 10

    # The variants land, then the analyses' write fails: the job holds 20 variants now.
    store = _lance_store._store

    def failing_on_analyses(table: Any, key: str, data: pa.Table, maybe: pa.ChunkedArray | None) -> Any:
        if key == "analysis_id":
            raise OSError("disk full")
        return store(table, key, data, maybe)

    monkeypatch.setattr(_lance_store, "_store", failing_on_analyses)
    more = build_rows(make_batch(range(10, 20), job_id="job-1"))
    with pytest.raises(OSError, match="disk full"):
        lance.write(more, maybe_stored=NOTHING_STORED)
    monkeypatch.setattr(_lance_store, "_store", store)

    assert lance.count("job-1") == table_count(lance, "job-1") == 20


def test_a_count_read_while_a_write_runs_is_not_kept(
    lance: LanceStore, graph: GraphStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read between the write's variants and its other tables, the count already holds the
    write's variants: kept, the write's own addition would count them twice."""
    rows = build_rows(make_batch(range(10), job_id="job-1"))
    lance.write(rows, maybe_stored=graph.write(rows))
    read_meanwhile: list[int] = []
    store = _lance_store._store

    def counting_after_variants(table: Any, key: str, data: pa.Table, maybe: pa.ChunkedArray | None) -> Any:
        stored = store(table, key, data, maybe)
        if key == "correlation_id":
            read_meanwhile.append(lance.count("job-1"))
        return stored

    monkeypatch.setattr(_lance_store, "_store", counting_after_variants)
    more = build_rows(make_batch(range(10, 30), job_id="job-1"))
    lance.write(more, maybe_stored=graph.write(more))

    assert read_meanwhile == [30]
    assert lance.count("job-1") == table_count(lance, "job-1") == 30


def test_counts_start_over_when_the_store_is_reopened(
    lance: LanceStore, graph: GraphStore, tmp_path: Path
) -> None:
    """Another writer may have written while this one was closed (a restarted service)."""
    rows = build_rows(make_batch(range(10), job_id="job-1"))
    lance.write(rows, maybe_stored=graph.write(rows))
    assert lance.count("job-1") == 10
    lance.close()
    meanwhile = LanceStore(tmp_path / "lance")
    meanwhile.open()
    meanwhile.write(build_rows(make_batch(range(10, 15), job_id="job-1")), maybe_stored=NOTHING_STORED)
    meanwhile.close()
    lance.open()
    assert lance.count("job-1") == table_count(lance, "job-1") == 15
