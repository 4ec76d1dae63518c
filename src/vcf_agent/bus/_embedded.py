"""Durable single-machine bus: `embedded:///abs/dir` or `embedded://relative/dir`.

The log is one SQLite database in WAL mode, so several OS processes (producers
and members of the same consumer group) can share it safely and committed
offsets survive restarts. Group membership lives in the database too: members
heartbeat, a member silent for longer than its session timeout is expired by
the others, and every membership change bumps the group's generation and
recomputes the assignment in one write transaction. A member may only commit a
partition it still holds in the generation it was given it (fencing). An idle
consumer sleeps between fetches; a publish cuts the sleep short, in another
process through a signal file per stream (_publish_signals). Where those signals
work, an idle consumer reads the log about once a second, however often it is
polled; where they do not, every 50 ms.

URL query options: session_timeout_ms (default 5000), synchronous=normal|full
(default normal: durable across process crashes; full adds power-loss safety
at the cost of an fsync per publish).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

import msgpack

from vcf_agent.bus._base import (
    Bus,
    BusError,
    BusUnavailableError,
    Consumer,
    OutgoingMessage,
    Partitioner,
    PublishedPosition,
    Record,
    StartPosition,
    StreamSpec,
    TopicPartition,
)
from vcf_agent.bus._publish_signals import SIGNAL_DIRECTORY, PublishWatch, signal_name, signal_published

_log = logging.getLogger(__name__)

T = TypeVar("T")

DB_FILE = "bus.sqlite3"
DEFAULT_SESSION_TIMEOUT_MS = 5000
BUSY_TIMEOUT_MS = 30_000
# One poll stops adding records past this many payload bytes (but always returns at least one).
MAX_POLL_BYTES = 16 * 1024 * 1024
# Empty fetches back off from the first to the second delay, doubling.
MIN_IDLE_SLEEP_S = 0.001
MAX_IDLE_SLEEP_S = 0.05
# The longest back-off where publishes signal across processes (inotify): a publish ends the sleep,
# so only a lost signal or a rebalance with nothing published waits it out. Each fetch of an idle
# consumer costs a thread hop and a read transaction (~1 ms of CPU); at 50 ms the idle consumers
# of five services used 15% of a core between jobs, and the same share of a job's two cores.
MAX_SIGNALLED_IDLE_SLEEP_S = 1.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta(k, v) VALUES ('streams_version', 0);
CREATE TABLE IF NOT EXISTS streams(
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, partitions INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS partitions(
    sid INTEGER NOT NULL, part INTEGER NOT NULL,
    next_offset INTEGER NOT NULL, last_ts INTEGER NOT NULL,
    PRIMARY KEY(sid, part)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records(
    sid INTEGER NOT NULL, part INTEGER NOT NULL, off INTEGER NOT NULL, ts INTEGER NOT NULL,
    key BLOB, headers BLOB, value BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS records_by_offset ON records(sid, part, off);
CREATE INDEX IF NOT EXISTS records_by_time ON records(sid, part, ts, off);
CREATE TABLE IF NOT EXISTS groups(
    name TEXT PRIMARY KEY, generation INTEGER NOT NULL, streams_version INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members(
    grp TEXT NOT NULL, member TEXT NOT NULL, streams TEXT NOT NULL,
    heartbeat_ms INTEGER NOT NULL, session_timeout_ms INTEGER NOT NULL, joined_ms INTEGER NOT NULL,
    PRIMARY KEY(grp, member)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS assignments(
    grp TEXT NOT NULL, sid INTEGER NOT NULL, part INTEGER NOT NULL,
    member TEXT NOT NULL, generation INTEGER NOT NULL,
    PRIMARY KEY(grp, sid, part)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS offsets(
    grp TEXT NOT NULL, sid INTEGER NOT NULL, part INTEGER NOT NULL, committed INTEGER NOT NULL,
    PRIMARY KEY(grp, sid, part)) WITHOUT ROWID;
"""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    # isolation_level=None: transactions are explicit, so writes can take the lock up front
    # (BEGIN IMMEDIATE) and wait on busy_timeout instead of failing on lock upgrade.
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # Payloads are 100 KB+ batches; large pages cut their overflow chains (only applies to a new file).
    conn.execute("PRAGMA page_size=32768")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


def _write(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run work in one IMMEDIATE transaction (the write lock is taken first, so no upgrade deadlock)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _read(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run work against one consistent WAL snapshot."""
    conn.execute("BEGIN")
    try:
        return work(conn)
    finally:
        conn.execute("COMMIT")


def _rebalance(conn: sqlite3.Connection, group: str) -> None:
    """Recompute a group's assignment under a new generation (inside a write transaction).

    Range assignment per stream over its subscribers in join order. A partition
    that keeps its owner keeps its generation, so its owner's position stays valid.
    """
    (streams_version,) = conn.execute("SELECT v FROM meta WHERE k = 'streams_version'").fetchone()
    ((generation,),) = conn.execute(
        "INSERT INTO groups(name, generation, streams_version) VALUES (?, 1, ?) "
        "ON CONFLICT(name) DO UPDATE SET generation = generation + 1, "
        "streams_version = excluded.streams_version RETURNING generation",
        (group, streams_version),
    ).fetchall()
    members = conn.execute(
        "SELECT member, streams FROM members WHERE grp = ? ORDER BY joined_ms, member", (group,)
    ).fetchall()
    previous = {
        (sid, part): (member, gen)
        for sid, part, member, gen in conn.execute(
            "SELECT sid, part, member, generation FROM assignments WHERE grp = ?", (group,)
        )
    }
    subscribers: dict[str, list[str]] = {}
    for member, streams in members:
        for stream in json.loads(streams):
            subscribers.setdefault(stream, []).append(member)
    rows = []
    for stream, readers in subscribers.items():
        found = conn.execute("SELECT id, partitions FROM streams WHERE name = ?", (stream,)).fetchone()
        if found is None:
            # Assigned once the stream is created: creation bumps streams_version.
            continue
        sid, count = found
        for part in range(count):
            owner = readers[part % len(readers)]
            before = previous.get((sid, part))
            gen = before[1] if before is not None and before[0] == owner else generation
            rows.append((group, sid, part, owner, gen))
    conn.execute("DELETE FROM assignments WHERE grp = ?", (group,))
    conn.executemany(
        "INSERT INTO assignments(grp, sid, part, member, generation) VALUES (?, ?, ?, ?, ?)", rows
    )


def _heartbeat(
    conn: sqlite3.Connection, group: str, member: str, streams: list[str], session_timeout_ms: int
) -> None:
    """Refresh our heartbeat, expire silent members, and rebalance if anything changed."""
    now = _now_ms()
    changed = False
    touched = conn.execute(
        "UPDATE members SET heartbeat_ms = ? WHERE grp = ? AND member = ?", (now, group, member)
    ).rowcount
    if not touched:
        # Joining, or we were expired while stalled: (re)join at the back.
        conn.execute(
            "INSERT INTO members(grp, member, streams, heartbeat_ms, session_timeout_ms, joined_ms) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (group, member, json.dumps(sorted(streams)), now, session_timeout_ms, now),
        )
        changed = True
    expired = conn.execute(
        "DELETE FROM members WHERE grp = ? AND heartbeat_ms + session_timeout_ms < ?", (group, now)
    ).rowcount
    if expired:
        _log.info("embedded bus: group %s expired %d silent member(s)", group, expired)
        changed = True
    if not changed:
        stale = conn.execute(
            "SELECT 1 FROM groups g JOIN meta m ON m.k = 'streams_version' "
            "WHERE g.name = ? AND g.streams_version = m.v",
            (group,),
        ).fetchone()
        changed = stale is None
    if changed:
        _rebalance(conn, group)


_UPSERT_OFFSET = (
    "INSERT INTO offsets(grp, sid, part, committed) VALUES (?, ?, ?, ?) "
    "ON CONFLICT(grp, sid, part) DO UPDATE SET committed = excluded.committed"
)


async def _on_executor(
    executor: ThreadPoolExecutor | None,
    not_started: str,
    directory: Path,
    fn: Callable[..., T],
    *args: object,
) -> T:
    """Run fn on the owner's SQLite thread; SQLite errors become BusError naming the log."""
    if executor is None:
        raise BusUnavailableError(not_started)
    try:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
    except sqlite3.Error as exc:
        raise BusError(f"embedded bus at {directory}: {exc}") from exc


def _started(conn: sqlite3.Connection | None, not_started: str) -> sqlite3.Connection:
    if conn is None:
        raise BusUnavailableError(not_started)
    return conn


class EmbeddedBus(Bus):
    """One SQLite connection on a dedicated thread, shared by this bus's admin and publish calls."""

    backend = "embedded"

    def __init__(self, directory: Path, *, session_timeout_ms: int, synchronous: str) -> None:
        self.directory = directory
        self.path = directory / DB_FILE
        self.session_timeout_ms = session_timeout_ms
        self.synchronous = synchronous
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._streams: dict[str, tuple[int, int]] = {}
        self._partitioner = Partitioner()
        # Consumers of this bus, each with the signal names of its streams: a publish wakes those
        # of its stream, directly when local, through its signal file from another process.
        self._waiters: dict[asyncio.Event, frozenset[str]] = {}
        self._signals = directory / SIGNAL_DIRECTORY
        self._watch: PublishWatch | None = None
        self._watch_loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedded-bus")
        try:
            self._conn = await self._run(self._open)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        self._watch = PublishWatch.of(self._signals)
        if self._watch is not None:
            self._watch_loop = asyncio.get_running_loop()
            self._watch_loop.add_reader(self._watch.fileno(), self._signalled)

    def _open(self) -> sqlite3.Connection:
        self._signals.mkdir(parents=True, exist_ok=True)
        return connect_database(self.path, self.synchronous)

    @property
    def longest_idle_sleep_s(self) -> float:
        """How long an idle consumer waits at most before reading the log again."""
        return MAX_SIGNALLED_IDLE_SLEEP_S if self._watch is not None else MAX_IDLE_SLEEP_S

    def _signalled(self) -> None:
        assert self._watch is not None
        self._wake(self._watch.read())

    def _wake(self, published: set[str] | None) -> None:
        """Wake the consumers of the streams with these signal names (None: of every stream)."""
        for event, names in self._waiters.items():
            if published is None or not names.isdisjoint(published):
                event.set()

    async def stop(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        watch, self._watch = self._watch, None
        if watch is not None:
            assert self._watch_loop is not None
            self._watch_loop.remove_reader(watch.fileno())
            watch.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        executor.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        not_started = f"embedded bus at {self.directory} is not started"
        return await _on_executor(self._executor, not_started, self.directory, fn, *args)

    def _db(self) -> sqlite3.Connection:
        return _started(self._conn, f"embedded bus at {self.directory} is not started")

    async def ensure_streams(self, specs: Sequence[StreamSpec]) -> None:
        for spec in specs:
            if spec.partitions < 1:
                raise BusError(f"embedded bus: stream {spec.name!r} needs at least one partition")
        await self._run(self._ensure_sync, list(specs))

    def _ensure_sync(self, specs: list[StreamSpec]) -> None:
        def work(conn: sqlite3.Connection) -> None:
            created = False
            for spec in specs:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO streams(name, partitions) VALUES (?, ?)",
                    (spec.name, spec.partitions),
                )
                if cur.rowcount:
                    created = True
                    sid = cur.lastrowid
                    conn.executemany(
                        "INSERT INTO partitions(sid, part, next_offset, last_ts) VALUES (?, ?, 0, 0)",
                        [(sid, p) for p in range(spec.partitions)],
                    )
            if created:
                # Groups subscribed to these streams rebalance on their next poll or heartbeat.
                conn.execute("UPDATE meta SET v = v + 1 WHERE k = 'streams_version'")

        _write(self._db(), work)

    def _stream_sync(self, conn: sqlite3.Connection, stream: str) -> tuple[int, int]:
        """(stream id, partition count); cached because streams never change once created."""
        found = self._streams.get(stream)
        if found is None:
            row = conn.execute("SELECT id, partitions FROM streams WHERE name = ?", (stream,)).fetchone()
            if row is None:
                raise BusError(f"embedded bus: stream {stream!r} does not exist (call ensure_streams)")
            found = self._streams[stream] = (row[0], row[1])
        return found

    async def partitions(self, stream: str) -> int:
        return (await self._run(lambda: self._stream_sync(self._db(), stream)))[1]

    async def publish(self, stream: str, messages: Sequence[OutgoingMessage]) -> list[PublishedPosition]:
        if not messages:
            return []
        positions = await self._run(self._publish_sync, stream, list(messages))
        self._wake({signal_name(stream)})
        return positions

    def _publish_sync(self, stream: str, messages: list[OutgoingMessage]) -> list[PublishedPosition]:
        conn = self._db()
        sid, count = self._stream_sync(conn, stream)
        targets = [self._partitioner.partition(stream, m.key, count) for m in messages]
        touched = set(targets)
        headers = [msgpack.packb(dict(m.headers)) if m.headers else None for m in messages]

        def work(conn: sqlite3.Connection) -> list[PublishedPosition]:
            state = {
                part: [next_offset, last_ts]
                for part, next_offset, last_ts in conn.execute(
                    "SELECT part, next_offset, last_ts FROM partitions WHERE sid = ?", (sid,)
                )
            }
            now = _now_ms()
            rows = []
            positions = []
            for message, part, packed in zip(messages, targets, headers, strict=True):
                slot = state[part]
                offset = slot[0]
                # Non-decreasing per partition, so the first offset at a timestamp is well defined.
                ts = max(now, slot[1])
                slot[0], slot[1] = offset + 1, ts
                rows.append((sid, part, offset, ts, message.key, packed, message.value))
                positions.append(PublishedPosition(part, offset))
            conn.executemany(
                "INSERT INTO records(sid, part, off, ts, key, headers, value) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.executemany(
                "UPDATE partitions SET next_offset = ?, last_ts = ? WHERE sid = ? AND part = ?",
                [(slot[0], slot[1], sid, part) for part, slot in state.items() if part in touched],
            )
            return positions

        positions = _write(conn, work)
        try:
            signal_published(self._signals, stream)
        except OSError as exc:
            # The records are committed; consumers elsewhere find them at their next fetch.
            _log.debug("embedded bus: could not signal a publish to %s: %s", stream, exc)
        return positions

    def consumer(
        self,
        streams: Sequence[str],
        group: str,
        *,
        start: StartPosition = "earliest",
        max_in_flight: int = 1000,
    ) -> Consumer:
        return EmbeddedConsumer(self, list(streams), group, start=start, max_in_flight=max_in_flight)

    async def committed_offsets(self, group: str, stream: str) -> dict[int, int]:
        def query() -> dict[int, int]:
            conn = self._db()
            sid, _ = self._stream_sync(conn, stream)
            rows = conn.execute("SELECT part, committed FROM offsets WHERE grp = ? AND sid = ?", (group, sid))
            return dict(rows.fetchall())

        return await self._run(query)

    async def consumer_groups(self, stream: str) -> list[str]:
        def query() -> list[str]:
            conn = self._db()
            sid, _ = self._stream_sync(conn, stream)
            rows = conn.execute("SELECT DISTINCT grp FROM offsets WHERE sid = ? ORDER BY grp", (sid,))
            return [str(row[0]) for row in rows.fetchall()]

        return await self._run(query)

    async def end_offsets(self, stream: str) -> dict[int, int]:
        def query() -> dict[int, int]:
            conn = self._db()
            sid, _ = self._stream_sync(conn, stream)
            rows = conn.execute("SELECT part, next_offset FROM partitions WHERE sid = ?", (sid,))
            return dict(rows.fetchall())

        return await self._run(query)

    async def set_committed_offsets(self, group: str, stream: str, offsets: Mapping[int, int]) -> None:
        def update() -> None:
            conn = self._db()
            sid, count = self._stream_sync(conn, stream)
            for part in offsets:
                if not 0 <= part < count:
                    raise BusError(f"embedded bus: stream {stream!r} has no partition {part}")
            _write(
                conn,
                lambda c: c.executemany(
                    _UPSERT_OFFSET,
                    [(group, sid, part, off) for part, off in offsets.items()],
                ),
            )

        await self._run(update)

    async def offsets_for_timestamp(self, stream: str, timestamp_ms: int) -> dict[int, int]:
        def query() -> dict[int, int]:
            conn = self._db()
            sid, _ = self._stream_sync(conn, stream)

            def work(conn: sqlite3.Connection) -> dict[int, int]:
                result = {}
                for part, end in conn.execute(
                    "SELECT part, next_offset FROM partitions WHERE sid = ?", (sid,)
                ).fetchall():
                    row = conn.execute(
                        "SELECT off FROM records WHERE sid = ? AND part = ? AND ts >= ? "
                        "ORDER BY ts, off LIMIT 1",
                        (sid, part, timestamp_ms),
                    ).fetchone()
                    result[part] = end if row is None else row[0]
                return result

            return _read(conn, work)

        return await self._run(query)

    async def healthy(self) -> bool:
        try:
            await self._run(lambda: self._db().execute("SELECT 1").fetchone())
        except (BusError, OSError):
            return False
        return True


def connect_database(path: Path, synchronous: str) -> sqlite3.Connection:
    """A tuned connection on an initialised database (schema creation is idempotent)."""
    conn = _connect(path, synchronous)
    try:
        _write(conn, _create_schema)
    except BaseException:
        conn.close()
        raise
    return conn


def _create_schema(conn: sqlite3.Connection) -> None:
    # executescript would COMMIT our open transaction, so run the statements one by one.
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


@dataclass(slots=True)
class _Owned:
    """A partition this member holds: stream id, the generation it was granted in, next offset."""

    sid: int
    generation: int
    position: int


@dataclass(slots=True)
class _Fetch:
    generation: int
    owned: dict[TopicPartition, _Owned] | None
    records: list[Record]
    # The position each partition's records were read from; applied only if still current.
    read_from: dict[TopicPartition, int]
    # False when a stream was created since the last rebalance (we may be missing partitions).
    streams_current: bool


class EmbeddedConsumer(Consumer):
    """A group member with its own connection (queries) and its own heartbeat thread.

    The heartbeat runs on a thread rather than the event loop so a loop busy with
    CPU-heavy processing does not get the member expired.
    """

    def __init__(
        self,
        bus: EmbeddedBus,
        streams: list[str],
        group: str,
        *,
        start: StartPosition,
        max_in_flight: int,
    ) -> None:
        self._bus = bus
        self._streams = sorted(set(streams))
        self._group = group
        self._start = start
        # Records are fetched only when poll asks, so in-flight never exceeds one poll's worth.
        self._record_cap = max(1, max_in_flight)
        self._member_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._generation = 0
        self._owned: dict[TopicPartition, _Owned] = {}
        self._rotation = 0
        # The idle back-off outlives a poll: a consumer that keeps getting nothing settles at
        # the longest sleep instead of restarting from the shortest on every poll call.
        self._idle_sleep = MIN_IDLE_SLEEP_S
        # After an empty fetch, the loop time before which only a publish signal brings another.
        self._fetch_after = 0.0
        self._wakeup = asyncio.Event()
        self._heartbeat_stop = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None

    async def start(self) -> None:
        if self._executor is not None:
            return
        if self._bus._executor is None:
            raise BusUnavailableError(f"embedded bus at {self._bus.directory} is not started")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedded-consumer")
        self._conn = await self._run(connect_database, self._bus.path, self._bus.synchronous)
        await self._run(self._heartbeat_sync, self._conn)
        await self._refresh()
        self._heartbeat_stop.clear()
        self._heartbeat_thread = threading.Thread(
            target=self._heartbeat_loop, name=f"embedded-heartbeat-{self._member_id}", daemon=True
        )
        self._heartbeat_thread.start()
        self._bus._waiters[self._wakeup] = frozenset(signal_name(stream) for stream in self._streams)

    async def stop(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        self._bus._waiters.pop(self._wakeup, None)
        self._heartbeat_stop.set()
        loop = asyncio.get_running_loop()
        if self._heartbeat_thread is not None:
            await loop.run_in_executor(None, self._heartbeat_thread.join)
            self._heartbeat_thread = None
        conn, self._conn = self._conn, None
        if conn is not None:
            await loop.run_in_executor(executor, self._leave_sync, conn)
        executor.shutdown(wait=True)
        self._owned = {}

    def _leave_sync(self, conn: sqlite3.Connection) -> None:
        def work(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM members WHERE grp = ? AND member = ?", (self._group, self._member_id))
            _rebalance(c, self._group)

        try:
            _write(conn, work)
        finally:
            conn.close()

    def _heartbeat_sync(self, conn: sqlite3.Connection) -> None:
        _write(
            conn,
            lambda c: _heartbeat(
                c, self._group, self._member_id, self._streams, self._bus.session_timeout_ms
            ),
        )

    def _heartbeat_loop(self) -> None:
        interval = max(0.05, self._bus.session_timeout_ms / 3000)
        conn = _connect(self._bus.path, self._bus.synchronous)
        try:
            while not self._heartbeat_stop.wait(interval):
                try:
                    self._heartbeat_sync(conn)
                except sqlite3.Error:
                    # The next beat retries; only a whole session timeout of failures loses the member.
                    _log.warning("embedded consumer %s: heartbeat failed", self._member_id, exc_info=True)
        finally:
            conn.close()

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await _on_executor(
            self._executor, "embedded consumer is not started", self._bus.directory, fn, *args
        )

    def _db(self) -> sqlite3.Connection:
        return _started(self._conn, "embedded consumer is not started")

    def _fetch_sync(
        self, known_generation: int, owned: dict[TopicPartition, _Owned], limit: int, rotation: int
    ) -> _Fetch:
        """Adopt a new assignment if the generation moved, then read up to limit records."""

        def work(conn: sqlite3.Connection) -> _Fetch:
            row = conn.execute(
                "SELECT g.generation, g.streams_version = m.v FROM groups g "
                "JOIN meta m ON m.k = 'streams_version' WHERE g.name = ?",
                (self._group,),
            ).fetchone()
            generation = 0 if row is None else row[0]
            streams_current = row is not None and bool(row[1])
            current = owned
            adopted = None
            if generation != known_generation:
                adopted = current = self._assignment_sync(conn, owned)
            records: list[Record] = []
            read_from: dict[TopicPartition, int] = {}
            size = 0
            tps = sorted(current)
            if tps:
                shift = rotation % len(tps)
                tps = tps[shift:] + tps[:shift]
            for tp in tps:
                if len(records) >= limit or (records and size >= MAX_POLL_BYTES):
                    break
                state = current[tp]
                read_from[tp] = state.position
                for off, ts, key, headers, value in conn.execute(
                    "SELECT off, ts, key, headers, value FROM records "
                    "WHERE sid = ? AND part = ? AND off >= ? ORDER BY off LIMIT ?",
                    (state.sid, tp[1], state.position, limit - len(records)),
                ):
                    decoded = msgpack.unpackb(headers) if headers is not None else {}
                    records.append(Record(tp[0], tp[1], off, value, key, decoded, ts))
                    size += len(value)
                    if size >= MAX_POLL_BYTES:
                        break
            return _Fetch(generation, adopted, records, read_from, streams_current)

        return _read(self._db(), work)

    def _assignment_sync(
        self, conn: sqlite3.Connection, owned: dict[TopicPartition, _Owned]
    ) -> dict[TopicPartition, _Owned]:
        """Our partitions in the current generation; newly granted ones start at the committed offset."""
        adopted: dict[TopicPartition, _Owned] = {}
        for sid, name, part, generation in conn.execute(
            "SELECT a.sid, s.name, a.part, a.generation FROM assignments a JOIN streams s ON s.id = a.sid "
            "WHERE a.grp = ? AND a.member = ?",
            (self._group, self._member_id),
        ).fetchall():
            tp = (name, part)
            before = owned.get(tp)
            if before is not None and before.generation == generation:
                adopted[tp] = before
                continue
            row = conn.execute(
                "SELECT committed FROM offsets WHERE grp = ? AND sid = ? AND part = ?",
                (self._group, sid, part),
            ).fetchone()
            if row is None:
                row = conn.execute(
                    "SELECT CASE WHEN ? = 'earliest' THEN 0 ELSE next_offset END FROM partitions "
                    "WHERE sid = ? AND part = ?",
                    (self._start, sid, part),
                ).fetchone()
            adopted[tp] = _Owned(sid, generation, row[0])
        return adopted

    def _apply(self, fetch: _Fetch, known_generation: int) -> list[Record]:
        """Take the fetch's assignment and advance positions; drop records raced by a seek."""
        if fetch.owned is not None and self._generation == known_generation:
            self._owned = fetch.owned
            self._generation = fetch.generation
        last: dict[TopicPartition, int] = {}
        for record in fetch.records:
            last[(record.stream, record.partition)] = record.offset
        stale: set[TopicPartition] = set()
        for tp, offset in last.items():
            state = self._owned.get(tp)
            if state is None or state.position != fetch.read_from[tp]:
                stale.add(tp)
            else:
                state.position = offset + 1
        if not stale:
            return fetch.records
        return [r for r in fetch.records if (r.stream, r.partition) not in stale]

    async def _refresh(self) -> None:
        known = self._generation
        fetch = await self._run(self._fetch_sync, known, dict(self._owned), 0, 0)
        self._apply(fetch, known)

    async def poll(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Record]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        limit = max(1, min(max_records, self._record_cap))
        while True:
            quiet = self._fetch_after - loop.time()
            if quiet > 0 and not self._wakeup.is_set():
                # The last fetch found nothing and nothing was published to these streams since:
                # wait for a publish (a local one wakes directly, another process's through its
                # signal file, _publish_signals) or the back-off, not for the next poll call.
                # Callers poll with short timeouts (the flags every 0.1 s); the log is not read
                # at each of them.
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return []
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), min(quiet, remaining))
                continue
            if self._wakeup.is_set():
                # A publish restarts the back-off.
                self._idle_sleep = MIN_IDLE_SLEEP_S
            self._wakeup.clear()
            known = self._generation
            self._rotation += 1
            fetch = await self._run(
                self._fetch_sync,
                known,
                {tp: _copy(s) for tp, s in self._owned.items()},
                limit,
                self._rotation,
            )
            records = self._apply(fetch, known)
            if records:
                self._idle_sleep = MIN_IDLE_SLEEP_S
                self._fetch_after = 0.0
                return records
            if not fetch.streams_current:
                # Rebalance now rather than at the next heartbeat, so new streams are read promptly.
                await self._run(self._heartbeat_sync, self._db())
                continue
            self._fetch_after = loop.time() + self._idle_sleep
            self._idle_sleep = min(self._idle_sleep * 2, self._bus.longest_idle_sleep_s)
            if loop.time() >= deadline:
                return []

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        if offsets is None:
            offsets = {tp: state.position for tp, state in self._owned.items()}
        rows = []
        for tp, off in offsets.items():
            state = self._owned.get(tp)
            if state is None:
                _log.warning("embedded consumer %s: not committing %s, not assigned", self._member_id, tp)
                continue
            rows.append((tp, state.sid, state.generation, off))
        if not rows:
            return
        fenced = await self._run(self._commit_sync, rows)
        if fenced:
            # The group moved on: the next poll reads the new assignment without waiting.
            self._fetch_after = 0.0
        for tp in fenced:
            _log.warning(
                "embedded consumer %s: commit of %s fenced, partition was reassigned", self._member_id, tp
            )

    def _commit_sync(self, rows: list[tuple[TopicPartition, int, int, int]]) -> list[TopicPartition]:
        def work(conn: sqlite3.Connection) -> list[TopicPartition]:
            fenced = []
            for tp, sid, generation, off in rows:
                held = conn.execute(
                    "SELECT 1 FROM assignments WHERE grp = ? AND sid = ? AND part = ? "
                    "AND member = ? AND generation = ?",
                    (self._group, sid, tp[1], self._member_id, generation),
                ).fetchone()
                if held is None:
                    fenced.append(tp)
                    continue
                conn.execute(
                    _UPSERT_OFFSET,
                    (self._group, sid, tp[1], off),
                )
            return fenced

        return _write(self._db(), work)

    async def seek(self, stream: str, partition: int, offset: int) -> None:
        await self._refresh()
        state = self._owned.get((stream, partition))
        if state is None:
            raise BusError(f"embedded consumer: cannot seek {stream}[{partition}], it is not assigned to me")
        state.position = offset
        self._fetch_after = 0.0

    def assignment(self) -> set[TopicPartition]:
        return set(self._owned)


def _copy(state: _Owned) -> _Owned:
    return _Owned(state.sid, state.generation, state.position)


def from_url(url: str) -> EmbeddedBus:
    """embedded:///abs/dir or embedded://relative/dir, options in the query string."""
    parts = urlsplit(url)
    if parts.scheme != "embedded":
        raise BusError(f"not an embedded:// URL: {url!r}")
    raw_path = parts.netloc + parts.path
    if not raw_path:
        raise BusError(f"embedded bus URL needs a directory: {url!r}")
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(options) - {"session_timeout_ms", "synchronous"}
    if unknown:
        raise BusError(f"embedded bus URL has unknown options {sorted(unknown)}: {url!r}")
    try:
        session_timeout_ms = int(options.get("session_timeout_ms", DEFAULT_SESSION_TIMEOUT_MS))
    except ValueError:
        raise BusError(f"embedded bus: session_timeout_ms must be an integer in {url!r}") from None
    if session_timeout_ms < 100:
        raise BusError(f"embedded bus: session_timeout_ms must be at least 100 in {url!r}")
    synchronous = options.get("synchronous", "normal").lower()
    if synchronous not in {"normal", "full"}:
        raise BusError(f"embedded bus: synchronous must be normal or full in {url!r}")
    return EmbeddedBus(Path(raw_path), session_timeout_ms=session_timeout_ms, synchronous=synchronous)
