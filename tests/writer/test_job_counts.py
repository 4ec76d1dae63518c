"""A job's stored-variant count, kept by the writes once read: always the table's exact count.

The writer asks for it after every batch (progress and the job's end are decided on it), so
LanceStore counts a job once and then adds each write's appended variants; a job counted with
no rows has its provider answers kept the same way. These tests read the tables' own counts
beside them after each kind of write that could make the two differ.
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
from vcf_agent.v1 import analysis_pb2, events_pb2

from ._writes import FILE_B, make_batch, make_write

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


def answered_batch(indices: range, job_id: str = "job-1") -> list[events_pb2.DatabaseWrite]:
    """Both providers answered, except: claude failed on every third variant, and every fourth
    was stored at the aggregator's deadline with local's answer only (claude missing)."""
    writes = []
    for index in indices:
        missing = index % 4 == 3
        write = make_write(index, job_id=job_id, providers=("local",) if missing else ("claude", "local"))
        if missing:
            write.partial = True
            write.missing_providers.append("claude")
        elif index % 3 == 0:
            failed = next(result for result in write.results if result.provider == "claude")
            failed.status = analysis_pb2.AnalysisResult.STATUS_FAILED
            failed.error = "overloaded"
        writes.append(write)
    return writes


def table_answers(store: LanceStore, tmp_path: Path, job_id: str) -> dict[str, tuple[int, int, int]]:
    """The answers a store opened afresh on the same directory reads from its tables."""
    reader = LanceStore(tmp_path / "lance")
    reader.open()
    try:
        assert reader.count(job_id) == store.count(job_id)
        return as_tuples(reader.provider_counts(job_id, ["claude", "local"]))
    finally:
        reader.close()


def as_tuples(counts: dict[str, events_pb2.ProviderCounts]) -> dict[str, tuple[int, int, int]]:
    return {name: (c.ok, c.failed, c.missing) for name, c in counts.items()}


def test_a_job_counted_before_its_first_write_keeps_its_answers_exact(
    lance: LanceStore, graph: GraphStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer counts a job at its STARTED marker, before any of its rows: from then on its
    answers are kept by the appends, and its end is decided without reading them."""
    assert lance.count("job-1") == 0
    for start in (0, 12):
        rows = build_rows(answered_batch(range(start, start + 12)))
        lance.write(rows, maybe_stored=graph.write(rows))

    # 24 variants: claude failed on 0, 6, 12, 18 (and 9, 21: every third not missing) and is
    # missing on every fourth (3, 7, ... 23: 6 of them); local answered all 24.
    expected = {"claude": (12, 6, 6), "local": (24, 0, 0)}
    read = tables_read(monkeypatch)
    assert as_tuples(lance.provider_counts("job-1", ["claude", "local"])) == expected
    assert "job-1" not in read, "the kept answers were read from the tables"
    monkeypatch.undo()
    assert table_answers(lance, tmp_path, "job-1") == expected


def tables_read(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The values LanceDB's filters name from now on: a job's id once its tables are read for it."""
    read: list[str] = []
    eq = _lance_store._eq

    def reading(column: str, value: str) -> str:
        read.append(value)
        return eq(column, value)

    monkeypatch.setattr(_lance_store, "_eq", reading)
    return read


def test_a_merge_forgets_the_kept_answers_and_the_tables_are_read(
    lance: LanceStore, graph: GraphStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replayed batch is merged, not appended: what a merge changes (a row may move between
    jobs) is not known without reading, so the kept answers are forgotten and read again."""
    assert lance.count("job-1") == 0
    rows = build_rows(answered_batch(range(12)))
    lance.write(rows, maybe_stored=graph.write(rows))
    replay = build_rows(answered_batch(range(6, 12)))
    lance.write(replay, maybe_stored=graph.write(replay))

    read = tables_read(monkeypatch)
    expected = {"claude": (6, 3, 3), "local": (12, 0, 0)}
    assert as_tuples(lance.provider_counts("job-1", ["claude", "local"])) == expected
    assert "job-1" in read, "the answers kept before the merge were used"
    monkeypatch.undo()
    assert table_answers(lance, tmp_path, "job-1") == expected


def test_answers_are_kept_only_for_a_job_read_with_none(
    lance: LanceStore, graph: GraphStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job first counted with rows stored (a writer restarted mid-job) keeps its variant count
    but has its answers read; so does one whose variants a resubmission moved to another job
    while answers of a provider the new job did not ask stay its own."""
    rows = build_rows(answered_batch(range(8)))
    lance.write(rows, maybe_stored=graph.write(rows))
    assert lance.count("job-1") == 8
    more = build_rows(answered_batch(range(8, 12)))
    lance.write(more, maybe_stored=graph.write(more))
    assert lance.count("job-1") == table_count(lance, "job-1") == 12
    assert as_tuples(lance.provider_counts("job-1")) == table_answers(lance, tmp_path, "job-1")

    # job-2 resubmits job-1's file asking local only: every variant moves to job-2, while
    # claude's answers keep job-1's name. job-1 holds no variant, but answers.
    moved = build_rows(make_batch(range(12), job_id="job-2"))
    lance.write(moved, maybe_stored=graph.write(moved))
    lance.close()
    lance.open()
    assert lance.count("job-1") == 0
    read = tables_read(monkeypatch)
    assert as_tuples(lance.provider_counts("job-1")) == {"claude": (6, 3, 0)}
    assert "job-1" in read, "job-1's answers were taken as kept, not read"
