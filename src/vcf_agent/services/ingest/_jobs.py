"""Job tracking: one row per submitted file content per tenant, in SQLite.

The job id is derived from (tenant, content digest) so resubmitting the same
file maps onto the same job, and every downstream upsert is a no-op.

Each run also records its mode (streaming or batch) and when its stages
ended: ingest (last variant read and handed on), analysis (last variant
analysed, as reported on `user-notifications`) and the finish (complete or
failed). Those marks are written only when named (`mark`, a `save` stamping
one, `apply`) and zeroed by `begin` for a new run, never with the rest of the
row, so a publisher holding an older copy of the job cannot erase them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from google.protobuf.timestamp_pb2 import Timestamp

from vcf_agent import telemetry
from vcf_agent.control import JobRun
from vcf_agent.schema import TERMINAL_STATES, state_name
from vcf_agent.v1 import events_pb2, jobs_pb2

from ._job_changes import JobChanges
from ._vcf_header import Issue

JobState = events_pb2.JobState

# States only move forward, except into a terminal state.
_ORDER: dict[int, int] = {
    events_pb2.JOB_STATE_QUEUED: 1,
    events_pb2.JOB_STATE_INGESTING: 2,
    events_pb2.JOB_STATE_ANALYSING: 3,
    events_pb2.JOB_STATE_STORING: 4,
    events_pb2.JOB_STATE_COMPLETE: 5,
    events_pb2.JOB_STATE_COMPLETE_WITH_ERRORS: 5,
    events_pb2.JOB_STATE_FAILED: 6,
    events_pb2.JOB_STATE_CANCELLED: 6,
}


# Final states whose notification's message says what went wrong.
_ENDED_WITH_ERRORS = frozenset({events_pb2.JOB_STATE_FAILED, events_pb2.JOB_STATE_COMPLETE_WITH_ERRORS})

StageMark = Literal["started_at", "ingested_at", "analysed_at", "finished_at"]
_MARKS: tuple[StageMark, ...] = ("started_at", "ingested_at", "analysed_at", "finished_at")
# The file issues a job lists (GetJob); `vcf-agent validate` reports every one.
JOB_ISSUE_LIMIT = 100


def job_id_for(tenant_id: str, file_id: str) -> str:
    return "job-" + hashlib.blake2b(f"{tenant_id}\0{file_id}".encode(), digest_size=10).hexdigest()


@dataclass(slots=True)
class JobRecord:
    job_id: str
    tenant_id: str
    file_id: str
    source_name: str
    state: int = events_pb2.JOB_STATE_QUEUED
    ingested: int = 0
    analysed: int = 0
    stored: int = 0
    dead_lettered: int = 0
    total: int = 0
    samples: int = 0
    providers: list[str] = field(default_factory=list)
    error: str = ""
    # provider -> (ok, failed, missing) answers over the stored variants, as the writer counts them.
    provider_counts: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    mode: str = "streaming"
    submissions: int = 1
    created_at: float = 0.0
    updated_at: float = 0.0
    # Stage marks of the latest run (epoch seconds, 0 when not reached).
    started_at: float = 0.0
    ingested_at: float = 0.0
    analysed_at: float = 0.0
    finished_at: float = 0.0
    # gVCF <*>/<NON_REF> records and ALTs ingest read and did not publish (see `record_gvcf`).
    reference_blocks: int = 0
    placeholder_alleles: int = 0
    # Why the job is stalled (see `stall`); empty in every other state.
    stall_detail: str = ""
    # Faults of the file the job read past (see `record_file_issues`), in file order.
    file_issues: list[Issue] = field(default_factory=list)
    more_file_issues: bool = False

    def stage_seconds(self) -> dict[str, float]:
        """Ingest, analysis and storage durations of a finished run; they add up to its latency.

        Stages overlap in streaming, so each is the time from the previous stage's
        end to its own: what that stage added to the job's latency.
        """
        ingest_end = max(self.ingested_at, self.started_at)
        analysis_end = min(max(self.analysed_at, ingest_end), self.finished_at)
        return {
            "ingest": ingest_end - self.started_at,
            "analysis": analysis_end - ingest_end,
            "storage": self.finished_at - analysis_end,
        }

    def to_proto(self, *, file_issues: bool = True) -> jobs_pb2.Job:
        """The job as GetJob and WatchJob send it; ListJobs leaves the file's issues out
        (`file_issues=False`), keeping their count."""
        created, updated = Timestamp(), Timestamp()
        created.FromNanoseconds(int(self.created_at * 1e9))
        updated.FromNanoseconds(int(self.updated_at * 1e9))
        return jobs_pb2.Job(
            job_id=self.job_id,
            tenant_id=self.tenant_id,
            file_id=self.file_id,
            source_name=self.source_name,
            state=self.state,  # type: ignore[arg-type]
            counts=jobs_pb2.StageCounts(
                ingested=self.ingested,
                analysed=self.analysed,
                stored=self.stored,
                dead_lettered=self.dead_lettered,
                total=self.total,
                reference_blocks=self.reference_blocks,
                placeholder_alleles=self.placeholder_alleles,
                provider_counts={
                    name: events_pb2.ProviderCounts(ok=ok, failed=failed, missing=missing)
                    for name, (ok, failed, missing) in self.provider_counts.items()
                },
            ),
            error=self.error,
            created_at=created,
            updated_at=updated,
            providers=self.providers,
            samples=self.samples,
            mode=self.mode,
            duplicate_of_earlier=self.submissions > 1,
            stall_detail=self.stall_detail if self.state == events_pb2.JOB_STATE_STALLED else "",
            file_issues=[
                jobs_pb2.FileIssue(
                    line=issue.line,
                    column=issue.column,
                    code=issue.code,
                    message=issue.message,
                    warning=issue.is_warning,
                )
                for issue in (self.file_issues if file_issues else ())
            ],
            more_file_issues=self.more_file_issues,
            file_issue_count=len(self.file_issues),
        )


_BASE_COLUMNS = (
    "job_id, tenant_id, file_id, source_name, state, ingested, analysed, stored, dead_lettered, total,"
    " samples, providers, error, mode, submissions, created_at, updated_at, provider_counts"
)
_GVCF_COUNTS = ("reference_blocks", "placeholder_alleles")
_COLUMNS = (
    _BASE_COLUMNS
    + ", "
    + ", ".join(_MARKS)
    + ", "
    + ", ".join(_GVCF_COUNTS)
    + ", stall_detail, file_issues, more_file_issues"
)
# What `save` writes: every column but the stage marks, the gVCF counts and the file's issues,
# which are written on their own (`mark`, `record_gvcf`, `record_file_issues`).
_SAVED_COLUMNS = _BASE_COLUMNS + ", stall_detail"
_UPSERT = (
    f"INSERT INTO jobs ({_SAVED_COLUMNS}) VALUES ({','.join('?' * 19)}) ON CONFLICT(job_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _SAVED_COLUMNS.replace(" ", "").split(",")[1:])
)
_RESET_MARKS = f"UPDATE jobs SET {', '.join(f'{m} = 0' for m in _MARKS)} WHERE job_id = ?"


def _set_mark(stage: StageMark) -> str:
    """The statement writing one stage mark (its value, then the job id)."""
    return f"UPDATE jobs SET {stage} = ? WHERE job_id = ?"


def open_job_database(path: Path) -> sqlite3.Connection:
    """Ingest's SQLite file (jobs and checkpoints), shared by the event loop and worker threads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA busy_timeout=5000")
    return db


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """The statements of the block committed together, or none of them (the connection autocommits)."""
    db.execute("BEGIN")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class JobRegistry:
    """Durable job table; safe to call from the event loop (short, local transactions)."""

    def __init__(self, path: Path) -> None:
        self._db = open_job_database(path)
        self._lock = threading.Lock()
        # Every write to a job's row (`save`, `_update`) tells its watchers (WatchJob).
        self.changes = JobChanges()
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, tenant_id TEXT, file_id TEXT,"
            " source_name TEXT, state INTEGER, ingested INTEGER, analysed INTEGER, stored INTEGER,"
            " dead_lettered INTEGER, total INTEGER, samples INTEGER, providers TEXT, error TEXT, mode TEXT,"
            " submissions INTEGER, created_at REAL, updated_at REAL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs (tenant_id, created_at)")
        # A LIMS retrying a submission with the same key gets the same job back, not a new run.
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS idempotency_keys (tenant_id TEXT, key TEXT, job_id TEXT,"
            " PRIMARY KEY (tenant_id, key))"
        )
        # Registries written before stage marks or provider counts existed gain the columns in place.
        present = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "provider_counts" not in present:
            self._db.execute("ALTER TABLE jobs ADD COLUMN provider_counts TEXT NOT NULL DEFAULT '{}'")
        for mark in _MARKS:
            if mark not in present:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {mark} REAL NOT NULL DEFAULT 0")
        for count in _GVCF_COUNTS:
            if count not in present:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {count} INTEGER NOT NULL DEFAULT 0")
        if "stall_detail" not in present:
            self._db.execute("ALTER TABLE jobs ADD COLUMN stall_detail TEXT NOT NULL DEFAULT ''")
        if "file_issues" not in present:
            self._db.execute("ALTER TABLE jobs ADD COLUMN file_issues TEXT NOT NULL DEFAULT '[]'")
            self._db.execute("ALTER TABLE jobs ADD COLUMN more_file_issues INTEGER NOT NULL DEFAULT 0")

    def close(self) -> None:
        self._db.close()

    def job_for_key(self, tenant_id: str, key: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT job_id FROM idempotency_keys WHERE tenant_id = ? AND key = ?", (tenant_id, key)
            ).fetchone()
        return self.get(row[0]) if row else None

    def remember_key(self, tenant_id: str, key: str, job_id: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO idempotency_keys VALUES (?, ?, ?)", (tenant_id, key, job_id)
            )

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return _from_row(row) if row else None

    def state_counts(self) -> tuple[dict[int, int], float]:
        """Jobs per state, and the oldest last-update time of an unfinished job (0.0: none)."""
        terminal = tuple(int(state) for state in TERMINAL_STATES)
        marks = ",".join("?" * len(terminal))
        with self._lock:
            counts = dict(self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
            (oldest,) = self._db.execute(
                f"SELECT MIN(updated_at) FROM jobs WHERE state NOT IN ({marks})", terminal
            ).fetchone()
        return counts, float(oldest or 0.0)

    def page(self, tenant_id: str = "", limit: int = 100, offset: int = 0) -> list[JobRecord]:
        query = f"SELECT {_COLUMNS} FROM jobs"
        args: tuple[object, ...] = ()
        if tenant_id:
            query += " WHERE tenant_id = ?"
            args = (tenant_id,)
        query += " ORDER BY created_at DESC, job_id LIMIT ? OFFSET ?"
        with self._lock:
            rows = self._db.execute(query, (*args, limit, offset)).fetchall()
        return [_from_row(r) for r in rows]

    def begin(self, tenant_id: str, file_id: str, source_name: str, providers: list[str]) -> JobRecord:
        """Create the job, or restart an earlier job of the same content (counted as a resubmission)."""
        job_id = job_id_for(tenant_id, file_id)
        now = time.time()
        existing = self.get(job_id)
        if existing is None:
            job = JobRecord(
                job_id, tenant_id, file_id, source_name, providers=providers, created_at=now, updated_at=now
            )
        else:
            job = replace(
                existing,
                state=events_pb2.JOB_STATE_QUEUED,
                submissions=existing.submissions + 1,
                ingested=0,
                analysed=0,
                stored=0,
                dead_lettered=0,
                total=0,
                source_name=source_name,
                providers=providers,
                error="",
                provider_counts={},
                updated_at=now,
                started_at=0.0,
                ingested_at=0.0,
                analysed_at=0.0,
                finished_at=0.0,
            )
        # A resubmission is a new run: the previous run's marks no longer apply. Reset in the
        # same transaction, so no reader sees the new run with the old run's marks.
        self._save(job, new_run=True)
        return job

    def active(self) -> list[JobRecord]:
        """Every job not in a final state."""
        ended = ",".join(str(int(state)) for state in TERMINAL_STATES)
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE state NOT IN ({ended})").fetchall()
        return [_from_row(r) for r in rows]

    def stall(self, job_id: str, detail: str) -> JobRecord | None:
        """Mark a running job stalled (or update why); None when it has ended meanwhile."""
        job = self.get(job_id)
        if job is None or job.state in TERMINAL_STATES:
            return None
        job.state, job.stall_detail = events_pb2.JOB_STATE_STALLED, detail
        self.save(job)
        return job

    def record_gvcf(self, job: JobRecord, reference_blocks: int, placeholder_alleles: int) -> None:
        """The gVCF records and ALTs the job's ingest read and did not publish."""
        job.reference_blocks, job.placeholder_alleles = reference_blocks, placeholder_alleles
        self._update(
            job.job_id,
            "UPDATE jobs SET reference_blocks = ?, placeholder_alleles = ? WHERE job_id = ?",
            reference_blocks,
            placeholder_alleles,
        )

    def record_file_issues(self, job: JobRecord, issues: Iterable[Issue], more: bool) -> None:
        """Add the file's issues found so far to the job's, in line order, at most JOB_ISSUE_LIMIT.

        Ingest records them as it goes, so a run resumed from a checkpoint (which does not read
        the lines before it again) keeps those found before the crash; an issue found again (the
        header's, or a re-run of the same file) is not listed twice.
        """
        known = {(i.line, i.column, i.code) for i in job.file_issues}
        added = [i for i in issues if (i.line, i.column, i.code) not in known]
        if not added and (job.more_file_issues or not more):
            return
        merged = sorted([*job.file_issues, *added], key=lambda issue: issue.line)
        job.more_file_issues = job.more_file_issues or more or len(merged) > JOB_ISSUE_LIMIT
        job.file_issues = merged[:JOB_ISSUE_LIMIT]
        self._update(
            job.job_id,
            "UPDATE jobs SET file_issues = ?, more_file_issues = ? WHERE job_id = ?",
            json.dumps([[i.line, i.column, i.code, i.message, i.is_warning] for i in job.file_issues]),
            int(job.more_file_issues),
        )

    def mark(self, job: JobRecord, stage: StageMark, at: float | None = None) -> None:
        """Record that a stage of the job's current run ended (or, for started_at, began)."""
        at = time.time() if at is None else at
        setattr(job, stage, at)
        self._update(job.job_id, _set_mark(stage), at)

    def job_runs(self, since: float = 0.0, tenant_id: str = "") -> list[JobRun]:
        """Completed runs started at or after `since`, for the streaming-versus-batch comparison."""
        query = f"SELECT {_COLUMNS} FROM jobs WHERE state = ? AND started_at > 0 AND started_at >= ?"
        args: list[object] = [events_pb2.JOB_STATE_COMPLETE, since]
        if tenant_id:
            query += " AND tenant_id = ?"
            args.append(tenant_id)
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        runs = []
        for row in rows:
            job = _from_row(row)
            if job.finished_at >= job.started_at:
                runs.append(
                    JobRun(job.mode, job.total, job.finished_at - job.started_at, job.stage_seconds())
                )
        return runs

    def save(self, job: JobRecord, *, stamp: StageMark | None = None) -> None:
        """Write the job's row but its stage marks and gVCF counts; with `stamp`, the stage mark this
        change reaches, set to now, in the same transaction. Its watchers are told once, of the
        whole change."""
        if stamp is None:
            self._save(job)
            return
        setattr(job, stamp, time.time())
        self._save(job, marks=(stamp,))

    def _save(self, job: JobRecord, *, new_run: bool = False, marks: Sequence[StageMark] = ()) -> None:
        """`save`, and in the same transaction: with `new_run` the stage marks zeroed, and the job's
        `marks` written (`apply`'s, which come with the change they mark)."""
        job.updated_at = time.time()
        with self._lock, _transaction(self._db):
            self._db.execute(
                _UPSERT,
                (
                    job.job_id,
                    job.tenant_id,
                    job.file_id,
                    job.source_name,
                    job.state,
                    job.ingested,
                    job.analysed,
                    job.stored,
                    job.dead_lettered,
                    job.total,
                    job.samples,
                    ",".join(job.providers),
                    job.error,
                    job.mode,
                    job.submissions,
                    job.created_at,
                    job.updated_at,
                    json.dumps(job.provider_counts),
                    job.stall_detail,
                ),
            )
            if new_run:
                self._db.execute(_RESET_MARKS, (job.job_id,))
            for stage in marks:
                self._db.execute(_set_mark(stage), (getattr(job, stage), job.job_id))
        self.changes.changed(job.job_id, ended=job.state in TERMINAL_STATES)

    def apply(self, note: events_pb2.Notification) -> JobRecord | None:
        """Fold a progress notification from any stage into the job."""
        job = self.get(note.job_id)
        if job is None:
            return None
        at = note.timestamp.ToNanoseconds() / 1e9 if note.HasField("timestamp") else time.time()
        stalled = job.state == events_pb2.JOB_STATE_STALLED
        before = (job.ingested, job.analysed, job.stored, job.total, job.dead_lettered)
        # Written with the row, in one transaction: a watcher wakes once, to the whole change.
        marks: list[StageMark] = []
        if (
            note.stage == events_pb2.STAGE_ANALYSIS
            and note.done > job.analysed
            and job.state not in TERMINAL_STATES
        ):
            job.analysed_at = at
            marks.append("analysed_at")
        if note.stage == events_pb2.STAGE_INGEST:
            job.ingested = max(job.ingested, note.done)
            job.dead_lettered = max(job.dead_lettered, note.dead_lettered)
            job.samples = max(job.samples, note.samples)
        elif note.stage == events_pb2.STAGE_ANALYSIS:
            job.analysed = max(job.analysed, note.done)
        elif note.stage == events_pb2.STAGE_STORAGE:
            job.stored = max(job.stored, note.done)
            # The writer decides a job that ended with errors again after a redrive stored what
            # was missing or failed; its new final state replaces the old one.
            mended = (
                job.state in _ENDED_WITH_ERRORS and note.state in TERMINAL_STATES and note.state != job.state
            )
            if mended:
                job.state = note.state
                job.error = "" if note.state == events_pb2.JOB_STATE_COMPLETE else job.error
            if note.provider_counts and (job.state not in TERMINAL_STATES or mended):
                # Cumulative from the writer: the latest replaces, and the final one is exact.
                job.provider_counts = {
                    name: (c.ok, c.failed, c.missing) for name, c in note.provider_counts.items()
                }
        if note.total:
            job.total = note.total
        if note.state in _ENDED_WITH_ERRORS and note.message:
            job.error = note.message
        if stalled and note.state not in TERMINAL_STATES:
            # A stalled job leaves the state when a count moves again (its own notice moves none).
            if (job.ingested, job.analysed, job.stored, job.total, job.dead_lettered) != before:
                job.state = note.state if note.state in _ORDER else events_pb2.JOB_STATE_INGESTING
                job.stall_detail = ""
        elif job.state not in TERMINAL_STATES and _ORDER.get(int(note.state), 0) >= _ORDER.get(job.state, 0):
            job.state = note.state
            if stalled:
                job.stall_detail = ""
            if note.state in TERMINAL_STATES and job.started_at:
                job.finished_at = max(at, job.started_at)
                marks.append("finished_at")
        # Downstream counts never pass what ingest read: stages count a record again when a
        # crash makes them (or ingest, resuming from its checkpoint) replay it, and ingest's
        # own count reaches the tracker later than the records reach the stages.
        ceiling = job.total or job.ingested
        if job.state not in TERMINAL_STATES:
            job.analysed = min(job.analysed, ceiling)
            job.stored = min(job.stored, ceiling)
        self._save(job, marks=marks)
        return job

    def _update(self, job_id: str, statement: str, *values: object) -> None:
        """One UPDATE of the job's row (`values`, then the job id, fill its parameters), then its
        watchers told. `save` is the other write, and tells them whether it ended the job."""
        with self._lock:
            self._db.execute(statement, (*values, job_id))
        self.changes.changed(job_id)


def _from_row(row: tuple[object, ...]) -> JobRecord:
    values = list(row)
    providers = str(values[11])
    return JobRecord(
        job_id=str(values[0]),
        tenant_id=str(values[1]),
        file_id=str(values[2]),
        source_name=str(values[3]),
        state=int(values[4]),  # type: ignore[call-overload]
        ingested=int(values[5]),  # type: ignore[call-overload]
        analysed=int(values[6]),  # type: ignore[call-overload]
        stored=int(values[7]),  # type: ignore[call-overload]
        dead_lettered=int(values[8]),  # type: ignore[call-overload]
        total=int(values[9]),  # type: ignore[call-overload]
        samples=int(values[10]),  # type: ignore[call-overload]
        providers=providers.split(",") if providers else [],
        error=str(values[12]),
        mode=str(values[13]),
        submissions=int(values[14]),  # type: ignore[call-overload]
        created_at=float(values[15]),  # type: ignore[arg-type]
        updated_at=float(values[16]),  # type: ignore[arg-type]
        provider_counts={name: (c[0], c[1], c[2]) for name, c in json.loads(str(values[17])).items()},
        started_at=float(values[18]),  # type: ignore[arg-type]
        ingested_at=float(values[19]),  # type: ignore[arg-type]
        analysed_at=float(values[20]),  # type: ignore[arg-type]
        finished_at=float(values[21]),  # type: ignore[arg-type]
        reference_blocks=int(values[22]),  # type: ignore[call-overload]
        placeholder_alleles=int(values[23]),  # type: ignore[call-overload]
        stall_detail=str(values[24]),
        file_issues=[
            Issue(line, column, code, message, warning)
            for line, column, code, message, warning in json.loads(str(values[25]))
        ],
        more_file_issues=bool(values[26]),
    )


async def sample_jobs(registry: JobRegistry) -> None:
    """vcf_jobs by state, and how long the stalest unfinished job has gone without progress."""
    counts, oldest_update = await asyncio.to_thread(registry.state_counts)
    for state in events_pb2.JobState.values():
        if state != events_pb2.JOB_STATE_UNSPECIFIED:
            telemetry.jobs_by_state.labels(state_name(state)).set(counts.get(state, 0))
    telemetry.job_oldest_progress_age.set(max(0.0, time.time() - oldest_update) if oldest_update else 0.0)
