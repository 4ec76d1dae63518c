"""Variants and provider answers in LanceDB, upserted by their deterministic keys.

Three tables: `variants` (one row per correlation_id, every call in `genotypes`),
`analyses` (one row per correlation_id + provider) and `carriers` (one row per
correlation_id + sample whose call holds the ALT; see _carrier_rows.py). Writes
are merge_insert on those keys, so a replay
rewrites identical rows and the counts never move. The writer stores a batch in
the graph first and passes along which variants the graph already had: the
graph commits every variant before LanceDB sees it, so a variant new to the
graph is new here too, and its rows are appended, skipping merge_insert's key
join (whose cost grows with the table). Every write adds a small fragment, and
scans slow down sharply as they pile up, so the store compacts when the
writer's input goes idle, and on the write path once a table holds a
configurable number of fragments (CompactionPolicy); compaction also folds new
rows into the BTREE key indices that merge_insert and point lookups use.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import lancedb
import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf import json_format
from lancedb.index import Bitmap, BTree

from vcf_agent.lifecycle import AsyncComponent
from vcf_agent.schema import parse_region
from vcf_agent.v1 import analysis_pb2, events_pb2, query_pb2

from ._carrier_rows import CARRIER_SCHEMA, VARIANT_COLUMNS, carrier_rows
from ._native_memory import returning_freed_memory
from ._rows import ANALYSIS_SCHEMA, VARIANT_SCHEMA, WriteRows, answer_counts, build_rows
from ._store_location import StoreLocation

log = logging.getLogger(__name__)

# How long close() waits for a running write or compaction to release the tables.
_CLOSE_WAIT_S = 1.0

# The Lance file format new tables are written in. Not the default (2.2): 2.2 stores a column
# holding one value throughout a page (a genome's `alt_index` is 0 and `partial` false in every
# row) in a layout that a read decodes whole, so taking 100 rows of either cost ~4 ms where other
# columns cost ~1.4, and reading a 1 Mb region's keys with `alt_index` ~3.5 ms more than without
# (a 1.6M-row synthetic table: 2.2 takes 100 rows of a constant int32 in 4.0-4.7 ms, 2.1 in 1.6;
# one value in 50,000 differing, both 1.5-2.1). A 5M-variant genome's region page, asked once
# through the five services: 69.4 and 52.7 ms median with 2.2, 43.4 and 40.3 with 2.1; writes
# cost the same within this machine's noise (`genome`, `single`, `cohort`, `latency` A/B'd).
# A store's tables keep the format they were created in.
#
# Without stable row ids (`new_table_enable_stable_row_ids`), although they lower a compaction's
# memory (it renumbers the rows it rewrites; a 10M-row synthetic table with three indexes peaked
# at 919 MB, 627 with stable ids; a cohort-500 store's 9.5M carrier rows +690 MB over the writer's,
# +270): with them a filtered read of the carriers table maps the index's row ids to addresses on
# every query, and a genome's first 100 sample + gene carriers took 85-118 ms against 10,
# `bench query`'s sample + gene page 82-92 ms against 37-60 (5M store, 2026-12-06). On the variants
# and answers tables alone queries cost the same, but their compaction is not the cohort's peak.
# Compacting in parts (`_compact_in_parts`) bounds that memory instead.
_FILE_FORMAT = "2.1"
_NEW_TABLE_OPTIONS = {"new_table_data_storage_version": _FILE_FORMAT}
_VARIANTS = "variants"
_ANALYSES = "analyses"
_CARRIERS = "carriers"
# File order: the natural order of a VCF, stable across compactions; tenants apart, so that
# two tenants' copies of one file never tie and pages stay stable.
_ORDER = [
    ("tenant_id", "ascending"),
    ("file_id", "ascending"),
    ("record_index", "ascending"),
    ("alt_index", "ascending"),
]


# Scalar indexes the query filters use (VariantQuery): a region is a chromosome (few values,
# a bitmap) and a position range (a B-tree); a gene, job or tenant a bitmap. A sample is
# looked up in the carriers table, which has the same filters' indexes and its own on
# sample and variant. Rows written since the last compaction are scanned until compaction
# folds them in, which the writer does when its input goes idle.
_QUERY_INDEXES = (
    ("chromosome", Bitmap()),
    ("position", BTree()),
    ("gene", Bitmap()),
    ("job_id", Bitmap()),
    ("tenant_id", Bitmap()),
    # The file order's columns, so a page's place in it is counted on indexes alone.
    ("file_id", Bitmap()),
    ("record_index", BTree()),
    ("alt_index", Bitmap()),
)
_CARRIER_INDEXES = (
    ("correlation_id", BTree()),
    ("sample", Bitmap()),
    *_QUERY_INDEXES,
)


@dataclass(slots=True)
class _KeptCounts:
    """A job's rows as the writes keep them once read: its variants, and its answers per
    provider ([ok, failed, missing], as provider_counts gives them) or None if not kept."""

    variants: int
    answers: dict[str, list[int]] | None


@dataclass(frozen=True, slots=True)
class CompactionPolicy:
    """When the write path compacts: once a table holds `max_fragments`. Otherwise the writer
    compacts when its input goes idle (issue 15: compaction off the hot path).

    A compaction folds the new rows into every scalar index, so its cost grows with the store
    (measured: 6 s at 630,000 carrier rows, 22-32 s at 1.2-1.8M, 150-185 s at 11M in a 2,504-
    sample cohort). Until 2026-12-05 the write path also compacted each time the store had
    doubled (from 200,000 variants): a 5M genome compacted at 0.2, 0.4, 0.8, 1.6 and 3.2M,
    120-138 s of a 290-340 s job. Replaying that genome's captured writes into the two stores
    alone, LanceDB took 25.5 us of CPU per variant with those compactions and 7.9 without; the
    one idle compaction of all 5M rows then took 63 s (24 s for the 1.8M left otherwise), off the
    job's clock. Five processes, one run each: 18,620 against 15,090 variants/s, the writer 43.4
    against 59.4 us per variant, its peak resident memory over its whole life (the idle
    compaction included) 1,246 against 1,314 MB; two more runs without them 20,311 and
    20,712/s. What doubling bought, rows not yet indexed at most half the store while a job
    runs, no longer pays for itself: a job's count, asked after every batch, is kept by the
    writes instead of scanned (`LanceStore.count`), and new variants are appended without a
    key lookup. Queries made while a job runs scan its unindexed rows.

    `max_fragments` bounds what a store can hold unindexed when its input never goes idle: a
    single-sample genome's batches are ~6,000 variants, so 1,024 fragments are ~6M variants; a
    2,504-sample cohort's ~150. At 256, a 100,000-variant, 2,504-sample cohort compacted 10.9M
    carrier rows on the write path after 256 writes (80.5 s, its batches waiting) and took 377.6
    s end to end; at 1,024 its 612 writes compact once, idle: 260.0 s (2026-12-04).
    """

    max_fragments: int = 1024
    # Old versions are kept this long so a concurrent reader's snapshot stays valid.
    keep_versions: timedelta = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class VariantQuery:
    """Filters for `LanceStore.query`; empty fields do not filter."""

    job_id: str = ""
    tenant_id: str = ""
    region: str = ""
    gene: str = ""
    sample: str = ""
    classification: str = ""
    limit: int = 100
    offset: int = 0
    # Serialized bytes a page may hold (0: no bound); a page keeps at least one variant.
    max_bytes: int = 0

    @classmethod
    def of_request(
        cls,
        request: query_pb2.QueryVariantsRequest,
        *,
        tenant_id: str,
        limit: int,
        offset: int = 0,
        max_bytes: int = 0,
    ) -> VariantQuery:
        """A QueryVariants request's filters, so a filter added to the request is read in one place.

        Tenant scope and paging are the caller's: the API enforces them, a local read does not.
        """
        return cls(
            job_id=request.job_id,
            tenant_id=tenant_id,
            region=request.region,
            gene=request.gene,
            sample=request.sample,
            classification=request.classification,
            limit=limit,
            offset=offset,
            max_bytes=max_bytes,
        )


class LanceStore(AsyncComponent):
    """The writer's LanceDB tables.

    Everything except start/stop blocks and is meant for a worker thread
    (asyncio.to_thread). Writes and compaction are serialised by a lock, as
    concurrent merges on one table would conflict; reads run concurrently,
    each on the latest committed version.
    """

    def __init__(
        self,
        path: Path | StoreLocation,
        *,
        compaction: CompactionPolicy | None = None,
        read_every_match_up_to: int = 20_000,
        before_compaction: Callable[[], object] | None = None,
    ) -> None:
        # A local directory, or an s3:// store with its options (and, for the writer, its pairing).
        self._location = StoreLocation.of(path)
        self._policy = compaction or CompactionPolicy()
        # Called before every compaction, on its thread and under the store's lock: the writer
        # checkpoints its graph there, so the graph engine's memory for its uncheckpointed log
        # is freed before compaction's working set adds to it (see StoreSink).
        self._before_compaction = before_compaction
        # Reading a matched row's keys costs a random read: on a 5M-variant store 1.0-1.6 us
        # each for a 1 Mb region's ~10,000 (stored together: 10-16 ms) and 1.5-3 us for a gene's
        # matches spread over the file (20,000 in 37-50 ms, 230,000 in ~600 ms). A query matching
        # up to this many reads them all and selects its page among them; above it the page is
        # found on the indexes (see _first_matches), reading about as many rows as it holds but
        # counting over record ranges that grow with how deep in the file the page lies. At
        # 2,000, a region page deep in the file took 240-510 ms in those counts (2026-12-05).
        self._read_every_match_up_to = read_every_match_up_to
        self._lock = threading.Lock()
        self._variants: Any = None
        self._analyses: Any = None
        self._carriers: Any = None
        # Whether every stored answer carries its variant's place (a store from before does not).
        self._answers_placed = False
        # Where a page's answers are looked up while its rows are read (see _fetch): made by
        # open, shut down by close, so a closed store leaves no idle threads behind.
        self._lookups: ThreadPoolExecutor | None = None
        self._writes_since_compaction = 0
        # Stored variants (and answers) per job, counted once and then kept up to date by the
        # writes themselves (see count). `_write_sequence` is odd while a write runs, so a count
        # read from the table is kept only if no write ran meanwhile; `_counted` guards both.
        self._kept: dict[str, _KeptCounts] = {}
        self._write_sequence = 0
        self._counted = threading.Lock()

    async def start(self) -> None:
        await asyncio.to_thread(self.open)

    async def stop(self) -> None:
        await asyncio.to_thread(self.close)

    def open(self) -> None:
        """Open (creating if needed) the database, tables and key indices.

        StoreUnavailableError (one line) when the store cannot be reached or is not this writer's.
        """
        with self._lock:
            if not self._location.is_object_store:
                bound_scan_read_ahead()
            db = self._location.connect(_bounded_session())
            # Opened as they are, not created with exist_ok: a table's schema carries how its keys
            # are encoded (a store from before keeps its own) and the mark of a finished fill.
            present = set(db.list_tables().tables)
            self._variants, self._analyses, self._carriers = (
                db.open_table(name)
                if name in present
                else db.create_table(name, schema=_stored_schema(schema), storage_options=_NEW_TABLE_OPTIONS)
                for name, schema in (
                    (_VARIANTS, VARIANT_SCHEMA),
                    (_ANALYSES, ANALYSIS_SCHEMA),
                    (_CARRIERS, CARRIER_SCHEMA),
                )
            )
            with self._counted:
                self._kept.clear()
            if self._lookups is None:
                self._lookups = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lance-answers")
            _drop_call_ids(self._carriers)
            _fill_carriers(self._variants, self._carriers)
            self._answers_placed = _place_answers(self._analyses)
            wanted = [
                (self._variants, "correlation_id", BTree()),
                (self._analyses, "analysis_id", BTree()),
                # A page's provider answers are looked up by their variants' places in their
                # files, and by their keys where those are far apart (see _answers).
                (self._analyses, "correlation_id", BTree()),
                (self._analyses, "file_id", Bitmap()),
                (self._analyses, "record_index", BTree()),
                *((self._variants, column, config) for column, config in _QUERY_INDEXES),
                *((self._carriers, column, config) for column, config in _CARRIER_INDEXES),
            ]
            for table, column, config in wanted:
                if not any(column in index.columns for index in table.list_indices()):
                    table.create_index(column, config=config)

    def close(self) -> None:
        """Release the table handles; every write is already durable.

        A compaction still running (the writer does not wait for one at shutdown) keeps
        the handles: it commits atomically, and the process exits around it.
        """
        if not self._lock.acquire(timeout=_CLOSE_WAIT_S):
            log.warning("closing LanceDB while a compaction runs: left to it")
            return
        try:
            self._variants = self._analyses = self._carriers = None
            lookups, self._lookups = self._lookups, None
        finally:
            self._lock.release()
        if lookups is not None:
            # Not waited for: a page's lookup still running ends with its query, then its thread.
            lookups.shutdown(wait=False)

    def write(
        self,
        batch: Sequence[events_pb2.DatabaseWrite] | WriteRows,
        *,
        maybe_stored: pa.ChunkedArray | None = None,
    ) -> None:
        """Upsert a batch (pass prebuilt WriteRows to share them with the graph store).

        `maybe_stored`: the only correlation ids that may be stored already; the rows
        of every other variant are appended. None: any row may be stored already.
        """
        rows = batch if isinstance(batch, WriteRows) else build_rows(batch)
        if not len(rows):
            return
        with self._lock:
            variants, analyses = self._tables()
            with self._counted:
                self._write_sequence += 1
            appended: tuple[pa.Table, pa.Table] | None = None
            try:
                appended = self._write(variants, analyses, rows, maybe_stored)
            finally:
                with self._counted:
                    self._write_sequence += 1
                    self._count_appended(appended)
            self._writes_since_compaction += 1
            if self._compaction_due(variants, analyses):
                self._compact()

    def _write(
        self, variants: Any, analyses: Any, rows: WriteRows, maybe_stored: pa.ChunkedArray | None
    ) -> tuple[pa.Table, pa.Table] | None:
        """The three tables' writes; the variant and answer rows appended, or None if any was merged."""
        # Carriers after their variants, replaced only for the variants stored before this
        # write. `maybe_stored` names every variant of a file's written record ranges, and
        # out-of-order batches land in them: in the 2,504-sample cohort ~60 variants of a
        # batch did, whose merge into a 28M-row carriers table took 3.8 s and 3 GB as it
        # grew, while the same lookup in the variants table (one row per variant) is cheap.
        # Carriers come last so that this lookup holds after a crash: a crash between the
        # writes leaves a stored variant whose carriers the replay adds (a sample query
        # misses them until then; its job is not complete before), never carrier rows the
        # replay would append twice.
        stored_before = _stored_ids(variants, rows.variants.column("correlation_id"), maybe_stored)
        appended, merged = _store(variants, "correlation_id", rows.variants, maybe_stored)
        carriers = carrier_rows(rows.variants, rows.calls.column("carrier"))
        _store_carriers(self._carriers, carriers, stored_before)
        answered, answers_merged = _store(analyses, "analysis_id", rows.analyses, maybe_stored)
        return None if merged or answers_merged else (appended, answered)

    def _count_appended(self, appended: tuple[pa.Table, pa.Table] | None) -> None:
        """Add a write's appended variants and answers to the jobs counted; None (a merge, or a
        write that failed part way) forgets every count, for the table to count again.

        A merged variant may be new, or an update that moves it from the job that stored it
        before to this one (a resubmitted file), so only a read tells what each job holds now.
        """
        if appended is None:
            self._kept.clear()
            return
        variants, answers = appended
        if not self._kept or not variants.num_rows:
            return
        for entry in variants.column("job_id").value_counts().to_pylist():
            kept = self._kept.get(str(entry["values"]))
            if kept is not None:
                kept.variants += int(entry["counts"])
        for job_id, provider, slot, count in answer_counts(variants, answers):
            kept = self._kept.get(job_id)
            if kept is not None and kept.answers is not None:
                kept.answers.setdefault(provider, [0, 0, 0])[slot] += count

    def warm(self, rows: WriteRows) -> None:
        """Build a batch's carrier rows and count its answers once, writing nothing (on made-up
        rows, `warming_rows`).

        The Arrow kernels they use load on a process's first call: the carrier rows of a fresh
        process's first 2,000-variant batch took 2-24 ms of CPU (16, 2, 20 and 24 in four
        processes) and 0.4-0.5 ms on the next, 1.4-6 ms after this; its answer counts 1.4-7.6 ms
        and 0.45, 0.5 after this (2026-12-06). The writer calls it at start, beside GraphStore.warm.
        """
        carrier_rows(rows.variants, rows.calls.column("carrier"))
        answer_counts(rows.variants, rows.analyses)

    def compact(self) -> None:
        """Merge small fragments, index new keys and drop old versions now."""
        with self._lock:
            self._compact()

    def compact_if_written(self) -> bool:
        """Compact if anything was written since the last compaction; True if it did.

        The writer calls this when its input is idle, so the rows of a finished job are
        indexed for queries without compaction running on the write path.
        """
        with self._lock:
            if not self._writes_since_compaction:
                return False
            self._compact()
            return True

    def fragments(self) -> int:
        """Fragments in the variants table: what compaction keeps small."""
        variants, _ = self._tables()
        return _fragments(variants)

    def count(self, job_id: str | None = None) -> int:
        """Stored variants, over everything or one job.

        A job's count is read from the table once, then kept by the writes (every batch asks
        for it). Read each time, it scanned the job_id column of every row not yet indexed:
        replaying a 5M-variant genome's writes with compaction left to idle time, it grew to
        146 ms a batch, 95 s of CPU over the job (25 s with the write path compacting at every
        doubling of the store; measured 2026-12-05).
        """
        variants, analyses = self._tables()
        if not job_id:
            return int(variants.count_rows())
        with self._counted:
            known = self._kept.get(job_id)
            sequence = self._write_sequence
        if known is not None:
            return known.variants
        job = _eq("job_id", job_id)
        counted = int(variants.count_rows(job))
        # A job read with no rows (the writer asks at its STARTED marker) has its answers kept
        # from then on as well, so its end is decided without reading them (provider_counts).
        # Answers are written with their variants, but a resubmission may have moved a job's
        # variants to another job and left answers of a provider it did not ask: looked for too.
        answers: dict[str, list[int]] | None = None
        if not counted and not analyses.count_rows(job):
            answers = {}
        with self._counted:
            # Kept only if no write ran while the table was read: one that did may or may not
            # be in `counted`, and its own rows would be added to it again.
            if sequence % 2 == 0 and sequence == self._write_sequence:
                self._kept.setdefault(job_id, _KeptCounts(counted, answers))
        return counted

    def count_analyses(self, job_id: str | None = None) -> int:
        """Stored provider answers, over everything or one job."""
        _, analyses = self._tables()
        return int(analyses.count_rows(_eq("job_id", job_id) if job_id else None))

    def classifications(self, job_id: str) -> dict[str, int]:
        """Stored variants per merged classification for one job, counted on one column."""
        variants, _ = self._tables()
        column = variants.search().where(_eq("job_id", job_id)).select(["classification"]).limit(None)
        counted = column.to_arrow().column("classification").value_counts()
        return {str(entry["values"]): int(entry["counts"]) for entry in counted.to_pylist()}

    def provider_counts(
        self, job_id: str, providers: Iterable[str] = ()
    ) -> dict[str, events_pb2.ProviderCounts]:
        """Each provider's answers over one job's stored variants: ok, failed, and missing.

        Counted on the keyed rows (one per variant and provider), so replays never inflate
        them. A provider is missing for a variant stored partial without its answer.
        `providers`, the names expected, lets the store count rows instead of reading them
        (~10x faster); an answer from a provider not named is found and everything is read.
        A job whose answers the writes kept since it had none (see count) is not read at all:
        the four reads cost a 10,000-variant job's end 11-16 ms (2026-12-06).
        """
        with self._counted:
            known = self._kept.get(job_id)
            kept = None if known is None or known.answers is None else known.answers.items()
            if kept is not None:
                return {
                    provider: events_pb2.ProviderCounts(ok=ok, failed=failed, missing=missing)
                    for provider, (ok, failed, missing) in kept
                    if ok or failed or missing
                }
        variants, analyses = self._tables()
        job = _eq("job_id", job_id)
        counts: dict[str, events_pb2.ProviderCounts] = {}
        for provider in providers:
            answers = f"{job} AND {_eq('provider', provider)}"
            ok = analyses.count_rows(f"{answers} AND status = 'ok'")
            counts[provider] = events_pb2.ProviderCounts(ok=ok, failed=analyses.count_rows(answers) - ok)
        if sum(c.ok + c.failed for c in counts.values()) != analyses.count_rows(job):
            counts = {}
            answers = analyses.search().where(job).select(["provider", "status"]).limit(None).to_arrow()
            grouped = answers.group_by(["provider", "status"]).aggregate([("status", "count")])
            for row in grouped.to_pylist():
                entry = counts.setdefault(row["provider"], events_pb2.ProviderCounts())
                if row["status"] == "ok":
                    entry.ok += row["status_count"]
                else:
                    entry.failed += row["status_count"]
        counts = {name: answers for name, answers in counts.items() if answers.ok or answers.failed}
        partial = variants.search().where(f"{job} AND partial").select(["missing_providers"]).limit(None)
        missing = pc.list_flatten(partial.to_arrow().column("missing_providers"))
        for entry in missing.value_counts().to_pylist():
            counts.setdefault(entry["values"], events_pb2.ProviderCounts()).missing += entry["counts"]
        return counts

    def failure_reasons(self, job_id: str, provider: str, limit: int = 3) -> list[tuple[str, int]]:
        """The most frequent errors of one provider's failed answers in a job, with their counts."""
        _, analyses = self._tables()
        where = f"{_eq('job_id', job_id)} AND {_eq('provider', provider)} AND status <> 'ok'"
        errors = analyses.search().where(where).select(["error"]).limit(None).to_arrow().column("error")
        counted = sorted(
            ((str(e["values"]), int(e["counts"])) for e in errors.value_counts().to_pylist()),
            key=lambda reason: (-reason[1], reason[0]),
        )
        return counted[:limit]

    def get(self, correlation_id: str, tenant_id: str = "") -> query_pb2.StoredVariant | None:
        """One variant with its genotypes and every provider's answer; of `tenant_id` only, if given."""
        found = self._fetch([correlation_id], tenant_id)
        return found[0] if found else None

    def query(self, request: VariantQuery) -> tuple[list[query_pb2.StoredVariant], int]:
        """Variants matching every given filter in file order, one page, and the total.

        The page ends early where its next variant would take it past `max_bytes`: a variant of
        a file with thousands of samples carries every genotype.

        A query naming a sample reads the carriers table (one indexed row per carrier call,
        with the variant's filter columns) instead of every variant's list of carriers. The
        total is counted on the scalar indexes, without reading the matched rows.
        """
        variants, _ = self._tables()
        table = self._carriers if request.sample else variants
        where = _where(request)
        total = int(table.count_rows(where or None))
        if request.offset >= total:
            return [], total
        first = min(request.offset + request.limit, total)
        matched = None
        if total > self._read_every_match_up_to and not _counting_costs_more(table, total):
            matched = _first_matches(table, where, first)
        if matched is None:
            keys = table.search().select(_KEY_COLUMNS).with_row_id(True)
            if where:
                keys = keys.where(where)
            matched = keys.limit(None).to_arrow()
            # Only the rows up to the page's end need ordering: a top-k selection, not a sort
            # of every match. The order is total (one row per tenant, file, record and ALT),
            # so ties never reorder pages.
            if matched.num_rows > first:
                matched = matched.take(pc.select_k_unstable(matched, k=first, sort_keys=_ORDER))
        page = matched.sort_by(_ORDER).slice(request.offset, request.limit)
        # A variants-table page is read by its rows' ids; a carriers-table page by its keys.
        row_ids = None if request.sample else page.column("_rowid").to_pylist()
        ids = page.column("correlation_id").to_pylist()
        fetched = self._fetch(ids, request.tenant_id, row_ids, max_bytes=request.max_bytes, places=page)
        return fetched, total

    def carrier_calls(self, job_id: str) -> pa.Table:
        """One job's rows of the carriers table (CARRIER_SCHEMA), in no particular order."""
        return self._carriers.search().where(_eq("job_id", job_id)).limit(None).to_arrow()

    def _lookup(self, analyses: Any, places: pa.Table, tenant: str, near: str) -> Future[pa.Table] | None:
        """The answers at `places` (see _answers), looked up on the lookup threads; None once the
        store is closed (the caller then looks them up itself, after the rows)."""
        lookups = self._lookups
        if lookups is None:
            return None
        try:
            return lookups.submit(_answers, analyses, places, tenant, near)
        except RuntimeError:
            # Closed between the read of _lookups and the submit.
            return None

    def _tables(self) -> tuple[Any, Any]:
        if self._variants is None:
            raise RuntimeError("LanceStore is not open")
        return self._variants, self._analyses

    def _compaction_due(self, variants: Any, analyses: Any) -> bool:
        tables = (variants, analyses, self._carriers)
        return max(_fragments(table) for table in tables) >= self._policy.max_fragments

    def _compact(self) -> None:
        variants, analyses = self._tables()
        tables = {_VARIANTS: variants, _ANALYSES: analyses, _CARRIERS: self._carriers}
        if self._before_compaction is not None:
            self._before_compaction()
        # Row counts come from the fragments' metadata: nothing is read.
        counts = {name: int(table.count_rows()) for name, table in tables.items()}
        rows = ", ".join(f"{name} {count:,}" for name, count in counts.items())
        log.info("compacting LanceDB after %d writes (rows: %s)", self._writes_since_compaction, rows)
        took = {}
        parts = {}
        with returning_freed_memory():
            for name, table in tables.items():
                began = time.monotonic()
                parts[name] = len(_compact_in_parts(table))
                # What is left: new rows into the indexes, old versions dropped, and any large
                # fragment with deleted rows rewritten.
                table.optimize(cleanup_older_than=self._policy.keep_versions)
                took[name] = time.monotonic() - began
        seconds = ", ".join(f"{name} {took[name]:.1f} ({parts[name]} parts)" for name in tables)
        log.info("compacted LanceDB in %.1f s (%s; rows: %s)", sum(took.values()), seconds, rows)
        self._writes_since_compaction = 0

    def _fetch(
        self,
        ids: list[str],
        tenant_id: str,
        row_ids: list[int] | None = None,
        *,
        max_bytes: int = 0,
        places: pa.Table | None = None,
    ) -> list[query_pb2.StoredVariant]:
        """The variants with these ids, in this order; of `tenant_id` only (a store filter) if given.
        With `max_bytes`, the leading ones within that many serialized bytes (at least one).

        Rows become messages a few at a time, so those past the budget are hardly converted: 2 MiB
        holds a few dozen 2,504-sample variants of the 100 asked for, and converting the rest
        (their genotypes and answers) was most of the page's time.

        `row_ids`, the variants' rows as a query just read them, are taken directly (measured on
        a 5M store: 100 rows in 2.9 ms, where the `IN` list of their ids took 13 ms) unless a
        compaction has renumbered the rows since, which the ids of the rows taken show.

        `places`, the variants' keys as the query read them (their files and records), lets
        their answers be looked up while their rows are read (on a 5M-variant store each took
        6-18 ms of a new page, one after the other), and their rows be found by their records'
        ranges where `row_ids` are not theirs (`_variants_near`).
        """
        if not ids:
            return []
        variants, analyses = self._tables()
        tenant = _eq("tenant_id", tenant_id) if tenant_id else ""
        # Answers are searched by place only where every one stored has its place (`_answers`).
        placed = self._answers_placed
        looked_up = None
        near = ""
        if places is not None:
            near = _near(places, len(ids))
            looked_up = self._lookup(analyses, places, tenant, near if placed else "")
        rows = _taken(variants, row_ids, ids, tenant_id) if row_ids is not None else None
        if rows is None and near:
            rows = _variants_near(variants, near, ids, tenant_id)
        if rows is None:
            key_set = _all_of(_in("correlation_id", ids), tenant)
            rows = variants.search().where(key_set).select(_PAGE_COLUMNS).limit(None).to_arrow()
        if looked_up is not None:
            answers = looked_up.result()
        else:
            answers = _answers(analyses, rows, tenant, _near(rows, rows.num_rows) if placed else "")
        answers = answers.sort_by([("correlation_id", "ascending"), ("provider", "ascending")])
        answers_of: dict[str, list[dict[str, Any]]] = {}
        for answer in answers.to_pylist():
            answers_of.setdefault(answer["correlation_id"], []).append(answer)
        row_of = {cid: at for at, cid in enumerate(rows.column("correlation_id").to_pylist())}
        ordered = [row_of[cid] for cid in ids if cid in row_of]
        page: list[query_pb2.StoredVariant] = []
        used = 0
        for start in range(0, len(ordered), _CONVERTED_TOGETHER):
            for row in rows.take(ordered[start : start + _CONVERTED_TOGETHER]).to_pylist():
                answered = answers_of.get(row["correlation_id"], [])
                stored = _stored_variant(row, [_stored_analysis(answer) for answer in answered])
                used += stored.ByteSize()
                if max_bytes and used > max_bytes and page:
                    return page
                page.append(stored)
        return page


# How far a LanceDB scan reads ahead of what it returns, on a local disk. Lance sizes its scan
# I/O buffer for object storage: 2 GiB of queued reads by default (~256 concurrent 8 MiB
# reads to keep S3 busy), and a local disk fills all of it at once. Compaction scans every
# fragment it rewrites, so the writer's resident memory rose by whatever the buffer held
# while compacting (the writer's peak in `vcf-agent bench load` is its compaction). 16 MiB
# still keeps a local disk busy; an object store keeps Lance's default, which it needs.
LANCE_SCAN_READ_AHEAD_VARIABLE = "LANCE_DEFAULT_IO_BUFFER_SIZE"
LOCAL_SCAN_READ_AHEAD_BYTES = 16 * 1024 * 1024


def bound_scan_read_ahead() -> bool:
    """Bound Lance's scan read-ahead for local-disk stores, unless the operator set it; True if set.

    Lance reads the variable once per process, at its first scan (lance 13's
    `DEFAULT_IO_BUFFER_SIZE`, a LazyLock), so this runs before a store is opened. Process-wide:
    a local store's bound also applies to an object store opened later in the same process.
    It is Lance's own variable (as OTEL_* are OpenTelemetry's), configured only through the
    environment, so it is not a setting of ours: the writer fills in a default, never reads one.
    """
    if LANCE_SCAN_READ_AHEAD_VARIABLE in os.environ:
        return False
    os.environ[LANCE_SCAN_READ_AHEAD_VARIABLE] = str(LOCAL_SCAN_READ_AHEAD_BYTES)
    return True


# LanceDB's index and metadata caches; without a bound they keep every version's entries
# (measured: 61 MB after 1M variants written in 10k batches, growing with the store).
_INDEX_CACHE_BYTES = 256 << 20
_METADATA_CACHE_BYTES = 128 << 20


# The keys: a correlation id is a hex digest, and the analysis and call ids are one followed by
# a provider or a sample. Lance's default for strings (FSST) spent about half of an append's CPU
# on these unique strings: a 2,000-variant single-sample batch appended in 7.2 ms (variants),
# 8.7 (analyses) and 8.2 (carriers) with it, 4.5, 3.7 and 2.8 with lz4; a 500-sample batch's
# carriers in 47 ms instead of 62. lz4 leaves a digest as large as it is (single-sample variants
# took 3.6 MB on disk instead of 3.0) but packs the carriers' repeated prefixes better than FSST
# did (500 samples: 26 MB instead of 46). Measured with lancedb 0.40 on this project's machine.
_KEY_ENCODING = {"lance-encoding:compression": "lz4"}
_ENCODED_KEYS = frozenset({"correlation_id", "analysis_id"})


def _stored_schema(schema: pa.Schema) -> pa.Schema:
    """`schema` as a new table stores it: its keys encoded with `_KEY_ENCODING`.

    The rows written keep the plain schema; a table's own schema decides how its files encode them.
    """
    return pa.schema(
        [
            field.with_metadata({**(field.metadata or {}), **_KEY_ENCODING})
            if field.name in _ENCODED_KEYS
            else field
            for field in schema
        ],
        metadata=schema.metadata,
    )


def _bounded_session() -> lancedb.Session:
    return lancedb.Session(
        index_cache_size_bytes=_INDEX_CACHE_BYTES, metadata_cache_size_bytes=_METADATA_CACHE_BYTES
    )


# The variants' columns a page returns (`_stored_variant`). Reading only these saves the others'
# share of a page's reads (each ~1.4 ms per 100 rows taken on a 5M-variant store; `alt_index`, one
# value throughout, ~4 ms in a store from before `_FILE_FORMAT`).
_PAGE_COLUMNS = [
    "correlation_id",
    "job_id",
    "tenant_id",
    "file_id",
    "record_index",
    "chromosome",
    "position",
    "reference",
    "alternate",
    "variant_id",
    "quality",
    "filters",
    "classification",
    "priority_tier",
    "gene",
    "variant_class",
    "partial",
    "genotypes",
]


# Rows a page turns into Python values at a time: one at a time cost a single-sample page of
# 100 rows 3.4 ms more than all at once, which converted a 2,504-sample page past its budget.
_CONVERTED_TOGETHER = 8


def _stored_ids(variants: Any, ids: pa.ChunkedArray, maybe_stored: pa.ChunkedArray | None) -> pa.ChunkedArray:
    """Which of `ids` (those of `maybe_stored`, if given) the variants table holds."""
    asked = ids if maybe_stored is None else maybe_stored
    found = [
        variants.search()
        .where(_in("correlation_id", asked.slice(start, _LOOKUP_IDS).to_pylist()))
        .select(["correlation_id"])
        .limit(None)
        .to_arrow()
        .column(0)
        for start in range(0, len(asked), _LOOKUP_IDS)
    ]
    return pa.chunked_array([chunk for column in found for chunk in column.chunks], pa.string())


# Ids per lookup: one filter of 1,000 ids stays a short string for LanceDB to parse.
_LOOKUP_IDS = 1_000


def _store(
    table: Any, key: str, data: pa.Table, maybe_stored: pa.ChunkedArray | None
) -> tuple[pa.Table, bool]:
    """Append the rows of variants known to be new, upsert the others on `key`.

    Returns the rows appended, and whether any were merged.
    """
    fresh = data.slice(0, 0)
    if maybe_stored is not None:
        if len(maybe_stored):
            maybe = pc.is_in(data.column("correlation_id"), value_set=maybe_stored)
            fresh, data = data.filter(pc.invert(maybe)), data.filter(maybe)
        else:
            fresh, data = data, data.slice(0, 0)
        if fresh.num_rows:
            table.add(fresh)
    if data.num_rows:
        # Looking keys up in LanceDB first (BTREE) cost more than this merge.
        table.merge_insert(key).when_matched_update_all().when_not_matched_insert_all().execute(data)
    return fresh, bool(data.num_rows)


def _store_carriers(table: Any, carriers: pa.Table, stored_before: pa.ChunkedArray) -> None:
    """Append the carrier rows; those of the variants `stored_before` replace the rows they had.

    A variant's carrier calls are fixed by its correlation id (a digest of tenant, file content,
    record and allele), but a replay may change the variant columns copied beside them (its job,
    gene or classification), so its rows are deleted by correlation id (indexed) and added again.
    The rows once had a key of their own per call (correlation id + ':' + sample) to merge on:
    building and storing that string cost cohort-500's LanceDB writes ~70 us of CPU per variant
    of ~475 (2026-12-06), and its index more at every compaction, for a merge only replays need.
    A crash between the delete and the add leaves the variant stored without carriers; its batch
    comes again (the bus offsets are committed after every store took it), finds it stored, and
    adds them.
    """
    for start in range(0, len(stored_before), _LOOKUP_IDS):
        table.delete(_in("correlation_id", stored_before.slice(start, _LOOKUP_IDS).to_pylist()))
    if carriers.num_rows:
        table.add(carriers)


_KEY_COLUMNS = ["correlation_id", *(column for column, _ in _ORDER)]


def _first_matches(table: Any, where: str, first: int, files_back: int = 2) -> pa.Table | None:
    """Keys of a prefix, in file order, of the matches holding at least their first `first`.

    Found on the indexes, reading about `first` rows, or None when the caller must read every
    match. Rows are stored in the order the writer received them: file order for one file at a
    time, so the first matches in storage order are usually the page, proven when exactly
    `first - 1` matches sort before the last of them. The pipeline's services deliver a job's
    writes out of file order, though (a genome's first 100 sample+gene matches as stored were
    not its first 100 of 229,412), and then the page is bounded by counting instead: the matches
    in files before the last one's, and the record of that file by which `first` have come
    (`_record_bound`). `files_back` bounds how many earlier files this follows before giving up.
    """
    leading = table.search().select(_KEY_COLUMNS).with_row_id(True)
    if where:
        leading = leading.where(where)
    found: pa.Table = leading.limit(first).to_arrow()
    if found.num_rows < first:
        return None
    last = found.sort_by(_ORDER).slice(first - 1, 1).to_pylist()[0]
    tenant, file, record, alt = (last[column] for column, _ in _ORDER)
    earlier_files = (
        f"(tenant_id < {_literal(tenant)} OR ({_eq('tenant_id', tenant)} AND file_id < {_literal(file)}))"
    )
    same_file = f"{_eq('tenant_id', tenant)} AND {_eq('file_id', file)}"
    before = (
        f"({earlier_files} OR ({same_file} AND (record_index < {int(record)}"
        f" OR (record_index = {int(record)} AND alt_index < {int(alt)}))))"
    )
    if int(table.count_rows(_all_of(where, before))) == first - 1:
        return found
    in_earlier_files = int(table.count_rows(_all_of(where, earlier_files)))
    if in_earlier_files >= first:
        # The page lies in files stored after this one's rows (files interleaved).
        if not files_back:
            return None
        return _first_matches(table, _all_of(where, earlier_files), first, files_back - 1)
    of_file = pc.and_(pc.equal(found.column("tenant_id"), tenant), pc.equal(found.column("file_id"), file))
    read = pc.min_max(pc.filter(found.column("record_index"), of_file)).as_py()
    first_read, last_read = int(read["min"]), int(read["max"])
    bound = _record_bound(
        table,
        _all_of(where, same_file),
        first - in_earlier_files,
        int(record),
        from_record=first_read,
        density=int(pc.sum(of_file).as_py()) / (last_read - first_read + 1),
    )
    prefix = f"({earlier_files} OR ({same_file} AND record_index <= {bound}))"
    keys: pa.Table = (
        table.search()
        .select(_KEY_COLUMNS)
        .with_row_id(True)
        .where(_all_of(where, prefix))
        .limit(None)
        .to_arrow()
    )
    # Rows written between the counts and this read can only add to the prefix.
    return keys if keys.num_rows >= first else None


def _counting_costs_more(table: Any, matches: int) -> bool:
    """Whether paging on counts (`_first_matches`) would cost more than reading every match.

    A count is answered on the indexes only for the rows they cover; the rows written since the
    last compaction, which a genome's whole job leaves to idle time, are scanned by every count.
    Measured on 1M unindexed single-sample rows (2026-12-05): a count took ~90 ms (90 ns a row);
    sample + gene pages (46,000 matches each) took 512-584 ms (median of 8) paging on counts and
    274-310 read whole. A match read costs ~2.5 us (a 5M genome's 230,000 gene matches in
    ~600 ms, indexed), so once indexed, counting wins again.
    """
    unindexed = _unindexed_rows(table)
    return matches * _READ_NS_PER_MATCH < _PAGING_COUNTS * unindexed * _COUNT_NS_PER_UNINDEXED_ROW


def _unindexed_rows(table: Any) -> int:
    """Rows the table's indexes do not cover yet (~1 ms to ask): those of its key index, which
    compaction brings up to date with every other."""
    stats = table.index_stats(_COVERAGE_INDEX)
    return int(stats.num_unindexed_rows) if stats is not None else 0


# Every table has an index on correlation_id (see LanceStore.open).
_COVERAGE_INDEX = "correlation_id_idx"
# The costs `_counting_costs_more` weighs (measurements in its docstring); the counts a page
# takes beyond the total's: the check of the rows read, and two or more of `_record_bound`'s.
_READ_NS_PER_MATCH = 2_500
_COUNT_NS_PER_UNINDEXED_ROW = 90
_PAGING_COUNTS = 4


# How many matches beyond the page `_record_bound` may let through: each costs a random
# read of its keys (1-8 us), each search step an index count (a few ms).
_BOUND_SLACK = 1_000


def _record_bound(
    table: Any, in_file: str, need: int, at_most: int, *, from_record: int = 0, density: float = 0.0
) -> int:
    """A record index by which `need` to `need + _BOUND_SLACK` of the file's matches have come.

    `at_most` is a record by which at least `need` have come. An interpolation search on
    `count_rows`, which the indexes answer without reading rows: aimed at the middle of the
    window, as if the matches were spread evenly between the two records known so far (a
    gene's carriers are dense within it, a region's too), and halving instead whenever a step
    did not halve the range, so a skewed spread costs at most twice a bisection's steps. Ends
    when the window is hit or one record remains (a record with more ALTs than the slack).

    `from_record`, a record holding a match (the first rows read hold some), brackets the
    search: one count of the matches before it, so that a region or gene whose matches start
    deep in the file is not searched for from the file's start (that cost a 5M genome's 1 Mb
    region page ~14 ms of counts).

    `density`, matches per record among the rows read from `from_record` on, aims the first
    step from that record rather than as if the matches were spread from the file's start:
    a region deep in the file is dense around it and empty before it (measured on a 100,000-
    variant store written out of order, a 1 Mb region's page took 7 counts, 5 of them
    landing before its first match; with the density, 2).
    """
    aim = need + _BOUND_SLACK // 2
    low, at_low = -1, 0
    high, at_high = at_most, -1
    if 0 < from_record <= at_most:
        before = int(table.count_rows(f"{in_file} AND record_index < {from_record}"))
        if before < need:
            low, at_low = from_record - 1, before
            guess = low + math.ceil((aim - at_low) / density) if density > 0 else high
        else:
            high, at_high = from_record - 1, before
            guess = high - math.ceil((at_high - aim) / density) if density > 0 else low
        if low < guess < high and (at_high < 0 or at_high > need + _BOUND_SLACK):
            counted = int(table.count_rows(f"{in_file} AND record_index <= {guess}"))
            if counted < need:
                low, at_low = guess, counted
            elif counted <= need + _BOUND_SLACK:
                return guess
            else:
                high, at_high = guess, counted
    if at_high < 0:
        at_high = int(table.count_rows(f"{in_file} AND record_index <= {high}"))
    interpolate = True
    while at_high > need + _BOUND_SLACK and high - low > 1:
        width = high - low
        halfway = low + width // 2
        guess = low + round((aim - at_low) * width / (at_high - at_low)) if interpolate else halfway
        guess = min(max(guess, low + 1), high - 1)
        counted = int(table.count_rows(f"{in_file} AND record_index <= {guess}"))
        if counted < need:
            low, at_low = guess, counted
        else:
            high, at_high = guess, counted
            if counted <= need + _BOUND_SLACK:
                break
        interpolate = (high - low) * 2 <= width
    return high


def _answers(analyses: Any, places: pa.Table, tenant: str, near: str) -> pa.Table:
    """The provider answers of the variants whose keys are `places`, within the `tenant` filter.

    By key, 100 random correlation ids cost a B-tree block each (4,096 keys read and decoded):
    a new page's answers took 47-65 ms of its 62-78 on a 5M-variant store, 7 ms only when the
    same page was asked again. A page's variants lie near one another in their files, so where
    every answer stored carries its variant's place, their answers are read as the ranges of
    records `near` (`_near`) and kept by key. A variant's answers all share its place, so one
    found so has them all; the others (variants without answers, or all of them when `near` is
    "": records too far apart, or a store from before the places) are looked up by key.
    """
    if not places.num_rows:
        empty: pa.Table = analyses.schema.empty_table()
        return empty
    ids = places.column("correlation_id").unique()
    found = []
    if near:
        read: pa.Table = analyses.search().where(_all_of(near, tenant)).limit(None).to_arrow()
        found.append(read.filter(pc.is_in(read.column("correlation_id"), value_set=ids)))
    if found:
        answered = found[0].column("correlation_id").combine_chunks()
        missing = ids.filter(pc.invert(pc.is_in(ids, value_set=answered)))
    else:
        missing = ids
    if len(missing):
        by_key = _all_of(_in("correlation_id", missing.to_pylist()), tenant)
        found.append(analyses.search().where(by_key).limit(None).to_arrow())
    return pa.concat_tables(found, promote_options="default")


def _variants_near(variants: Any, near: str, ids: list[str], tenant_id: str) -> pa.Table | None:
    """The variants `ids`, found among the ranges of records `near` (`_near`); None where some
    are not found so (the caller then looks them up by key).

    A sample's page is found in the carriers table, whose row ids are not the variants': their
    100 ids by key took 37-92 ms of a new sample + gene page on a 5M-variant store. The ranges'
    keys are read first and the page's rows taken by id, as a cohort's rows carry every genotype.
    """
    tenant = _eq("tenant_id", tenant_id) if tenant_id else ""
    keys: pa.Table = (
        variants.search()
        .where(_all_of(near, tenant))
        .select(["correlation_id"])
        .with_row_id(True)
        .limit(None)
        .to_arrow()
    )
    mine = keys.filter(pc.is_in(keys.column("correlation_id"), value_set=pa.array(ids, pa.string())))
    if mine.num_rows != len(ids):
        return None
    return _taken(variants, mine.column("_rowid").to_pylist(), ids, tenant_id)


# A page's records are read as one range while they lie no more than this far apart, and
# through ranges at all only while what lies between them is at most `_NEAR_RECORDS` per
# variant of the page, in at most `_RANGES` ranges: past these, a key apiece costs less than
# reading the answers of the records between (~1 us each, a B-tree block ~0.5 ms).
_RANGE_GAP = 512
_NEAR_RECORDS = 64
_RANGES = 16


def _near(places: pa.Table, variants: int) -> str:
    """A filter for the records of `places` (file and record columns), their neighbours with
    them, or "" when they lie too far apart (`_record_ranges`)."""
    return " OR ".join(
        f"({_eq('file_id', file)} AND record_index BETWEEN {first} AND {last})"
        for file, first, last in _record_ranges(places, variants)
    )


def _record_ranges(places: pa.Table, variants: int) -> list[tuple[str, int, int]]:
    """(file, first, last record) ranges holding the records of `places`, or [] when too spread."""
    ordered = places.select(["file_id", "record_index"]).group_by(["file_id", "record_index"]).aggregate([])
    ordered = ordered.sort_by([("file_id", "ascending"), ("record_index", "ascending")])
    ranges: list[tuple[str, int, int]] = []
    for file, record in zip(
        ordered.column("file_id").to_pylist(), ordered.column("record_index").to_pylist(), strict=True
    ):
        if ranges and ranges[-1][0] == file and record - ranges[-1][2] <= _RANGE_GAP:
            ranges[-1] = (file, ranges[-1][1], record)
        else:
            ranges.append((file, record, record))
    spanned = sum(last - first + 1 for _, first, last in ranges)
    return ranges if len(ranges) <= _RANGES and spanned <= _NEAR_RECORDS * variants else []


def _place_answers(analyses: Any) -> bool:
    """Whether every answer stored carries its variant's place (see `_answers`).

    An answers table created before the place columns gets them, added empty without rewriting
    its rows; its answers are then found by key, as before: a variant stored then may get another
    provider's answer later, and one answer with a place would hide its others without one.
    """
    have = set(analyses.schema.names)
    absent = [field for field in ANALYSIS_SCHEMA if field.name not in have]
    if absent:
        analyses.add_columns(absent)
        return int(analyses.count_rows()) == 0
    return int(analyses.count_rows("record_index IS NULL")) == 0


def _taken(table: Any, row_ids: list[int], ids: list[str], tenant_id: str) -> pa.Table | None:
    """The rows at `row_ids` if they are still the variants `ids` (of `tenant_id`, if given), else None."""
    try:
        rows: pa.Table = table.take_row_ids(row_ids).select(_PAGE_COLUMNS).to_arrow()
    except (OSError, RuntimeError, ValueError):  # a row id a compaction has since retired
        return None
    if sorted(rows.column("correlation_id").to_pylist()) != sorted(ids):
        return None
    if tenant_id and not pc.all(pc.equal(rows.column("tenant_id"), tenant_id)).as_py():
        return None
    return rows


def _all_of(*clauses: str) -> str:
    return " AND ".join(f"({clause})" for clause in clauses if clause)


def _drop_call_ids(carriers: Any) -> None:
    """Drop the per-call key (`call_id`) of a carriers table written before 2026-12-06.

    Its rows are kept as they are (dropping a column rewrites no data); its index goes first,
    and the mark that the table was filled moves to `correlation_id` before the column goes,
    so a crash part way leaves a table this opens again.
    """
    if _OLD_CALL_KEY not in carriers.schema.names:
        return
    if _marked_filled(carriers, _OLD_CALL_KEY):
        _mark_filled(carriers)
    for index in carriers.list_indices():
        if _OLD_CALL_KEY in index.columns:
            carriers.drop_index(index.name)
    carriers.drop_columns([_OLD_CALL_KEY])


_OLD_CALL_KEY = "call_id"


def _fill_carriers(variants: Any, carriers: Any) -> None:
    """Fill the carriers table from the variants of a store written before it existed.

    Done once per store: a mark in the table's schema says the fill finished, so a fill
    a crash cut short is started over, and a new store is marked while still empty.
    """
    if _marked_filled(carriers, _FILL_MARKED):
        return
    carriers.delete("true")
    columns = sorted({*VARIANT_COLUMNS, "genotypes", "carriers"})
    filled = 0
    for batch in variants.search().select(columns).limit(None).to_batches(_FILL_BATCH_ROWS):
        found = carrier_rows(pa.Table.from_batches([batch]))
        if found.num_rows:
            carriers.add(found)
            filled += 1
    if filled > 1:
        carriers.optimize()
    _mark_filled(carriers)


def _marked_filled(carriers: Any, field: str) -> bool:
    """Whether `field`'s metadata holds the mark of a finished fill."""
    return bool((carriers.schema.field(field).metadata or {}).get(_FILLED.encode()))


def _mark_filled(carriers: Any) -> None:
    """Mark the carriers table filled (on _FILL_MARKED's metadata), for _marked_filled to read."""
    carriers.update_field_metadata({"path": _FILL_MARKED, "metadata": {_FILLED: "1"}})


_FILLED = "vcf_agent.carriers_filled"
# The field whose metadata holds _FILLED.
_FILL_MARKED = "correlation_id"
_FILL_BATCH_ROWS = 50_000


# Source rows a compaction commits at most at once (two of Lance's 1 MiRow target fragments).
# A compaction holds every row it rewrites until its commit, whether the indexes cover them or
# not: a 2,504-sample cohort's 27.9M carrier rows, compacted at once when the writer's input went
# idle, took the writer from ~900 MB to 1,834-1,991 MB, its peak over the job (2026-12-06). On
# 10M and 20M synthetic carrier rows (ten indexes, none covering them), compacting at once
# peaked at 1,005 and ~1,600 MB, in parts of 2M rows at 586 and 588 MB, in the same time; the
# indexes' update that follows peaked at 624 and 824 MB (986 and 1,622 MB, 18.5 and 39.5 s, for
# LanceDB's optimize alone against 17.6 and 34.5 s in all).
_COMPACTION_PART_ROWS = 2 << 20
_TARGET_FRAGMENT_ROWS = 1 << 20


def _compact_in_parts(table: Any) -> list[int]:
    """Merge the table's small fragments, committing at most `_COMPACTION_PART_ROWS` source rows
    at a time; returns the rows of each part. Through the `lance` package: LanceDB's optimize
    compacts every small fragment in one commit and takes no bound.
    """
    parts: list[int] = []
    # Each part leaves fewer fragments or more full ones, so this ends; the bound is for a plan
    # of Lance's that merges nothing.
    for _ in range(_fragments(table)):
        dataset = table.to_lance()
        sizes = [
            (fragment.fragment_id, fragment.metadata.physical_rows) for fragment in dataset.get_fragments()
        ]
        part = _next_part(sizes, _COMPACTION_PART_ROWS)
        if not part:
            break
        # Excluded fragments are left as they are and bound the plan Lance makes around them.
        chosen = set(part)
        metrics = dataset.optimize.compact_files(
            excluded_fragment_ids=[fragment for fragment, _ in sizes if fragment not in chosen],
            target_rows_per_fragment=_TARGET_FRAGMENT_ROWS,
        )
        table.checkout_latest()
        if not metrics.fragments_removed:
            break
        parts.append(sum(rows for fragment, rows in sizes if fragment in chosen))
    return parts


def _next_part(sizes: list[tuple[int, int]], most_rows: int) -> list[int]:
    """The fragments to compact next: the first run of two or more adjacent small fragments
    (`sizes`: id and rows in the table's order), cut where it would pass `most_rows` (it keeps
    two fragments at least), or [] when no run is left."""
    run: list[int] = []
    rows_in_run = 0
    for fragment, rows in [*sizes, (-1, _TARGET_FRAGMENT_ROWS)]:
        small = rows < _TARGET_FRAGMENT_ROWS
        if small and (len(run) < 2 or rows_in_run + rows <= most_rows):
            run.append(fragment)
            rows_in_run += rows
        elif len(run) >= 2:
            return run
        else:
            run, rows_in_run = ([fragment], rows) if small else ([], 0)
    return []


def _fragments(table: Any) -> int:
    # stats() is annotated as a dataclass but this lancedb returns a plain dict.
    stats: Any = table.stats()
    return int(stats["fragment_stats"]["num_fragments"])


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _eq(column: str, value: str) -> str:
    return f"{column} = {_literal(value)}"


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(_literal(v) for v in values)})"


def _where(request: VariantQuery) -> str:
    clauses = []
    if request.job_id:
        clauses.append(_eq("job_id", request.job_id))
    if request.tenant_id:
        clauses.append(_eq("tenant_id", request.tenant_id))
    if request.region:
        chrom, first, last = parse_region(request.region)
        clauses.append(_eq("chromosome", chrom))
        if first is not None and last is not None:
            clauses.append(f"position BETWEEN {first} AND {last}")
    if request.gene:
        clauses.append(_eq("gene", request.gene))
    if request.sample:
        # Asked of the carriers table, whose rows are the sample's carrier calls.
        clauses.append(_eq("sample", request.sample))
    if request.classification:
        clauses.append(_eq("classification", request.classification))
    return " AND ".join(clauses)


def _stored_analysis(answer: dict[str, Any]) -> query_pb2.StoredAnalysis:
    detail = analysis_pb2.AnalysisResult.FromString(answer["detail"])
    return query_pb2.StoredAnalysis(
        provider=answer["provider"],
        model=answer["model"],
        status=answer["status"],
        classification=answer["classification"],
        confidence=answer["confidence"],
        detail_json=json_format.MessageToJson(detail, indent=None),
    )


def _stored_variant(row: dict[str, Any], analyses: list[query_pb2.StoredAnalysis]) -> query_pb2.StoredVariant:
    return query_pb2.StoredVariant(
        correlation_id=row["correlation_id"],
        job_id=row["job_id"],
        tenant_id=row["tenant_id"],
        file_id=row["file_id"],
        chromosome=row["chromosome"],
        position=row["position"],
        reference=row["reference"],
        alternate=row["alternate"],
        variant_id=row["variant_id"],
        quality=row["quality"] if row["quality"] is not None else 0.0,
        filters=row["filters"],
        classification=row["classification"],
        priority_tier=row["priority_tier"],
        gene=row["gene"],
        variant_class=row["variant_class"],
        partial=row["partial"],
        record_index=row["record_index"],
        genotypes=[query_pb2.StoredGenotype(**call) for call in row["genotypes"]],
        analyses=analyses,
    )
