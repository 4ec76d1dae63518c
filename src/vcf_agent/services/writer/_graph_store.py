"""The variant graph in LadybugDB (the maintained Kuzu fork); every graph call lives here.

Schema (node key in brackets):
    File[tenant_id + '/' + content digest] (name, tenant_id) -- two tenants
        sending the same file own two File nodes.
    Sample[tenant_id + '/' + sample name] (name, tenant_id) -- samples are scoped
        by tenant, so the same sample across a tenant's files is one node and
        two tenants never share one.
    Variant[key: INT64 from the correlation id, see _graph_keys] (correlation_id,
        job_id, tenant_id, chrom, pos, ref, alt, classification, priority_tier, gene)
    Gene[symbol]
    Analysis[key: INT64, the variant's key XOR the provider's] (provider, model,
        classification, confidence, status)
    (Variant)-[:IN_FILE]->(File)
    (Variant)-[:CARRIED_BY]->(Sample)   carriers of the variant's ALT only; the calls are LanceDB's
    (Variant)-[:IN_GENE]->(Gene)
    (Variant)-[:ANALYZED_BY]->(Analysis)

Sized for whole genomes. The engine holds every primary-key hash index in
its buffer pool, so keys are what bound its memory: a Variant key is 8 bytes
(the 32-character correlation id as key filled a 1 GiB pool near 1.2M
variants), and so is an Analysis key (one per variant and provider). Edges exist only where they mean
something: a sample is linked to a variant when its genotype holds that ALT
allele; hom-ref calls, no-calls and calls of another ALT are not edges (a
cohort's genotypes are mostly hom-ref). LanceDB keeps every variant with
every call (the `genotypes` column) and each carrier's call (GT, DP, GQ) in
its carriers table, so nothing is lost; the graph answers "which samples
carry what". Its edges carry no properties: a CARRIED_BY edge with the call's
GT, DP and GQ cost the engine 7.8 us of CPU, a bare one 3.0-3.8 (910,000 edges
of 182 carriers per variant, 250-variant transactions), and a 2,504-sample
cohort makes 279 per variant.

Which variants the graph holds (issue 15: "keep in it what graph queries
need (genes, samples, files, analyses, and the variants that carry a verdict
or a gene) and document the rule; LanceDB keeps every variant and
genotype"). A variant enters the graph, with its IN_FILE, CARRIED_BY,
IN_GENE and ANALYZED_BY edges and Analysis nodes, only if it names a gene or
its merged classification is a verdict (GRAPH_VERDICTS: pathogenic, likely
pathogenic, likely benign, benign); uncertain_significance and not_classified
are not. Every File, Sample and Gene node stays. A genome's variants are
mostly neither (the 5M-variant run put the writer at 2.8 GB against its 2 GB
bound, and the graph was half of the writer's CPU). LanceDB stores every
variant, genotype and answer unchanged, and the variant queries (by sample,
gene, region) read LanceDB. A variant already in the graph stays there and
is updated by later writes, even if a later answer takes its verdict or gene
away; one that was left out enters it, with all its edges, when a later write
gives it a gene or verdict (re-analysis, a resubmitted job).

Knowing what LanceDB may hold. The writer appends the rows of variants new to
the stores and merges the rest (LanceDB's merge costs more as the table
grows), and the graph, committed first, used to tell which were new. Since it
no longer sees every variant, each File node keeps `written`: the ranges of
record indices of that file that committed batches held, as a flat list of
inclusive [first, last] pairs, extended in the batch's own transaction. A
variant whose record lies in none has never been written to either store; one
inside a range may have been, and goes through LanceDB's merge (and a graph
lookup, in case the graph holds it). Ranges, not a high-water mark: the five
services deliver a job's writes out of file order (answers come back from
several partitions), and a mark sent every late batch through the merge.
Ranges closer than _RANGE_GAP records are joined, so records that store no
variant (an ALT of `.`, a dead-lettered record) keep the list short; a range
only ever claims too much, which costs a merge, never a duplicate. Files of
stores written before the ranges existed read [0, INT64_MAX]: every record of
them may be stored.

Every relationship starts at the Variant and is stored forward only. A
relationship is stored in its source node's adjacency block; a few File,
Sample and Gene nodes collect every variant, so storing edges on their side
makes each commit rewrite one ever-growing block (measured: commit time grew
from 40 ms to 2 s within 20 batches). Stored on the Variant side, each batch
only fills fresh blocks and commit time stays flat. Queries still traverse
them in both directions.

Writes are LOAD FROM an Arrow table with MERGE/CREATE inside one explicit
transaction per batch: the batch is all-or-nothing (a crash mid-batch leaves
no half-written variant to confuse a retry), and these statements go through
the write-ahead log, so a committed batch survives a crash without a
checkpoint (COPY FROM does not, unless every commit checkpoints). A variant
node and its IN_FILE/CARRIED_BY/IN_GENE edges are created together; existing
variants only get their properties updated, and their gene edge is replaced
if the gene changed. An Analysis node and its edge are created together too.
So a replay creates no node or edge twice; a file's written ranges only ever grow.

Only one process may open the database for writing, so the writer service
owns it; everyone else reads through the writer's query API.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ladybug
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vcf_agent.lifecycle import AsyncComponent
from vcf_agent.schema import INT64_MAX
from vcf_agent.v1 import events_pb2

from ._graph_keys import analysis_keys, variant_key, variant_keys
from ._rows import WriteRows, build_rows

log = logging.getLogger(__name__)

_SCHEMA = (
    "CREATE NODE TABLE IF NOT EXISTS File(id STRING PRIMARY KEY, name STRING, tenant_id STRING)",
    # Files of a store from before the ranges: every record of them may be stored already.
    f"ALTER TABLE File ADD IF NOT EXISTS written INT64[] DEFAULT [0, {INT64_MAX}]",
    "CREATE NODE TABLE IF NOT EXISTS Sample(id STRING PRIMARY KEY, name STRING, tenant_id STRING)",
    "CREATE NODE TABLE IF NOT EXISTS Variant(key INT64 PRIMARY KEY, correlation_id STRING, job_id STRING,"
    " tenant_id STRING, chrom STRING, pos INT64, ref STRING, alt STRING, classification STRING,"
    " priority_tier STRING, gene STRING)",
    "CREATE NODE TABLE IF NOT EXISTS Gene(name STRING PRIMARY KEY)",
    "CREATE NODE TABLE IF NOT EXISTS Analysis(key INT64 PRIMARY KEY, provider STRING, model STRING,"
    " classification STRING, confidence DOUBLE, status STRING)",
    "CREATE REL TABLE IF NOT EXISTS IN_FILE(FROM Variant TO File) WITH (storage_direction='fwd')",
    # A store written before the calls left the graph keeps its edges' properties; new edges leave
    # them null.
    "CREATE REL TABLE IF NOT EXISTS CARRIED_BY(FROM Variant TO Sample) WITH (storage_direction='fwd')",
    "CREATE REL TABLE IF NOT EXISTS IN_GENE(FROM Variant TO Gene) WITH (storage_direction='fwd')",
    "CREATE REL TABLE IF NOT EXISTS ANALYZED_BY(FROM Variant TO Analysis) WITH (storage_direction='fwd')",
)

# Arrow column names are prefixed with `c_` so they never shadow a pattern variable.
# Each node is matched in its own MATCH clause: a comma-joined pattern is planned
# as a cross product of both tables, while separate clauses use primary-key
# lookups (tests assert the plans).
_MERGE_FILES = (
    "LOAD FROM $rows MERGE (f:File {id: c_id})"
    " ON CREATE SET f.name = c_name, f.tenant_id = c_tenant, f.written = CAST([] AS INT64[])"
)
_WRITTEN_RANGES = "LOAD FROM $rows MATCH (f:File {id: c_id}) RETURN f.id, f.written"
_SET_WRITTEN_RANGES = "LOAD FROM $rows MATCH (f:File {id: c_id}) SET f.written = c_written"
_MERGE_SAMPLES = (
    "LOAD FROM $rows MERGE (s:Sample {id: c_id}) ON CREATE SET s.name = c_name, s.tenant_id = c_tenant"
)
_MERGE_GENES = "LOAD FROM $rows MERGE (g:Gene {name: c_name})"
_EXISTING_VARIANTS = "LOAD FROM $rows MATCH (v:Variant {key: c_key}) RETURN v.key, v.gene"
_EXISTING_ANALYSES = "LOAD FROM $rows MATCH (a:Analysis {key: c_key}) RETURN a.key"
# A new variant and its file edge are one statement, so neither exists without the other.
_CREATE_VARIANTS = (
    "LOAD FROM $rows MATCH (f:File {id: c_file_key}) CREATE (v:Variant {key: c_key, correlation_id: c_id,"
    " job_id: c_job, tenant_id: c_tenant, chrom: c_chrom, pos: c_pos, ref: c_ref, alt: c_alt,"
    " classification: c_class, priority_tier: c_tier, gene: c_gene})-[:IN_FILE]->(f)"
)
_UPDATE_VARIANTS = (
    "LOAD FROM $rows MATCH (v:Variant {key: c_key}) SET v.job_id = c_job, v.classification = c_class,"
    " v.priority_tier = c_tier, v.gene = c_gene"
)
_CREATE_ANALYSES = (
    "LOAD FROM $rows MATCH (v:Variant {key: c_variant}) CREATE (v)-[:ANALYZED_BY]->(a:Analysis {key: c_key,"
    " provider: c_provider, model: c_model, classification: c_class, confidence: c_confidence,"
    " status: c_status})"
)
_UPDATE_ANALYSES = (
    "LOAD FROM $rows MATCH (a:Analysis {key: c_key}) SET a.model = c_model, a.classification = c_class,"
    " a.confidence = c_confidence, a.status = c_status"
)
# One row per variant with its carriers' Sample keys: the variant is looked up once, not once per
# edge (measured on cohort-500's batches: 318 -> 228 us per variant for ~180 edges each).
_CREATE_CARRIED_BY = (
    "LOAD FROM $rows MATCH (v:Variant {key: c_key}) UNWIND c_carriers AS sample_id"
    " MATCH (s:Sample {id: sample_id}) CREATE (v)-[:CARRIED_BY]->(s)"
)
_DELETE_IN_GENE = "LOAD FROM $rows MATCH (v:Variant {key: c_key}) MATCH (v)-[r:IN_GENE]->(:Gene) DELETE r"
_CREATE_IN_GENE = (
    "LOAD FROM $rows MATCH (v:Variant {key: c_key}) MATCH (g:Gene {name: c_to}) CREATE (v)-[:IN_GENE]->(g)"
)

# Merged classifications that put a variant without a gene into the graph (see the module
# docstring); uncertain_significance and not_classified are no verdict to query for.
GRAPH_VERDICTS = frozenset({"pathogenic", "likely_pathogenic", "likely_benign", "benign"})

_NODE_LABELS = ("File", "Sample", "Variant", "Gene", "Analysis")
_REL_TYPES = {
    "IN_FILE": "File",
    "CARRIED_BY": "Sample",
    "IN_GENE": "Gene",
    "ANALYZED_BY": "Analysis",
}


class GraphCapacityError(RuntimeError):
    """The graph engine cannot hold a batch in its buffer pool: retrying the same batch fails again."""


@dataclass(frozen=True, slots=True)
class GraphCounts:
    """Nodes and edges per label, for verification and the stats API."""

    files: int
    samples: int
    variants: int
    genes: int
    analyses: int
    in_file: int
    carried_by: int
    in_gene: int
    analyzed_by: int


@dataclass(slots=True)
class _Committed:
    """Nodes committed batches left in the graph that every later batch would otherwise MERGE or
    read again: each file with its written ranges, the samples and the genes.

    The writer is the graph's only writer (the engine admits one), so what it committed stays
    true until it commits again. A batch's additions join once its COMMIT returned; any failure
    forgets everything, because a COMMIT that raised may still have committed, and ranges known
    too short would have a later batch append a stored variant again. Measured on single-sample
    batches of 6,000 variants: the three MERGEs and the ranges read were 8 ms of a batch's 76.
    """

    ranges: dict[str, np.ndarray] = field(default_factory=dict)
    samples: set[str] = field(default_factory=set)
    genes: set[str] = field(default_factory=set)

    def absorb(self, added: _Committed) -> None:
        self.ranges.update(added.ranges)
        self.samples |= added.samples
        self.genes |= added.genes


class GraphStore(AsyncComponent):
    """The writer's graph: idempotent batch upserts and a few read queries.

    All methods except start/stop block and are meant for a worker thread
    (asyncio.to_thread); one lock serialises them over a single connection,
    because the database allows a single writer and a connection is not
    shared safely between threads.
    """

    def __init__(
        self,
        path: Path,
        *,
        buffer_pool_bytes: int = 1 << 30,
        checkpoint_bytes: int = 1 << 30,
        disk_reserve_bytes: int = 0,
    ) -> None:
        self._path = path
        self._buffer_pool_bytes = buffer_pool_bytes
        self._checkpoint_bytes = checkpoint_bytes
        self._disk_reserve_bytes = disk_reserve_bytes
        self._lock = threading.Lock()
        self._db: ladybug.Database | None = None
        self._conn: ladybug.Connection | None = None
        # A batch committed since the log was last folded into the file by checkpoint_if_written.
        self._written_since_checkpoint = False
        self._committed = _Committed()

    async def start(self) -> None:
        await asyncio.to_thread(self.open)

    async def stop(self) -> None:
        await asyncio.to_thread(self.close)

    def open(self) -> None:
        """Open (creating if needed) the database file and its schema."""
        with self._lock:
            if self._conn is not None:
                return
            self._path.parent.mkdir(parents=True, exist_ok=True)
            try:
                db = self._database(strict=True)
            except RuntimeError as exc:
                if "WAL file is corrupted" not in str(exc):
                    raise
                db = self._recover_torn_log(exc)
            conn = ladybug.Connection(db)
            for statement in _SCHEMA:
                conn.execute(statement)
            self._db, self._conn = db, conn
            self._committed = _Committed()

    def _recover_torn_log(self, exc: RuntimeError) -> ladybug.Database:
        """Open after a crash mid-write: replay the log's whole transactions, drop its torn tail.

        A writer killed while the engine wrote a transaction's log pages leaves a last record
        that fails its checksum (measured: SIGKILL mid-job, `Checksum verification failed, the
        WAL file is corrupted`, and the writer could never start again). Every COMMIT before
        it is whole in the log, and the torn transaction never committed, so its batch's
        bus offsets were never committed either (they are, only after both stores took the
        batch): the bus delivers it again and the upsert stores it once. The log as found is
        kept beside the database (one copy, the latest) for whoever audits the crash.
        """
        wal = self._path.with_name(self._path.name + ".wal")
        kept = wal.with_name(wal.name + ".torn")
        shutil.copyfile(wal, kept)
        log.warning(
            "graph %s: its write-ahead log ends in a torn record (%s), as a crash mid-write leaves it;"
            " replaying its committed transactions, the torn one comes again from the bus;"
            " the log as found is kept at %s",
            self._path,
            exc,
            kept,
        )
        return self._database(strict=False)

    def _database(self, *, strict: bool) -> ladybug.Database:
        return ladybug.Database(
            str(self._path),
            buffer_pool_size=self._buffer_pool_bytes,
            # One thread: the writer's statements scan one Arrow table each and did not run in
            # parallel (a batch's wall time equalled its CPU time with every core allowed), while
            # a second thread cost CPU on a machine the five services share. Measured 2026-12-06,
            # five processes on 2 cores, alternating: cohort-500 writer 865 against 894 us of CPU
            # per variant (five runs each), single 26.8 against 27.6 (two), the 5M genome 28,937
            # against 28,138 variants/s with the same peak RSS (one; its checkpoints no slower).
            max_num_threads=1,
            # Until a checkpoint folds the write-ahead log into the file, the engine keeps
            # the logged changes in malloc memory too, outside the buffer pool; a checkpoint
            # frees them. Measured, single-sample batches of 10k: malloc in use rose ~90 MB
            # before each 256 MiB checkpoint (~230k variants), ~40 MB before each 32 MiB one;
            # 64 MiB cost ~8% more graph CPU per variant than 256. A checkpoint's cost grows
            # with the graph: in a 5M-variant genome (five processes, 2026-12-05) 1 GiB against
            # 256 MiB took the writer from 34.0 to 29.4 us of CPU per variant (COMMIT, where
            # checkpoints run, was 24% of its CPU late in the job) at a peak of 1,389 MB
            # against 1,267, so writer_graph_checkpoint_bytes defaults to 1 GiB; at 1M
            # variants the two did not differ.
            checkpoint_threshold=self._checkpoint_bytes,
            # Not strict: replay up to the first record that fails its checksum.
            throw_on_wal_replay_failure=strict,
        )

    def close(self) -> None:
        """Close the connection and database; closing checkpoints the log into the file."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            if self._db is not None:
                self._db.close()
            self._db = self._conn = None

    def write(self, batch: Sequence[events_pb2.DatabaseWrite] | WriteRows) -> pa.ChunkedArray:
        """Upsert the batch's variants the graph keeps, in one transaction; replaying it changes nothing.

        Returns the correlation ids of the batch that either store may hold already (see
        `written` above); every other variant of the batch is new to both.
        """
        rows = batch if isinstance(batch, WriteRows) else build_rows(batch)
        if not len(rows):
            return pa.chunked_array([], pa.string())
        self._check_free_space()
        with self._lock:
            conn = self._connection()
            added = _Committed()
            conn.execute("BEGIN TRANSACTION")
            try:
                old_ids = self._write(conn, rows, self._committed, added)
                conn.execute("COMMIT")
                self._written_since_checkpoint = True
            except BaseException as exc:
                self._committed = _Committed()
                _rollback(conn)
                if "buffer pool is full" in str(exc):
                    raise GraphCapacityError(
                        f"the graph's buffer pool ({self._buffer_pool_bytes >> 20} MiB) cannot hold a batch"
                        f" of {len(rows)} variants: {exc}"
                    ) from exc
                raise
            finally:
                # Statements the engine prepared for this batch hold its Arrow input alive.
                _release_inputs(conn)
            self._committed.absorb(added)
        return old_ids

    def warm(self, rows: WriteRows) -> None:
        """Run a batch's statements once, on made-up rows (`warming_rows`), and roll them back.

        A process's first write cost ~25 ms of CPU more than a later one of the same size: the
        engine's first statements of each kind, Arrow compute kernels and numpy modules loaded
        on first use (2,000 single-sample variants: 64 ms against 24 for the next batch; after
        this, 35-46 ms, the rest being a new file's nodes). The writer calls it at start, so a
        fresh service's first job does not wait for it. Nothing is committed or logged: the
        write-ahead log is written at COMMIT.
        """
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN TRANSACTION")
            try:
                self._write(conn, rows, _Committed(), _Committed())
            finally:
                _rollback(conn)
                _release_inputs(conn)

    def checkpoint_if_written(self) -> bool:
        """Fold the write-ahead log into the database file if a batch was committed since; True if done.

        The writer calls this when its input is idle, so that closing (which checkpoints) has
        little left to do: after a 500,000-variant job close spent 18 s checkpointing up to
        writer_graph_checkpoint_bytes of log, past most of the shutdown grace period (measured
        again 2026-12-06 with forward-only edges: 4.4 s for a 900 MiB log over a graph of 3.09M
        single-sample variants, replayed in one process; 3.0 s for 916 MiB over 1.47M). It also
        frees the malloc memory the engine keeps for the uncheckpointed changes, which is why
        the writer calls it before every LanceDB compaction too. Skipped while
        the disk is under its reserve: a checkpoint rewrites pages, and the reserve is what
        keeps the engine's writes from failing.
        """
        with self._lock:
            if not self._written_since_checkpoint or self._conn is None:
                return False
            if self._disk_reserve_bytes and self._free_bytes() < self._disk_reserve_bytes:
                return False
            _single(self._conn.execute("CHECKPOINT")).close()
            self._written_since_checkpoint = False
            return True

    def _free_bytes(self) -> int:
        stats = os.statvfs(self._path.parent)
        return stats.f_bavail * stats.f_frsize

    def _check_free_space(self) -> None:
        """Refuse a batch while the disk is nearly full, before the engine can hit ENOSPC.

        The engine survives a statement that cannot write, but not a COMMIT whose write-ahead
        log write fails: it aborts the whole process (measured on a full tmpfs, `terminate
        called after throwing lbug::common::IOException`). Refusing here with ENOSPC lets the
        writer's consumer retry until space returns instead.
        """
        if not self._disk_reserve_bytes:
            return
        free = self._free_bytes()
        if free < self._disk_reserve_bytes:
            raise OSError(
                errno.ENOSPC,
                f"No space left on device for the graph: {free >> 20} MiB free in {self._path.parent},"
                f" under the {self._disk_reserve_bytes >> 20} MiB kept free for its write-ahead log",
            )

    def counts(self, job_id: str | None = None) -> GraphCounts:
        """Node and edge counts, over everything or only one job's variants."""
        with self._lock:
            conn = self._connection()
            if job_id is None:
                nodes = [_scalar(conn, f"MATCH (n:{label}) RETURN count(n)") for label in _NODE_LABELS]
                rels = [
                    _scalar(conn, f"MATCH (:Variant)-[r:{rel}]->(:{target}) RETURN count(r)")
                    for rel, target in _REL_TYPES.items()
                ]
            else:
                job = {"job": job_id}
                variants = _scalar(conn, "MATCH (v:Variant) WHERE v.job_id = $job RETURN count(v)", job)
                targets: list[int] = []
                rels = []
                for rel, target in _REL_TYPES.items():
                    query = (
                        f"MATCH (v:Variant)-[r:{rel}]->(n:{target}) WHERE v.job_id = $job"
                        " RETURN count(DISTINCT n), count(r)"
                    )
                    distinct, edges = _row(conn, query, job)
                    targets.append(distinct)
                    rels.append(edges)
                files, samples, genes, analyses = targets
                nodes = [files, samples, variants, genes, analyses]
        return GraphCounts(*nodes, *rels)

    def carriers(self, correlation_id: str, tenant_id: str) -> list[str]:
        """The names of the samples carrying one of the tenant's variants, in order."""
        with self._lock:
            result = _single(
                self._connection().execute(
                    "MATCH (v:Variant {key: $key})-[:CARRIED_BY]->(s:Sample)"
                    " WHERE v.tenant_id = $tenant AND v.correlation_id = $id"
                    " RETURN s.name ORDER BY s.name",
                    {"key": variant_key(correlation_id), "id": correlation_id, "tenant": tenant_id},
                )
            )
            return [row[0] for row in result.get_all() if isinstance(row, list)]

    def _connection(self) -> ladybug.Connection:
        if self._conn is None:
            raise RuntimeError("GraphStore is not open")
        return self._conn

    @staticmethod
    def _write(
        conn: ladybug.Connection, rows: WriteRows, known: _Committed, added: _Committed
    ) -> pa.ChunkedArray:
        file_keys = _file_keys(rows.variants)
        _merge_shared_nodes(conn, rows, file_keys, known, added)
        maybe_written, ranges = _written_before(
            conn, file_keys, rows.variants.column("record_index"), known, added
        )
        created, found = _upsert_variants(conn, rows, file_keys, maybe_written)
        _upsert_analyses(conn, rows.analyses, created, found)
        _run(conn, _SET_WRITTEN_RANGES, ranges)
        # What the graph holds lies in the ranges too: the batch that wrote it added them.
        return pc.filter(rows.variants.column("correlation_id"), maybe_written)


def _merge_shared_nodes(
    conn: ladybug.Connection,
    rows: WriteRows,
    file_keys: pa.ChunkedArray,
    known: _Committed,
    added: _Committed,
) -> None:
    """Files, samples and genes: few per batch and shared across batches, so MERGE, unless a
    committed batch is `known` to have left them. Samples and genes merged join `added`; files
    join it with their ranges (_written_before).

    Every file and sample stays, whichever of its variants the graph keeps.
    """
    keyed = rows.variants.append_column("file_key", file_keys)
    files = _distinct(
        keyed, "file_key", {"c_id": "file_key", "c_name": "source_name", "c_tenant": "tenant_id"}
    )
    _run(conn, _MERGE_FILES, _unknown(files, known.ranges.keys()))
    samples = _unknown(_distinct_samples(rows), known.samples)
    _run(conn, _MERGE_SAMPLES, samples)
    added.samples.update(samples.column("c_id").to_pylist())
    genes = rows.variants.column("gene")
    named = pa.table({"c_name": pc.unique(pc.filter(genes, pc.not_equal(genes, "")))})
    new_genes = _unknown(named, known.genes)
    _run(conn, _MERGE_GENES, new_genes)
    added.genes.update(new_genes.column("c_name").to_pylist())


def _unknown(nodes: pa.Table, known: Collection[str]) -> pa.Table:
    """The rows whose key (first column) is not among the `known` node keys."""
    if not known or not nodes.num_rows:
        return nodes
    keys = nodes.column(0).to_pylist()
    return nodes.filter(pa.array([key not in known for key in keys], pa.bool_()))


def _graph_keeps(variants: pa.Table) -> pa.ChunkedArray:
    """Which variants the graph holds (issue 15's rule): those naming a gene or carrying a verdict."""
    return pc.or_(
        pc.not_equal(variants.column("gene"), ""),
        pc.is_in(variants.column("classification"), value_set=_VERDICTS),
    )


def _upsert_variants(
    conn: ladybug.Connection, rows: WriteRows, file_keys: pa.ChunkedArray, maybe_written: pa.Array
) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """Create the kept variants new to the graph with all their edges; update the ones it holds.

    Only the variants a batch may have written before are looked up: the graph holds a variant
    only once a committed batch held it, so one outside its file's written ranges is in no
    store (a batch of new variants needs no lookup). `file_keys` are the variants' File node
    keys (_file_keys). Returns the correlation ids created and found.
    """
    keys = variant_keys(rows.variants.column("correlation_id"))
    computed = {"key": keys, "file_key": file_keys}
    variants = pa.table(
        {
            column: computed[column] if column in computed else rows.variants.column(column)
            for column in _VARIANT_PARAMETERS.values()
        }
    )
    kept = _graph_keeps(variants)
    found = _query_arrow(
        conn, _EXISTING_VARIANTS, pa.table({"c_key": pc.filter(keys, maybe_written)}), _FOUND_VARIANTS
    )
    if found.num_rows:
        is_old = pc.is_in(keys, value_set=found.column(0))
        create = pc.and_(kept, pc.invert(is_old))
        old = variants.filter(is_old)
    else:
        # The common case, a batch of new variants: no set lookups or copies.
        create, old = kept, variants.slice(0, 0)
    fresh = variants.filter(create)

    _run(conn, _CREATE_VARIANTS, _variant_columns(fresh))
    _run(conn, _CREATE_CARRIED_BY, _carrier_edges(rows, keys, create))
    with_gene = fresh.filter(pc.not_equal(fresh.column("gene"), ""))
    _run(conn, _CREATE_IN_GENE, _gene_edges(with_gene.column("key"), with_gene.column("gene")))

    created, old_ids = fresh.column("correlation_id"), old.column("correlation_id")
    if not old.num_rows:
        return created, old_ids
    _run(
        conn,
        _UPDATE_VARIANTS,
        _variant_columns(old).select(["c_key", "c_job", "c_class", "c_tier", "c_gene"]),
    )
    # Genotypes and file are fixed by the correlation id (a digest of tenant, file content,
    # record and allele), but the annotation may name another gene on a replay.
    stored_gene = dict(zip(found.column(0).to_pylist(), found.column(1).to_pylist(), strict=True))
    moved = [
        (key, gene)
        for key, gene in zip(old.column("key").to_pylist(), old.column("gene").to_pylist(), strict=True)
        if stored_gene[key] != gene
    ]
    if moved:
        _run(conn, _DELETE_IN_GENE, pa.table({"c_key": pa.array([key for key, _ in moved], pa.int64())}))
        regened = [(key, gene) for key, gene in moved if gene]
        _run(conn, _CREATE_IN_GENE, _gene_edges([key for key, _ in regened], [gene for _, gene in regened]))
    return created, old_ids


def _carrier_edges(rows: WriteRows, keys: pa.Array, create: pa.ChunkedArray) -> pa.Table:
    """CARRIED_BY edges of the variants created: one per call whose genotype holds the variant's ALT,
    as one row per variant with carriers: its key (c_key) and its carriers' Sample keys in call
    order (c_carriers).

    The calls are the variants' genotypes in order, so a call's variant is its list parent and a
    variant's carrier calls are one run of the kept ones; the row builder marks each carrier call.
    """
    calls = rows.calls
    variant_of_call = pc.list_parent_indices(rows.variants.column("genotypes"))
    keep = pc.and_(calls.column("carrier"), pc.take(create, variant_of_call))
    kept_variant = pc.filter(variant_of_call, keep).to_numpy(zero_copy_only=False)
    if not len(kept_variant):
        return pa.table(
            {"c_key": pa.array([], pa.int64()), "c_carriers": pa.array([], pa.list_(pa.string()))}
        )
    starts = np.flatnonzero(np.r_[True, kept_variant[1:] != kept_variant[:-1]])
    tenants = rows.variants.column("tenant_id")
    samples = _sample_ids(pc.take(tenants, kept_variant), pc.filter(calls.column("sample"), keep))
    if isinstance(samples, pa.ChunkedArray):
        samples = samples.combine_chunks()
    return pa.table(
        {
            "c_key": pc.take(keys, kept_variant[starts]),
            "c_carriers": pa.ListArray.from_arrays(
                pa.array(np.r_[starts, len(kept_variant)], pa.int32()), samples
            ),
        }
    )


def _upsert_analyses(
    conn: ladybug.Connection, analyses: pa.Table, created: pa.ChunkedArray, found: pa.ChunkedArray
) -> None:
    """Answers of the variants in the graph: an Analysis node is created with its edge; a known
    one only gets the new answer. Answers of variants the graph leaves out are LanceDB's alone.

    An analysis is only ever created together with its edge from a stored
    variant, so only answers for variants that already existed need a lookup.
    """
    columns = _analysis_columns(analyses)
    ids = analyses.column("correlation_id")
    _run(conn, _CREATE_ANALYSES, columns.filter(pc.is_in(ids, value_set=created)))
    if not len(found):
        return
    of_old = columns.filter(pc.is_in(ids, value_set=found))
    known = _query_arrow(conn, _EXISTING_ANALYSES, of_old.select(["c_key"]), _FOUND_ANALYSES)
    is_known = pc.is_in(of_old.column("c_key"), value_set=known.column(0))
    _run(conn, _CREATE_ANALYSES, of_old.filter(pc.invert(is_known)))
    _run(conn, _UPDATE_ANALYSES, of_old.filter(is_known).drop_columns(["c_provider", "c_variant"]))


def _written_before(
    conn: ladybug.Connection,
    file_keys: pa.ChunkedArray,
    record_index: pa.ChunkedArray,
    known: _Committed,
    added: _Committed,
) -> tuple[pa.Array, pa.Table]:
    """Which variants of the batch a committed batch may have held, and the ranges to store.

    A variant may have been written when its record lies in one of its file's written
    ranges: `known` ones, else read. Returns that mask, and the files (c_id) whose ranges
    (c_written) this batch extends; every file's ranges as this batch leaves them join `added`.
    """
    batch_files = pc.unique(file_keys).to_pylist()
    unread = [file_id for file_id in batch_files if file_id not in known.ranges]
    read = _query_arrow(
        conn, _WRITTEN_RANGES, pa.table({"c_id": pa.array(unread, pa.string())}), _FOUND_RANGES
    )
    ranges_of = {
        file_id: np.asarray(flat, dtype=np.int64).reshape(-1, 2)
        for file_id, flat in zip(read.column(0).to_pylist(), read.column(1).to_pylist(), strict=True)
    }
    records = record_index.to_numpy()
    maybe = np.zeros(len(records), dtype=bool)
    ids: list[str] = []
    extended: list[np.ndarray] = []
    one_file = len(batch_files) == 1
    for file_id in batch_files:
        ranges = known.ranges[file_id] if file_id in known.ranges else ranges_of[file_id]
        of_file = (
            np.ones(len(records), dtype=bool)
            if one_file
            else pc.equal(file_keys, file_id).to_numpy(zero_copy_only=False)
        )
        ours = records[of_file]
        maybe[of_file] = _within(ranges, ours)
        grown = _joined(np.concatenate([ranges, _runs(np.unique(ours))]))
        added.ranges[file_id] = grown
        if not np.array_equal(grown, ranges):
            ids.append(file_id)
            extended.append(grown.ravel())
    changed = pa.table(
        {"c_id": pa.array(ids, pa.string()), "c_written": pa.array(extended, pa.list_(pa.int64()))}
    )
    return pa.array(maybe), changed


def _within(ranges: np.ndarray, records: np.ndarray) -> np.ndarray:
    """Whether each record lies in one of the sorted, disjoint inclusive ranges."""
    if not len(ranges):
        return np.zeros(len(records), dtype=bool)
    at = np.searchsorted(ranges[:, 0], records, side="right") - 1
    within: np.ndarray = (at >= 0) & (records <= ranges[np.maximum(at, 0), 1])
    return within


def _runs(records: np.ndarray) -> np.ndarray:
    """Sorted distinct record indices as inclusive ranges, records closer than _RANGE_GAP joined."""
    breaks = np.flatnonzero(np.diff(records) > _RANGE_GAP)
    return np.stack([records[np.r_[0, breaks + 1]], records[np.r_[breaks, len(records) - 1]]], axis=1)


def _joined(ranges: np.ndarray) -> np.ndarray:
    """Inclusive ranges sorted and joined where they overlap or lie closer than _RANGE_GAP."""
    ranges = ranges[np.argsort(ranges[:, 0], kind="stable")]
    reach = np.maximum.accumulate(ranges[:, 1])
    # start - reach, not reach + gap: a range of a store from before reaches INT64_MAX.
    starts = np.flatnonzero(np.r_[True, ranges[1:, 0] - reach[:-1] > _RANGE_GAP])
    return np.stack([ranges[starts, 0], np.maximum.reduceat(ranges[:, 1], starts)], axis=1)


_VERDICTS = pa.array(sorted(GRAPH_VERDICTS), pa.string())
_FOUND_RANGES = pa.schema([("id", pa.string()), ("written", pa.list_(pa.int64()))])
# Written ranges of a file closer than this many records are joined (see the module docstring).
_RANGE_GAP = 64
_FOUND_VARIANTS = pa.schema([("key", pa.int64()), ("gene", pa.string())])
_FOUND_ANALYSES = pa.schema([("key", pa.int64())])


def _query_arrow(conn: ladybug.Connection, statement: str, rows: pa.Table, empty: pa.Schema) -> pa.Table:
    """A lookup's result as Arrow, with the `empty` schema's column types even when nothing matched."""
    if not rows.num_rows:
        return empty.empty_table()
    result = _single(conn.execute(statement, {"rows": rows}))
    table: pa.Table = result.get_as_arrow()
    result.close()
    if table.num_rows:
        return table
    return empty.empty_table()


def _single(result: ladybug.QueryResult | list[ladybug.QueryResult]) -> ladybug.QueryResult:
    # execute() returns a list only for multi-statement strings, which this module never sends.
    if isinstance(result, list):
        raise TypeError("expected a single statement result")
    return result


def _release_inputs(conn: ladybug.Connection) -> None:
    """Drop the statements ladybug prepared implicitly for this batch, and the Arrow tables they hold.

    ladybug 0.22 caches an implicitly prepared statement per distinct Arrow parameter object
    (keyed by a generation number, so a fresh table never hits the cache) and each keeps its
    table alive: without this, every batch's input stayed in memory for good (measured: +310 MB
    per 500,000 rows of 500 bytes; 2,000,000 rows in 229 MB with it). A pybind statement frees
    itself once unreferenced.
    """
    with conn._prepared_cache_lock:
        conn._pybind_implicit_prepared_cache.clear()


def _rollback(conn: ladybug.Connection) -> None:
    # A failed statement may already have aborted the transaction itself.
    try:
        conn.execute("ROLLBACK")
    except RuntimeError as exc:
        if "No active transaction" not in str(exc):
            raise


def _run(conn: ladybug.Connection, statement: str, rows: pa.Table) -> None:
    if rows.num_rows:
        _single(conn.execute(statement, {"rows": rows})).close()


def _row(conn: ladybug.Connection, query: str, parameters: Mapping[str, Any] | None = None) -> list[int]:
    result = _single(conn.execute(query, dict(parameters or {})))
    row = result.get_all()[0]
    result.close()
    # Rows are lists unless rows_as_dict() was switched on, which this module never does.
    if not isinstance(row, list):
        raise TypeError("expected a list row")
    return [int(value) for value in row]


def _scalar(conn: ladybug.Connection, query: str, parameters: Mapping[str, Any] | None = None) -> int:
    return _row(conn, query, parameters)[0]


def _gene_edges(keys: pa.ChunkedArray | list[int], genes: pa.ChunkedArray | list[str]) -> pa.Table:
    return pa.table(
        {
            "c_key": pa.array(keys, pa.int64()) if isinstance(keys, list) else keys,
            "c_to": pa.array(genes, pa.string()) if isinstance(genes, list) else genes,
        }
    )


def _sample_ids(tenants: pa.Array | pa.ChunkedArray, samples: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The Sample key: tenant + '/' + name. Samples are scoped by tenant, the same name in two
    files of one tenant being one sample."""
    return pc.binary_join_element_wise(tenants, samples, "/")


def _distinct_samples(rows: WriteRows) -> pa.Table:
    """The batch's samples, one row each, for the MERGE: names hashed per tenant rather than a
    tenant-qualified key built per call (a 2,504-sample batch has millions of calls, few tenants)."""
    calls = rows.calls.column("sample")
    tenants = rows.variants.column("tenant_id")
    batch_tenants = pc.unique(tenants).to_pylist()
    ids, names, owners = [], [], []
    for tenant in batch_tenants:
        if len(batch_tenants) > 1:
            variant_of_call = pc.list_parent_indices(rows.variants.column("genotypes"))
            of_tenant = pc.filter(calls, pc.take(pc.equal(tenants, tenant), variant_of_call))
        else:
            of_tenant = calls
        distinct = pc.unique(of_tenant)
        owner = pa.array([tenant] * len(distinct), pa.string())
        ids.append(_sample_ids(owner, distinct))
        names.append(distinct)
        owners.append(owner)
    return pa.table(
        {
            "c_id": pa.chunked_array(ids, pa.string()),
            "c_name": pa.chunked_array(names, pa.string()),
            "c_tenant": pa.chunked_array(owners, pa.string()),
        }
    )


def _distinct(table: pa.Table, key: str, columns: Mapping[str, str]) -> pa.Table:
    """The first row per distinct key, with columns renamed for a statement."""
    keys = table.column(key)
    first = pc.index_in(pc.unique(keys), value_set=keys)
    picked = table.select(list(dict.fromkeys(columns.values()))).take(first)
    return pa.table({name: picked.column(source) for name, source in columns.items()})


# What a Variant node's statements take (_CREATE_VARIANTS, _UPDATE_VARIANTS), each from its variant
# column: only these are filtered to pick the variants the graph keeps (_graph_keeps reads gene and
# classification), never a cohort's genotypes. `key` and `file_key` are computed per batch.
_VARIANT_PARAMETERS = {
    "c_key": "key",
    "c_id": "correlation_id",
    "c_job": "job_id",
    "c_file_key": "file_key",
    "c_tenant": "tenant_id",
    "c_chrom": "chromosome",
    "c_pos": "position",
    "c_ref": "reference",
    "c_alt": "alternate",
    "c_class": "classification",
    "c_tier": "priority_tier",
    "c_gene": "gene",
}


def _variant_columns(variants: pa.Table) -> pa.Table:
    return pa.table({parameter: variants.column(column) for parameter, column in _VARIANT_PARAMETERS.items()})


def _file_keys(variants: pa.Table) -> pa.ChunkedArray:
    """File node keys, tenant_key(tenant_id, file_id), computed on the whole column at once."""
    return pc.binary_join_element_wise(variants.column("tenant_id"), variants.column("file_id"), "/")


def _analysis_columns(analyses: pa.Table) -> pa.Table:
    keys = variant_keys(analyses.column("correlation_id"))
    return pa.table(
        {
            "c_key": analysis_keys(keys, analyses.column("provider")),
            "c_variant": keys,
            "c_provider": analyses.column("provider"),
            "c_model": analyses.column("model"),
            "c_class": analyses.column("classification"),
            "c_confidence": analyses.column("confidence"),
            "c_status": analyses.column("status"),
        }
    )
