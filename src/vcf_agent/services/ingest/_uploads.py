"""Uploaded VCFs: one area per tenant, a size limit checked while streaming, deleted when done.

An upload is written under `<root>/tenant-<digest of tenant id>/` (a name no
tenant id can steer), counted as it arrives and discarded the moment it passes
the limit. Once accepted it is tied to its job in a small table; a sweep
deletes it when the job is final: at once when the job failed or was
cancelled, after `retention_s` when it completed (kept that long so an
operator can submit it again). Uploads the service did not use (a retry with
an idempotency key, the same content while that job is still running, a
refused request) are deleted at once, and files no job claims (a crash while
receiving) are deleted by the first sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from vcf_agent.lifecycle import AsyncComponent
from vcf_agent.schema import TERMINAL_STATES
from vcf_agent.v1 import events_pb2

from ._jobs import JobRegistry

log = logging.getLogger(__name__)

_SWEEP_INTERVAL_S = 1.0


class UploadTooLargeError(Exception):
    """The upload passed the configured limit; what was received has been deleted."""


class Upload:
    """One upload being received: written as chunks arrive, counted against the limit."""

    def __init__(self, handle: IO[bytes], max_bytes: int, on_discard: Callable[[Upload], None]) -> None:
        self._handle: IO[bytes] | None = handle
        self.path = Path(handle.name)
        self.size = 0
        self._max_bytes = max_bytes
        self._on_discard = on_discard

    def write(self, chunk: bytes) -> None:
        assert self._handle is not None, "write after close"
        self.size += len(chunk)
        if self.size > self._max_bytes:
            self.discard()
            raise UploadTooLargeError(f"the upload exceeds the limit of {self._max_bytes} bytes")
        self._handle.write(chunk)

    def finish(self) -> None:
        """All chunks received: the file is complete on disk."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def discard(self) -> None:
        """Delete what was received (refused, unused or too large)."""
        self.finish()
        self.path.unlink(missing_ok=True)
        self._on_discard(self)


class UploadArea(AsyncComponent):
    """Receives uploads into per-tenant directories and deletes each when its job no longer needs it."""

    def __init__(
        self,
        root: Path,
        registry: JobRegistry,
        reading: Callable[[str], bool],
        *,
        max_bytes: int,
        retention_s: float,
    ) -> None:
        self.root = root
        self._registry = registry
        # Whether ingest is still reading a job's file: never delete under a running job.
        self._reading = reading
        self._max_bytes = max_bytes
        self._retention_s = retention_s
        # Uploads being received or checked, not yet tied to a job: the sweep leaves them alone.
        self._pending: set[Path] = set()
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            root.parent / "uploads.sqlite", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        # final_at: when the sweep first saw the job final (0: not yet); retention counts from it.
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS uploads (path TEXT PRIMARY KEY, job_id TEXT, final_at REAL NOT NULL)"
        )
        self._task: asyncio.Task[None] | None = None

    def tenant_dir(self, tenant_id: str) -> Path:
        return self.root / f"tenant-{hashlib.blake2b(tenant_id.encode(), digest_size=12).hexdigest()}"

    def receive(self, tenant_id: str, suffix: str) -> Upload:
        directory = self.tenant_dir(tenant_id)
        directory.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(dir=directory, suffix=suffix, delete=False)  # noqa: SIM115 - Upload closes it
        upload = Upload(handle, self._max_bytes, self._settled)
        with self._lock:
            self._pending.add(upload.path)
        return upload

    def _settled(self, upload: Upload) -> None:
        with self._lock:
            self._pending.discard(upload.path)

    def attach(self, upload: Upload, job_id: str) -> None:
        """The upload is the file of this job's run: kept until the job is final."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO uploads VALUES (?, ?, 0)", (str(upload.path), job_id))
            self._pending.discard(upload.path)

    def held(self) -> list[Path]:
        """Every upload file on disk (for tests and operators)."""
        return sorted(p for p in self.root.rglob("*") if p.is_file())

    async def start(self) -> None:
        await asyncio.to_thread(self.sweep)
        self._task = asyncio.create_task(self._sweep_forever(), name="ingest:uploads")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._db.close()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_INTERVAL_S)
            try:
                self.sweep()
            except Exception:
                log.exception("sweeping uploads failed; retrying")

    def sweep(self, now: float | None = None) -> None:
        """Delete uploads whose job is final (after retention when it completed) and unclaimed files."""
        now = time.time() if now is None else now
        with self._lock:
            rows = self._db.execute("SELECT path, job_id, final_at FROM uploads").fetchall()
            pending = set(self._pending)
        claimed = set()
        for path_text, job_id, final_at in rows:
            path = Path(path_text)
            claimed.add(path)
            job = self._registry.get(job_id)
            if job is not None and (job.state not in TERMINAL_STATES or self._reading(job_id)):
                if final_at:  # the job runs again: retention restarts when it ends
                    self._set_final(path, 0.0)
                continue
            completed = job is not None and job.state == events_pb2.JOB_STATE_COMPLETE
            if completed and self._retention_s > 0:
                if not final_at:
                    self._set_final(path, now)
                    continue
                if now - final_at < self._retention_s:
                    continue
            path.unlink(missing_ok=True)
            with self._lock:
                self._db.execute("DELETE FROM uploads WHERE path = ?", (path_text,))
        for path in self.held():
            if path not in claimed and path not in pending:
                log.info("deleting upload %s that no job claims", path.name)
                path.unlink(missing_ok=True)

    def _set_final(self, path: Path, at: float) -> None:
        with self._lock:
            self._db.execute("UPDATE uploads SET final_at = ? WHERE path = ?", (at, str(path)))
