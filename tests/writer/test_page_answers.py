"""A query page's provider answers: looked up by their variants' places in their files, by key
where those are far apart or the answers were stored before they carried their places."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import lancedb
import pyarrow as pa
import pytest

from vcf_agent.services.writer import _lance_store
from vcf_agent.services.writer._carrier_rows import CARRIER_SCHEMA
from vcf_agent.services.writer._lance_store import LanceStore, VariantQuery, _record_ranges
from vcf_agent.services.writer._rows import ANALYSIS_SCHEMA, VARIANT_SCHEMA, build_rows

from ._writes import FILE_A, FILE_B, make_batch

PROVIDERS = ("local", "openai")


def _answers_by_variant(variants: list[Any]) -> dict[str, list[tuple[str, str]]]:
    return {
        v.correlation_id: [(a.provider, json.loads(a.detail_json)["correlationId"]) for a in v.analyses]
        for v in variants
    }


def _expected(variants: list[Any]) -> dict[str, list[tuple[str, str]]]:
    return {v.correlation_id: [(p, v.correlation_id) for p in PROVIDERS] for v in variants}


class _RecordingQueries:
    """One of a store's tables, recording the filter of every search made on it."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.filters: list[str] = []

    def search(self, *args: Any, **kwargs: Any) -> Any:
        query = self.table.search(*args, **kwargs)
        real_where = query.where

        def where(clause: str, *more: Any, **options: Any) -> Any:
            self.filters.append(clause)
            return real_where(clause, *more, **options)

        query.where = where
        return query

    def __getattr__(self, name: str) -> Any:
        return getattr(self.table, name)


def _answer_lookups(store: LanceStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The filters the store's searches of its answers table use from now on, as it ran them."""
    recording = _RecordingQueries(store._analyses)
    monkeypatch.setattr(store, "_analyses", recording)
    return recording.filters


def _by_key(filters: list[str]) -> list[int]:
    """How many correlation ids each filter looks up by key (0: none)."""
    return [clause.count("'") // 2 if "correlation_id IN" in clause else 0 for clause in filters]


def test_a_pages_answers_are_read_as_its_records_range_and_each_variant_gets_its_own(
    lance: LanceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = lance
    store.write(make_batch(range(300), providers=PROVIDERS))
    store.write(make_batch(range(300), file_id=FILE_B, providers=PROVIDERS))
    lookups = _answer_lookups(store, monkeypatch)
    for offset in (0, 100, 500):
        page, total = store.query(VariantQuery(limit=100, offset=offset))
        assert total == 600 and len(page) == 100
        assert _answers_by_variant(page) == _expected(page)
    # One search per page, of its records' range in its file; none by key.
    assert len(lookups) == 3 and _by_key(lookups) == [0, 0, 0]
    assert "file_id = 'aaaa" in lookups[0] and "record_index BETWEEN 0 AND 99" in lookups[0]
    assert "file_id = 'bbbb" in lookups[2] and "record_index BETWEEN 200 AND 299" in lookups[2]


def test_a_page_whose_records_lie_far_apart_gets_its_answers_by_key(
    lance: LanceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = lance
    spread = range(0, 40 * 5_000, 5_000)
    store.write(make_batch(spread, providers=PROVIDERS))
    lookups = _answer_lookups(store, monkeypatch)
    page, total = store.query(VariantQuery(limit=100))
    assert total == 40 and _answers_by_variant(page) == _expected(page)
    assert _by_key(lookups) == [40]


def test_a_tenants_page_gets_none_of_the_answers_another_tenant_stored_for_the_same_file(
    lance: LanceStore,
) -> None:
    store = lance
    # The same file (same file id, same records) stored by two tenants: the records' ranges
    # hold both tenants' answers.
    for tenant in ("tenant-1", "tenant-2"):
        store.write(make_batch(range(120), tenant_id=tenant, providers=PROVIDERS))
    for tenant in ("tenant-1", "tenant-2"):
        page, total = store.query(VariantQuery(tenant_id=tenant, limit=100))
        assert total == 120
        tenants = {json.loads(a.detail_json)["tenantId"] for v in page for a in v.analyses}
        assert tenants == {tenant}
        assert _answers_by_variant(page) == _expected(page)
    everyone, total = store.query(VariantQuery(limit=240))
    assert total == 240 and _answers_by_variant(everyone) == _expected(everyone)


def test_answers_stored_before_they_carried_their_variants_place_are_still_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A store from before: its answers table has no place columns, and its rows none.
    path = tmp_path / "lance"
    before = pa.schema([field for field in ANALYSIS_SCHEMA if field.name not in ("file_id", "record_index")])
    db = lancedb.connect(str(path))
    old = build_rows(make_batch(range(150), providers=PROVIDERS))
    db.create_table("variants", old.variants, schema=VARIANT_SCHEMA)
    db.create_table("analyses", old.analyses.select(before.names), schema=before)
    db.create_table("carriers", schema=CARRIER_SCHEMA)
    store = LanceStore(path)
    store.open()
    try:
        store.write(make_batch(range(150, 300), providers=PROVIDERS))
        # Another provider's answer for variants stored before: it has a place, their first
        # answers none, and a page must hold both (by key, as every page of such a store).
        store.write(make_batch(range(100, 150), providers=("claude",)))
        lookups = _answer_lookups(store, monkeypatch)
        # A page across both: records 100-199, half stored before.
        page, total = store.query(VariantQuery(limit=100, offset=100))
        assert total == 300 and [v.record_index for v in page] == list(range(100, 200))
        assert _answers_by_variant(page) == {
            cid: sorted([*answers, ("claude", cid)]) if v.record_index < 150 else answers
            for v in page
            for cid, answers in _expected([v]).items()
        }
        assert _by_key(lookups) == [100]
    finally:
        store.close()
    places = lancedb.connect(str(path)).open_table("analyses").to_arrow().column("record_index").to_pylist()
    assert sum(place is None for place in places) == 300
    assert sorted(place for place in places if place is not None) == sorted(
        [*(record for record in range(150, 300) for _ in PROVIDERS), *range(100, 150)]
    )
    # Reopened, the store still holds answers without places, and keeps finding them by key.
    reopened = LanceStore(path)
    reopened.open()
    try:
        lookups = _answer_lookups(reopened, monkeypatch)
        page, _ = reopened.query(VariantQuery(limit=100))
        assert _answers_by_variant(page) == _expected(page)
        assert _by_key(lookups) == [100]
    finally:
        reopened.close()


def _rows(*places: tuple[str, int]) -> pa.Table:
    return pa.table(
        {"file_id": [file for file, _ in places], "record_index": [record for _, record in places]}
    )


def test_record_ranges_join_records_a_gap_apart_and_give_up_past_the_bounds() -> None:
    gap = _lance_store._RANGE_GAP
    far = 4 + 2 * gap
    # Two ALTs of record 5 are one place; 3 + gap is within a gap of 5, `far` is not.
    places = _rows((FILE_A, 5), (FILE_A, 3), (FILE_A, 5), (FILE_A, 3 + gap), (FILE_A, far), (FILE_B, 4))
    assert _record_ranges(places, 20) == [(FILE_A, 3, 3 + gap), (FILE_A, far, far), (FILE_B, 4, 4)]
    # Past `_NEAR_RECORDS` records per variant of the page between them: 2 variants, 501 records.
    assert _record_ranges(_rows((FILE_A, 0), (FILE_A, 500)), 2) == []
    assert _record_ranges(_rows((FILE_A, 0), (FILE_A, 500)), 8) == [(FILE_A, 0, 500)]
    # Past `_RANGES` ranges.
    many = _lance_store._RANGES + 1
    assert _record_ranges(_rows(*((FILE_A, at * 10 * gap) for at in range(many))), many) == []
    assert len(_record_ranges(_rows(*((FILE_A, at * 10 * gap) for at in range(many - 1))), many)) == many - 1


def test_a_samples_page_finds_its_variants_by_their_records_not_by_key(
    lance: LanceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sample's page is found in the carriers table, whose row ids are not the variants'.
    store = lance
    store.write(make_batch(range(400), providers=PROVIDERS))
    expected, total = store.query(VariantQuery(limit=400))
    carried = [v for v in expected if any(g.sample == "NA00002" and "1" in g.genotype for g in v.genotypes)]
    assert total == 400 and len(carried) == 200  # make_write: NA00002 holds the ALT on even records
    searches = _RecordingQueries(store._variants)
    monkeypatch.setattr(store, "_variants", searches)
    for offset in (0, 100):
        page, total = store.query(VariantQuery(sample="NA00002", limit=100, offset=offset))
        assert total == 200
        assert page == carried[offset : offset + 100]
    assert _by_key(searches.filters) == [0, 0]
    assert all("record_index BETWEEN" in clause for clause in searches.filters)


def _lookup_threads(other: set[threading.Thread]) -> set[threading.Thread]:
    """The answer-lookup threads alive now, but for `other` (other stores' in this session)."""
    return {t for t in threading.enumerate() if t.name.startswith("lance-answers")} - other


def test_closing_a_store_ends_its_answer_lookup_threads_and_reopening_it_answers_again(
    tmp_path: Path,
) -> None:
    others = _lookup_threads(set())
    store = LanceStore(tmp_path / "lance")
    store.open()
    store.write(make_batch(range(50), providers=PROVIDERS))
    page, _ = store.query(VariantQuery(limit=20))
    assert _answers_by_variant(page) == _expected(page)
    ours = _lookup_threads(others)
    assert ours, "a page's answers are looked up on the store's own threads"
    store.close()
    for thread in ours:
        thread.join(timeout=10)
    assert not _lookup_threads(others)
    # Reopened, the store makes its lookup threads again.
    store.open()
    try:
        page, total = store.query(VariantQuery(limit=20, offset=20))
        assert total == 50 and _answers_by_variant(page) == _expected(page)
        assert _lookup_threads(others)
    finally:
        store.close()
