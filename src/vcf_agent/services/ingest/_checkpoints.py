"""Ingest's durable progress per job: the file, its digest and the last published record.

A checkpoint is written when a job starts reading and moved forward after
batches are published (never before: what it says is on the bus), at most
every 0.25 s; once the job's FINISHED marker is out it is marked finished and
kept until the job ends, so records stranded on a failover bus's dead backend
can be published again from the file (see `_job_watchdog`). A failed or
cancelled job's checkpoint is deleted. A restarted ingest resumes every job
with an unfinished one from its position: records after it may be published twice (the window
between the last checkpoint and the crash), which is harmless because every
stored effect is an upsert by correlation id and completion is counted from
the store; the FINISHED marker still carries the file's exact variant count,
because the position holds the counts of everything before it.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ._jobs import open_job_database
from ._vcf_reader import ReadPosition

__all__ = ["Checkpoint", "CheckpointBook"]


@dataclass(slots=True)
class Checkpoint:
    job_id: str
    path: Path
    # The file's digest when the job started: a file that changed since is not resumed.
    file_id: str
    mode: str = "streaming"
    validation: str = "lenient"
    priority: int = 0
    region: str = ""
    at: ReadPosition = field(default_factory=ReadPosition)
    # The FINISHED marker is out: nothing to resume, kept to publish the job again if needed.
    finished: bool = False
    updated_at: float = 0.0


class CheckpointBook:
    """The `checkpoints` table, beside the job registry's tables in the same SQLite file."""

    def __init__(self, path: Path) -> None:
        self._db = open_job_database(path)
        self._lock = threading.Lock()
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS checkpoints (job_id TEXT PRIMARY KEY, path TEXT, file_id TEXT,"
            " mode TEXT, validation TEXT, priority INTEGER, region TEXT, position TEXT, finished INTEGER,"
            " updated_at REAL)"
        )

    def close(self) -> None:
        self._db.close()

    def save(self, checkpoint: Checkpoint) -> None:
        checkpoint.updated_at = time.time()
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    checkpoint.job_id,
                    str(checkpoint.path),
                    checkpoint.file_id,
                    checkpoint.mode,
                    checkpoint.validation,
                    checkpoint.priority,
                    checkpoint.region,
                    json.dumps(asdict(checkpoint.at)),
                    int(checkpoint.finished),
                    checkpoint.updated_at,
                ),
            )

    def drop(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM checkpoints WHERE job_id = ?", (job_id,))

    def get(self, job_id: str) -> Checkpoint | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM checkpoints WHERE job_id = ?", (job_id,)).fetchone()
        return _from_row(row) if row else None

    def all(self) -> list[Checkpoint]:
        """Every checkpoint, oldest first (a job whose reading had not ended is `not finished`)."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM checkpoints ORDER BY updated_at").fetchall()
        return [_from_row(row) for row in rows]


def _from_row(row: tuple[object, ...]) -> Checkpoint:
    job_id, path, file_id, mode, validation, priority, region, position, finished, updated_at = row
    return Checkpoint(
        str(job_id),
        Path(str(path)),
        str(file_id),
        str(mode),
        str(validation),
        int(priority),  # type: ignore[call-overload]
        str(region),
        ReadPosition(**json.loads(str(position))),
        bool(finished),
        float(updated_at),  # type: ignore[arg-type]
    )
