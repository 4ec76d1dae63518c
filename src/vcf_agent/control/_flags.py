"""Feature flags: in memory for evaluation, in SQLite for restarts, converged through the log.

Every service applies the same `control-events` log in the same order with the
same rule (a change is accepted only if its version is above the flag's current
one), so all services reach the same state without talking to each other. A
write is published, then confirmed only when this service's own consumer has
applied it: two services racing to write version 6 both publish, the log
orders them, the first wins everywhere and the second is reported ABORTED.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from vcf_agent.bus import Bus, OutgoingMessage, Record
from vcf_agent.control._rollout import in_rollout
from vcf_agent.lifecycle import AsyncComponent
from vcf_agent.processing import CommitOffsets, StreamProcessor
from vcf_agent.schema import PayloadError, decode, encode
from vcf_agent.v1 import control_pb2, events_pb2

log = logging.getLogger(__name__)

_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS flags(key TEXT PRIMARY KEY, version INTEGER NOT NULL, flag BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS audit(
    seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, version INTEGER NOT NULL, entry BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS audit_by_key ON audit(key, seq);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the flag audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the flag audit log is append-only'); END;
"""

_VALUE_KIND = {
    control_pb2.FLAG_TYPE_BOOLEAN: "bool_value",
    control_pb2.FLAG_TYPE_STRING: "string_value",
    control_pb2.FLAG_TYPE_NUMBER: "number_value",
}


class StaleVersionError(Exception):
    """The write was based on an older version than the flag now has."""

    def __init__(self, key: str, expected: int, current: int) -> None:
        super().__init__(f"flag {key!r} is at version {current}, not {expected}; read it and retry")
        self.current = current


class FlagNotFoundError(KeyError):
    pass


@dataclass(frozen=True, slots=True)
class FieldError(ValueError):
    """A request field is missing or invalid; `field` is its path in the request."""

    field: str
    description: str


def validate_flag(flag: control_pb2.Flag) -> None:
    """Raise FieldError naming the first field of a SetFlagRequest.flag that cannot be stored."""
    if not flag.key:
        raise FieldError("flag.key", "flag.key is required")
    if not _KEY_PATTERN.match(flag.key):
        raise FieldError("flag.key", "use 1-200 letters, digits, '_', '.', ':' or '-'")
    if flag.type == control_pb2.FLAG_TYPE_UNSPECIFIED:
        raise FieldError("flag.type", "flag.type is required")
    kind = _VALUE_KIND.get(flag.type)
    if kind is not None:
        if flag.value.WhichOneof("kind") != kind:
            raise FieldError(
                "flag.value", f"a {control_pb2.FlagType.Name(flag.type)} flag needs value.{kind}"
            )
        return
    if not 0 <= flag.percentage <= 100:
        raise FieldError("flag.percentage", "percentage must be between 0 and 100")
    on, off = flag.on_value.WhichOneof("kind"), flag.off_value.WhichOneof("kind")
    if on and off and on != off:
        raise FieldError("flag.off_value", "on_value and off_value must be of the same kind")


def instance_group(service: str, directory: Path) -> str:
    """This instance's own control-events group, stable across restarts of the same data dir.

    Its own group (not one per service) because every instance must see every change.
    """
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / "instance-id"
    if not marker.exists():
        marker.write_text(uuid.uuid4().hex)
    return f"control-{service}-{marker.read_text().strip()}"


class FlagStore(AsyncComponent):
    """Flags of one service instance; start() replays `control-events` on top of the SQLite copy."""

    def __init__(self, path: Path, bus: Bus, stream: str, service: str, *, group: str) -> None:
        self.service = service
        self.group = group
        self._path = path
        self._bus = bus
        self._stream = stream
        self._flags: dict[str, control_pb2.Flag] = {}
        self._db: sqlite3.Connection | None = None
        self._waiters: dict[str, asyncio.Future[bool]] = {}
        self._watchers: set[asyncio.Queue[control_pb2.Flag | None]] = set()
        self._processor = StreamProcessor(
            bus, [stream], group, self._apply_records, service=service, start="earliest", poll_timeout_s=0.1
        )

    @property
    def processor(self) -> StreamProcessor:
        return self._processor

    async def start(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self._path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        for (blob,) in self._db.execute("SELECT flag FROM flags"):
            flag = control_pb2.Flag.FromString(blob)
            self._flags[flag.key] = flag
        await self._processor.start()

    async def stop(self) -> None:
        self.close_watchers()
        await self._processor.stop()
        if self._db is not None:
            self._db.close()
            self._db = None

    def close_watchers(self) -> None:
        """End every WatchFlags stream, so shutdown is not held up by them."""
        for queue in self._watchers:
            queue.put_nowait(None)

    def get(self, key: str) -> control_pb2.Flag | None:
        return self._flags.get(key)

    def flags(self) -> list[control_pb2.Flag]:
        return [self._flags[k] for k in sorted(self._flags)]

    async def set(
        self, flag: control_pb2.Flag, expected_version: int | None, actor: str, *, timeout_s: float = 10.0
    ) -> control_pb2.Flag:
        """Publish a change and return the flag once this service has applied it from the log."""
        validate_flag(flag)
        current = self._version(flag.key)
        if expected_version is not None and expected_version != current:
            raise StaleVersionError(flag.key, expected_version, current)
        now = Timestamp()
        now.GetCurrentTime()
        proposed = control_pb2.Flag()
        proposed.CopyFrom(flag)
        proposed.version = current + 1
        proposed.updated_by = actor
        proposed.updated_at.CopyFrom(now)
        origin = f"{self.service}/{uuid.uuid4().hex}"
        event = events_pb2.ControlEvent(
            service=self.service,
            origin=origin,
            timestamp=now,
            flag_change=events_pb2.FlagChange(
                key=flag.key,
                version=proposed.version,
                definition_json=json_format.MessageToJson(proposed, indent=None),
                actor=actor,
            ),
        )
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[origin] = waiter
        try:
            payload, headers = encode(event)
            await self._bus.publish(self._stream, [OutgoingMessage(payload, flag.key.encode(), headers)])
            accepted = await asyncio.wait_for(waiter, timeout_s)
        finally:
            self._waiters.pop(origin, None)
        if not accepted:
            raise StaleVersionError(flag.key, proposed.version - 1, self._version(flag.key))
        return self._flags[flag.key]

    def evaluate(
        self, key: str, targeting_key: str, context: Mapping[str, str]
    ) -> control_pb2.EvaluateFlagResponse:
        flag = self._flags.get(key)
        if flag is None:
            raise FlagNotFoundError(key)
        response = control_pb2.EvaluateFlagResponse(key=key, version=flag.version, type=flag.type)
        if flag.type != control_pb2.FLAG_TYPE_PERCENTAGE_ROLLOUT:
            response.value.CopyFrom(flag.value)
            response.variant = "default"
            response.reason = "STATIC"
            return response
        unit = context.get(flag.bucket_by, "") if flag.bucket_by else targeting_key
        if not unit:
            field = f"context[{flag.bucket_by}]" if flag.bucket_by else "targeting_key"
            raise FieldError(field, f"flag {key!r} is a percentage rollout and needs a {field} to bucket")
        inside = in_rollout(key, unit, flag.percentage)
        chosen = flag.on_value if inside else flag.off_value
        if chosen.WhichOneof("kind"):
            response.value.CopyFrom(chosen)
        else:
            response.value.bool_value = inside
        response.variant = "on" if inside else "off"
        response.reason = "SPLIT"
        return response

    def audit(self, key: str, limit: int, offset: int) -> list[control_pb2.FlagAuditEntry]:
        """Oldest first; `offset` counts entries already returned."""
        assert self._db is not None
        where, args = ("WHERE key = ?", [key]) if key else ("", [])
        rows = self._db.execute(
            f"SELECT entry FROM audit {where} ORDER BY seq LIMIT ? OFFSET ?", [*args, limit, offset]
        ).fetchall()
        return [control_pb2.FlagAuditEntry.FromString(blob) for (blob,) in rows]

    async def watch(self, keys: Sequence[str]) -> AsyncIterator[control_pb2.FlagUpdate]:
        """The current flags (initial), a synced marker, then each change until close_watchers()."""
        wanted = set(keys)
        queue: asyncio.Queue[control_pb2.Flag | None] = asyncio.Queue()
        # Registered in the same step as the snapshot, so no change falls between them.
        self._watchers.add(queue)
        snapshot = [f for f in self.flags() if not wanted or f.key in wanted]
        try:
            for flag in snapshot:
                yield control_pb2.FlagUpdate(flag=flag, initial=True)
            yield control_pb2.FlagUpdate(synced=True)
            while (change := await queue.get()) is not None:
                if not wanted or change.key in wanted:
                    yield control_pb2.FlagUpdate(flag=change)
        finally:
            self._watchers.discard(queue)

    def _version(self, key: str) -> int:
        flag = self._flags.get(key)
        return flag.version if flag is not None else 0

    async def _apply_records(self, records: list[Record]) -> CommitOffsets | None:
        for record in records:
            try:
                event = decode(record.value, record.headers, events_pb2.ControlEvent)
            except PayloadError as exc:
                log.warning(
                    "%s: skipping unreadable control event at offset %d: %s", self.service, record.offset, exc
                )
                continue
            if event.WhichOneof("event") == "flag_change":
                accepted = self._apply_change(event)
                waiter = self._waiters.get(event.origin)
                if waiter is not None and not waiter.done():
                    waiter.set_result(accepted)
        return None

    def _apply_change(self, event: events_pb2.ControlEvent) -> bool:
        change = event.flag_change
        previous = self._flags.get(change.key)
        if change.version <= (previous.version if previous is not None else 0) or not change.definition_json:
            return False
        flag = control_pb2.Flag()
        try:
            json_format.Parse(change.definition_json, flag)
        except json_format.ParseError as exc:
            log.warning("%s: ignoring flag change %s v%d: %s", self.service, change.key, change.version, exc)
            return False
        flag.key = change.key
        flag.version = change.version
        entry = control_pb2.FlagAuditEntry(
            key=change.key,
            version=change.version,
            actor=change.actor,
            timestamp=event.timestamp,
            origin=event.service,
            flag=flag,
        )
        if previous is not None:
            entry.previous.CopyFrom(previous)
        assert self._db is not None
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO flags(key, version, flag) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET version = excluded.version, flag = excluded.flag",
                (flag.key, flag.version, flag.SerializeToString()),
            )
            self._db.execute(
                "INSERT INTO audit(key, version, entry) VALUES (?, ?, ?)",
                (flag.key, flag.version, entry.SerializeToString()),
            )
        self._flags[flag.key] = flag
        for queue in self._watchers:
            queue.put_nowait(flag)
        return True
