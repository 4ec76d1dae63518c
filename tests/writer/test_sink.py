"""The writer's StoreSink on real stores and a real embedded bus: batches in flight fail and stop in order."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pyarrow as pa
import pytest

from vcf_agent.bus import Bus, Record, open_bus
from vcf_agent.config import Settings
from vcf_agent.runner import ensure_topology
from vcf_agent.schema import encode
from vcf_agent.services.writer import GraphStore, LanceStore, StoreSink
from vcf_agent.services.writer._rows import WriteRows
from vcf_agent.v1 import events_pb2

from ._writes import make_write

BATCH = 5


class GatedLance(LanceStore):
    """A real LanceStore whose writes wait for a gate, and whose chosen write fails."""

    def __init__(self, path: Path, fail_write: int | None = None) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.writes = 0
        self._fail_write = fail_write

    def write(
        self,
        batch: Sequence[events_pb2.DatabaseWrite] | WriteRows,
        *,
        maybe_stored: pa.ChunkedArray | None = None,
    ) -> None:
        self.gate.wait(timeout=30)
        self.writes += 1
        if self.writes == self._fail_write:
            raise RuntimeError("LanceDB unavailable")
        super().write(batch, maybe_stored=maybe_stored)


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[Bus]:
    bus = open_bus(f"embedded://{tmp_path / 'bus'}")
    await bus.start()
    yield bus
    await bus.stop()


def _sink(tmp_path: Path, bus: Bus, lance: LanceStore) -> tuple[StoreSink, GraphStore]:
    # Idle at the first empty poll, so that a test's handle([]) is the input going idle.
    settings = Settings(
        data_dir=tmp_path,
        bus_url="embedded://unused",
        writer_batch_rows=BATCH,
        writer_idle_compaction_after_ms=0,
    )
    graph = GraphStore(tmp_path / "graph.lbug")
    graph.open()
    lance.open()
    return StoreSink(bus, settings, lance, graph), graph


def _record(offset: int) -> Record:
    writes = [make_write(offset * BATCH + i) for i in range(BATCH)]
    payload, headers = encode(events_pb2.DatabaseWriteBatch(writes=writes))
    return Record("database-writes", 0, offset, payload, None, headers, 0)


async def _until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """The graph is read from outside the sink, so there is nothing to wait on but the condition."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def test_a_failed_lancedb_write_stops_every_later_batch(tmp_path: Path, bus: Bus) -> None:
    await ensure_topology(bus, Settings(data_dir=tmp_path))
    lance = GatedLance(tmp_path / "lance", fail_write=1)
    sink, graph = _sink(tmp_path, bus, lance)
    # Three batches in flight: the first held at LanceDB, the second and third behind it.
    released: dict[tuple[str, int], int] = {}
    for offset in range(3):
        released |= await sink.handle([_record(offset)]) or {}
    # The graph takes the later batches meanwhile (both, once it knows the file and samples).
    await _until(lambda: graph.counts().variants >= 2 * BATCH)
    flushes = [flush.done for flush in sink._flushing]
    lance.gate.set()
    with pytest.raises(RuntimeError, match="LanceDB unavailable"):
        await sink.flush()
    await asyncio.wait(flushes)
    # Nothing reached LanceDB after the failed batch and no offset was released, although the
    # graph took the next batch meanwhile (a replay merges it).
    assert lance.writes == 1
    assert lance.count() == 0
    assert released == {}
    assert graph.counts().variants <= 3 * BATCH
    graph.close()


async def test_cancelling_a_later_flush_leaves_the_earlier_one_to_finish(tmp_path: Path, bus: Bus) -> None:
    await ensure_topology(bus, Settings(data_dir=tmp_path))
    lance = GatedLance(tmp_path / "lance")
    sink, graph = _sink(tmp_path, bus, lance)
    await sink.handle([_record(0)])
    await sink.handle([_record(1)])
    await _until(lambda: graph.counts().variants == BATCH)
    later = sink._flushing[-1].done
    later.cancel()
    lance.gate.set()
    earlier = sink._flushing[0].done
    assert await earlier == {("database-writes", 0): 1}
    assert lance.count() == BATCH
    with pytest.raises(asyncio.CancelledError):
        await later
    graph.close()


class RecordingLance(LanceStore):
    """A real LanceStore that notes the variants of each batch it is given."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[int] = []

    def write(
        self,
        batch: Sequence[events_pb2.DatabaseWrite] | WriteRows,
        *,
        maybe_stored: pa.ChunkedArray | None = None,
    ) -> None:
        self.batches.append(len(batch))
        super().write(batch, maybe_stored=maybe_stored)


async def test_a_batch_of_many_samples_is_bounded_by_bytes_not_by_variant_count(
    tmp_path: Path, bus: Bus
) -> None:
    """Each variant carries every sample's call, so writer_batch_rows alone lets a cohort's batch
    be hundreds of times a single-sample one; writer_batch_bytes cuts it at the same memory."""
    await ensure_topology(bus, Settings(data_dir=tmp_path))
    samples = [(f"S{index:03d}", (0, index % 2), False) for index in range(200)]
    records, sizes = [], []
    for offset in range(8):
        batch = events_pb2.DatabaseWriteBatch(
            writes=[make_write(offset * BATCH + i, calls=samples) for i in range(BATCH)]
        )
        payload, headers = encode(batch)
        records.append(Record("database-writes", 0, offset, payload, None, headers, 0))
        # The bound counts the message's bytes as read, not as sent (the bus may compress them).
        sizes.append(batch.ByteSize())
    two_records = sizes[0] + sizes[1]
    settings = Settings(
        data_dir=tmp_path,
        bus_url="embedded://unused",
        writer_batch_rows=10_000,
        writer_batch_bytes=two_records,
    )
    lance = RecordingLance(tmp_path / "lance")
    graph = GraphStore(tmp_path / "graph.lbug")
    graph.open()
    lance.open()
    sink = StoreSink(bus, settings, lance, graph)
    await sink.handle(records)
    await sink.flush()
    assert lance.batches == [2 * BATCH] * 4
    assert lance.count() == 8 * BATCH
    graph.close()


class SlowCompactionLance(LanceStore):
    """A real LanceStore whose compaction, holding the store's lock, waits for a gate."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.compacting = threading.Event()

    def _compact(self) -> None:
        self.compacting.set()
        self.gate.wait(timeout=60)
        super()._compact()


async def test_stopping_does_not_wait_for_an_idle_compaction(tmp_path: Path, bus: Bus) -> None:
    """SIGTERM during a long idle compaction: the writer stops within its grace period.

    After large jobs the writer took more than its 30 s grace to exit: stop() awaited the
    compaction it starts when the input goes idle, and the interpreter joined the worker
    thread running it. Cut short, the compaction loses nothing (its commit is atomic).
    """
    await ensure_topology(bus, Settings(data_dir=tmp_path))
    lance = SlowCompactionLance(tmp_path / "lance")
    sink, graph = _sink(tmp_path, bus, lance)
    await sink.handle([_record(0)])
    assert await sink.flush() == {("database-writes", 0): 1}
    await sink.handle([])  # the input is idle: compaction starts
    await _until(lance.compacting.is_set)

    async def stop_the_writer() -> None:
        # As the writer's component stack does: the sink, then the stores.
        await sink.stop()
        await graph.stop()
        await lance.stop()

    stopping = asyncio.create_task(stop_the_writer())
    done, _ = await asyncio.wait([stopping], timeout=30)
    still_compacting = not lance.gate.is_set()
    lance.gate.set()
    assert stopping in done and still_compacting, "stop waited for the idle compaction"
    await stopping
    # The interpreter does not wait for the compaction's thread at exit.
    assert all(t.daemon for t in threading.enumerate() if t.name == "writer-idle-compaction")
    await _until(lambda: not any(t.name == "writer-idle-compaction" for t in threading.enumerate()))
    reopened = LanceStore(tmp_path / "lance")
    reopened.open()
    assert reopened.count() == BATCH
    reopened.close()


async def test_an_idle_writer_checkpoints_the_graph_so_stopping_has_little_left(
    tmp_path: Path, bus: Bus
) -> None:
    """After a 500,000-variant job the writer's stop spent 18 s checkpointing the graph's log at close.

    When its input goes idle the writer folds the log into the database file, so the log is
    empty by the time it stops; a write after that starts a new log, folded at the next idle.
    """
    await ensure_topology(bus, Settings(data_dir=tmp_path))
    sink, graph = _sink(tmp_path, bus, LanceStore(tmp_path / "lance"))
    log = tmp_path / "graph.lbug.wal"

    def logged() -> int:
        return log.stat().st_size if log.exists() else 0

    for offset in range(2):
        await sink.handle([_record(offset)])
        await sink.flush()
        assert logged() > 0, "the batch is in the graph's log until a checkpoint"
        await sink.handle([])  # the input is idle
        idle = sink._idle_compaction
        assert idle is not None
        assert await idle
        assert logged() == 0, "the idle writer left the graph's log for close to checkpoint"
    await sink.stop()
    graph.close()
    reopened = GraphStore(tmp_path / "graph.lbug")
    reopened.open()
    assert reopened.counts().variants == 2 * BATCH
    reopened.close()


async def test_a_lingering_batch_leaves_when_the_stores_free_up_without_new_input(
    tmp_path: Path, bus: Bus
) -> None:
    await ensure_topology(bus, Settings(data_dir=tmp_path))
    lance = GatedLance(tmp_path / "lance")
    graph = GraphStore(tmp_path / "graph.lbug")
    graph.open()
    lance.open()
    # Batches far from full and a linger longer than the test: only the stores freeing up can
    # send the second batch on its way.
    settings = Settings(
        data_dir=tmp_path, bus_url="embedded://unused", writer_batch_rows=100, writer_linger_ms=600_000
    )
    sink = StoreSink(bus, settings, lance, graph)
    # The stores are idle: the first batch leaves at once and is held at LanceDB.
    assert await sink.handle([_record(0)]) == {}
    # The graph is still taking the first: the second lingers to grow.
    assert await sink.handle([_record(1)]) == {}
    assert sink.buffered == BATCH
    lance.gate.set()
    # No further call: it leaves once the graph is free, not at the consumer's next poll.
    await _until(lambda: lance.count() == 2 * BATCH)
    # Its offsets are released by the next call, only once both stores hold it.
    await _until(lambda: all(flush.done.done() for flush in sink._flushing))
    assert await sink.handle([]) == {("database-writes", 0): 2}
    assert graph.counts().variants == 2 * BATCH
    await sink.stop()
    graph.close()


async def test_a_lingering_batch_enters_the_graph_while_lancedb_still_holds_the_one_before(
    tmp_path: Path, bus: Bus
) -> None:
    # Neither full nor due (a minute's linger): the second batch leaves once the graph is free,
    # not once LanceDB is, so the graph works while LanceDB does.
    await ensure_topology(bus, Settings(data_dir=tmp_path))
    lance = GatedLance(tmp_path / "lance")
    settings = Settings(
        data_dir=tmp_path, bus_url="embedded://unused", writer_batch_rows=100 * BATCH, writer_linger_ms=60_000
    )
    graph = GraphStore(tmp_path / "graph.lbug")
    graph.open()
    lance.open()
    sink = StoreSink(bus, settings, lance, graph)
    released = await sink.handle([_record(0)]) or {}
    released |= await sink.handle([_record(1)]) or {}
    await _until(lambda: graph.counts().variants == 2 * BATCH, timeout_s=10)
    assert lance.writes == 0
    assert sink.buffered == 0
    lance.gate.set()
    released |= await sink.flush()
    assert released == {("database-writes", 0): 2}
    assert lance.count() == 2 * BATCH
    graph.close()


async def test_the_writer_compacts_only_once_its_input_was_quiet_for_the_set_time(
    tmp_path: Path, bus: Bus
) -> None:
    # A job's writes pause for a poll or two whenever the writer catches up with them; a
    # compaction started at such an empty poll held the job's last batches.
    await ensure_topology(bus, Settings(data_dir=tmp_path))
    settings = Settings(
        data_dir=tmp_path,
        bus_url="embedded://unused",
        writer_batch_rows=BATCH,
        writer_idle_compaction_after_ms=60_000,
    )
    graph = GraphStore(tmp_path / "graph.lbug")
    graph.open()
    lance = LanceStore(tmp_path / "lance")
    lance.open()
    sink = StoreSink(bus, settings, lance, graph)
    await sink.handle([_record(0)])
    await sink.flush()
    await sink.handle([])  # a poll came back empty: not yet idle
    assert sink._idle_compaction is None
    sink._last_input -= 60  # a minute without input
    await sink.handle([])
    idle = sink._idle_compaction
    assert idle is not None
    assert await idle
    await sink.handle([_record(1)])
    await sink.flush()
    await sink.handle([])
    assert sink._idle_compaction is idle, "input came again: quiet starts over"
    await sink.stop()
    graph.close()
