"""The writer decides how a job ends from the answers it stored, once every variant is stored.

Real StoreSink, LanceDB, graph and embedded bus; the writes are DatabaseWrites as the
aggregator sends them, including partial ones whose provider missed the deadline.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from tests.observability._log_lines import json_log_lines, of
from vcf_agent.bus import Bus, Record, open_bus
from vcf_agent.config import Settings
from vcf_agent.runner import ensure_topology
from vcf_agent.schema import decode, encode
from vcf_agent.services.writer import GraphStore, LanceStore, StoreSink
from vcf_agent.services.writer._sink import _JobBook
from vcf_agent.v1 import analysis_pb2, events_pb2, variant_pb2

from ._writes import SAMPLES, make_write

JOB = "job-1"
TENANT = "tenant-1"
_READERS = itertools.count()
CLAUDE_DOWN = "claude: HTTP 529 overloaded_error: Overloaded (attempt 3)"


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[Bus]:
    bus = open_bus(f"embedded://{tmp_path / 'bus'}")
    await bus.start()
    await ensure_topology(bus, Settings(data_dir=tmp_path))
    yield bus
    await bus.stop()


@pytest.fixture
async def sink(tmp_path: Path, bus: Bus) -> AsyncIterator[StoreSink]:
    settings = Settings(data_dir=tmp_path, bus_url="embedded://unused")
    lance, graph = LanceStore(tmp_path / "lance"), GraphStore(tmp_path / "graph.lbug")
    lance.open()
    graph.open()
    sink = StoreSink(bus, settings, lance, graph)
    yield sink
    await sink.stop()
    graph.close()


def marker(
    kind: variant_pb2.JobMarker.Kind.ValueType, count: int = 0, job_id: str = JOB
) -> variant_pb2.JobMarker:
    return variant_pb2.JobMarker(kind=kind, job_id=job_id, tenant_id=TENANT, variant_count=count)


def answered(index: int) -> events_pb2.DatabaseWrite:
    """Both providers answered."""
    return make_write(index, job_id=JOB, tenant_id=TENANT, providers=("claude", "local"))


def claude_failed(index: int) -> events_pb2.DatabaseWrite:
    write = answered(index)
    failed = next(r for r in write.results if r.provider == "claude")
    failed.status = analysis_pb2.AnalysisResult.STATUS_FAILED
    failed.error = CLAUDE_DOWN
    failed.classification = ""
    return write


def claude_missing(index: int) -> events_pb2.DatabaseWrite:
    """Stored at the aggregator's deadline with local's answer only."""
    write = make_write(index, job_id=JOB, tenant_id=TENANT, providers=("local",))
    write.partial = True
    write.missing_providers.append("claude")
    return write


class Feed:
    """Hands batches to the sink as consecutive records of `database-writes`."""

    def __init__(self, sink: StoreSink) -> None:
        self._sink = sink
        self._offset = 0

    async def __call__(
        self, writes: list[events_pb2.DatabaseWrite], markers: Sequence[variant_pb2.JobMarker] = ()
    ) -> None:
        payload, headers = encode(events_pb2.DatabaseWriteBatch(writes=writes, markers=markers))
        await self._sink.handle([Record("database-writes", 0, self._offset, payload, None, headers, 0)])
        await self._sink.flush()
        self._offset += 1


async def storage_notes(bus: Bus) -> list[events_pb2.Notification]:
    # A fresh group each time: every notification from the start.
    consumer = bus.consumer([Settings().topology.user_notifications], f"reader-{next(_READERS)}")
    await consumer.start()
    try:
        notes = []
        while records := await consumer.poll(timeout_s=0.5):
            notes.extend(decode(r.value, r.headers, events_pb2.Notification) for r in records)
        return [n for n in notes if n.stage == events_pb2.STAGE_STORAGE]
    finally:
        await consumer.stop()


def counted(note: events_pb2.Notification) -> dict[str, tuple[int, int, int]]:
    return {name: (c.ok, c.failed, c.missing) for name, c in note.provider_counts.items()}


async def test_failed_and_missing_answers_end_the_job_complete_with_errors_once_all_are_stored(
    sink: StoreSink, bus: Bus
) -> None:
    feed = Feed(sink)
    await feed([], [marker(variant_pb2.JobMarker.KIND_STARTED)])
    await feed([answered(0), answered(1), answered(2)])
    # FINISHED says 6 while 3 are stored: the job is not decided yet, whatever the answers.
    await feed([claude_failed(3)], [marker(variant_pb2.JobMarker.KIND_FINISHED, 6)])
    notes = await storage_notes(bus)
    assert notes[-1].state == events_pb2.JOB_STATE_STORING and notes[-1].done == 4
    # Progress counts are reported as the batches are stored.
    assert counted(notes[-1]) == {"claude": (3, 1, 0), "local": (4, 0, 0)}

    await feed([claude_missing(4), claude_missing(5)])
    final = (await storage_notes(bus))[-1]
    assert final.state == events_pb2.JOB_STATE_COMPLETE_WITH_ERRORS
    assert (final.done, final.total) == (6, 6)
    assert counted(final) == {"claude": (3, 1, 2), "local": (6, 0, 0)}
    assert final.message == (
        f"claude: 1 of 6 analyses failed (1 x {CLAUDE_DOWN!r}) and 2 of 6 got no answer before the deadline"
    )

    # Decided on the answers the writes kept (the job had none at STARTED), they are what the
    # tables hold: read again after reopening, whichever providers the store is told to expect
    # (named ones are counted row by row, an answer from one not named makes it read them all).
    sink.lance.close()
    sink.lance.open()
    for expected in (["claude", "local"], ["local"], [], ["local", "openai"]):
        found = sink.lance.provider_counts(JOB, expected)
        assert {n: (c.ok, c.failed, c.missing) for n, c in found.items()} == counted(final), expected

    # A replay of stored batches changes neither the counts nor the state.
    await feed([answered(0), answered(1), claude_failed(3)])
    replayed = (await storage_notes(bus))[-1]
    assert replayed.state == events_pb2.JOB_STATE_COMPLETE_WITH_ERRORS
    assert counted(replayed) == {"claude": (3, 1, 2), "local": (6, 0, 0)}


async def test_every_answer_ok_is_complete_and_no_answer_ok_is_failed(sink: StoreSink, bus: Bus) -> None:
    feed = Feed(sink)
    await feed([], [marker(variant_pb2.JobMarker.KIND_STARTED)])
    await feed([answered(0), answered(1)], [marker(variant_pb2.JobMarker.KIND_FINISHED, 2)])
    done = (await storage_notes(bus))[-1]
    assert (done.state, done.message) == (events_pb2.JOB_STATE_COMPLETE, "complete")
    assert counted(done) == {"claude": (2, 0, 0), "local": (2, 0, 0)}

    # Another file, with claude alone, failing on both variants: stored, but nothing analysed.
    writes = [
        make_write(i, file_id="f" * 64, job_id="job-2", tenant_id=TENANT, providers=("claude",))
        for i in (0, 1)
    ]
    for write in writes:
        write.results[0].status = analysis_pb2.AnalysisResult.STATUS_FAILED
        write.results[0].error = CLAUDE_DOWN
    await feed([], [marker(variant_pb2.JobMarker.KIND_STARTED, job_id="job-2")])
    await feed(writes, [marker(variant_pb2.JobMarker.KIND_FINISHED, 2, job_id="job-2")])
    failed = (await storage_notes(bus))[-1]
    assert failed.job_id == "job-2" and failed.state == events_pb2.JOB_STATE_FAILED
    assert counted(failed) == {"claude": (0, 2, 0)}
    assert failed.message == f"no variant was analysed: claude: 2 of 2 analyses failed (2 x {CLAUDE_DOWN!r})"


def _stamped(marker: variant_pb2.JobMarker, seconds: int) -> variant_pb2.JobMarker:
    marker.timestamp.FromSeconds(seconds)
    return marker


async def test_a_stale_started_marker_delivered_late_does_not_reset_the_count(
    sink: StoreSink, bus: Bus
) -> None:
    """A STARTED held on a failover bus's dead backend arrives after its run's FINISHED (issue 18)."""
    feed = Feed(sink)
    started = _stamped(marker(variant_pb2.JobMarker.KIND_STARTED), 1_000)
    await feed([], [started])
    finished = _stamped(marker(variant_pb2.JobMarker.KIND_FINISHED, 2), 1_010)
    await feed([answered(0), answered(1)], [finished])
    assert (await storage_notes(bus))[-1].state == events_pb2.JOB_STATE_COMPLETE

    await feed([], [_stamped(marker(variant_pb2.JobMarker.KIND_STARTED), 1_000)])
    late = (await storage_notes(bus))[-1]
    assert (late.state, late.done, late.total) == (events_pb2.JOB_STATE_COMPLETE, 2, 2)

    # A resubmission's STARTED is newer than everything applied: it starts counting afresh.
    await feed([], [_stamped(marker(variant_pb2.JobMarker.KIND_STARTED), 2_000)])
    again = (await storage_notes(bus))[-1]
    assert (again.state, again.total) == (events_pb2.JOB_STATE_STORING, 0)


async def dead_letters(bus: Bus) -> list[events_pb2.DeadLetter]:
    consumer = bus.consumer([Settings().topology.dead_letters], f"reader-{next(_READERS)}")
    await consumer.start()
    try:
        letters = []
        while records := await consumer.poll(timeout_s=0.5):
            letters.extend(decode(r.value, r.headers, events_pb2.DeadLetter) for r in records)
        return letters
    finally:
        await consumer.stop()


def small_pool_sink(tmp_path: Path, bus: Bus) -> tuple[StoreSink, GraphStore]:
    """A sink on real stores whose graph buffer pool holds 1,000 variants per transaction but not
    10,000: the engine's real "buffer pool is full", which a retry of the same batch meets again."""
    settings = Settings(data_dir=tmp_path, bus_url="embedded://unused")
    lance, graph = (
        LanceStore(tmp_path / "lance"),
        GraphStore(tmp_path / "graph.lbug", buffer_pool_bytes=16 << 20),
    )
    lance.open()
    graph.open()
    return StoreSink(bus, settings, lance, graph), graph


async def test_a_batch_the_graph_cannot_hold_fails_its_job_with_the_reason(tmp_path: Path, bus: Bus) -> None:
    sink, graph = small_pool_sink(tmp_path, bus)
    feed = Feed(sink)
    try:
        await feed([], [marker(variant_pb2.JobMarker.KIND_STARTED)])
        await feed([answered(i) for i in range(100)])
        # The rejected batch does not raise (which would retry it forever): it is settled.
        await feed(
            [answered(i) for i in range(100, 10_100)], [marker(variant_pb2.JobMarker.KIND_FINISHED, 10_100)]
        )
        final = (await storage_notes(bus))[-1]
        assert final.state == events_pb2.JOB_STATE_FAILED
        assert (final.done, final.total) == (100, 10_100)
        assert "buffer pool" in final.message and "10000 variants" in final.message
        [letter] = await dead_letters(bus)
        assert (letter.error_code, letter.source_offset) == ("store_rejected", 2)
        assert "buffer pool is full" in letter.reason
        # Another job's batch that fits is stored and completes as usual.
        writes = [make_write(i, file_id="f" * 64, job_id="job-2", tenant_id=TENANT) for i in range(50)]
        await feed([], [marker(variant_pb2.JobMarker.KIND_STARTED, job_id="job-2")])
        await feed(writes, [marker(variant_pb2.JobMarker.KIND_FINISHED, 50, job_id="job-2")])
        other = (await storage_notes(bus))[-1]
        assert (other.job_id, other.state, other.done) == ("job-2", events_pb2.JOB_STATE_COMPLETE, 50)
    finally:
        await sink.stop()
        graph.close()


async def test_a_rejected_batch_is_logged_once_per_job_it_held(tmp_path: Path, bus: Bus) -> None:
    """--log-format json: each job's line names it, so an operator searching by job finds why it failed."""
    sink, graph = small_pool_sink(tmp_path, bus)
    # 10,000 variants in one batch, as in the test above: more than this buffer pool holds.
    writes = [answered(i) for i in range(6_000)] + [
        make_write(i, file_id="f" * 64, job_id="job-2", tenant_id=TENANT, providers=("claude", "local"))
        for i in range(4_000)
    ]
    try:
        with json_log_lines("writer") as lines:
            await Feed(sink)(writes)
    finally:
        await sink.stop()
        graph.close()
    rejected = [line for line in of(lines, "vcf_agent.services.writer._sink") if line["level"] == "ERROR"]
    assert sorted((line["job_id"], line["message"].split(" ")[4]) for line in rejected) == [
        ("job-1", "6000"),
        ("job-2", "4000"),
    ]
    assert all("buffer pool is full" in line["message"] for line in rejected)
    written = "\n".join(json.dumps(line) for line in lines)
    assert not any(sample in written for sample in SAMPLES)


def lost_letter(offset: int, variants: int, reason: str = "wire format was corrupt") -> Record:
    """A `dead-letters` record as the router sends it for a VariantBatch record it cannot read."""
    letter = events_pb2.DeadLetter(
        source_stream="vcf-variants",
        source_partition=0,
        source_offset=offset,
        reason=reason,
        error_code="corrupt_payload",
        job_id=JOB,
        tenant_id=TENANT,
        variant_count=variants,
    )
    payload, headers = encode(letter, tenant_id=TENANT)
    return Record("dead-letters", 0, offset, payload, None, headers, 0)


async def test_dead_lettered_variants_end_the_job_with_exact_counts_and_a_redrive_completes_it(
    sink: StoreSink, bus: Bus
) -> None:
    feed = Feed(sink)
    await feed([], [marker(variant_pb2.JobMarker.KIND_STARTED)])
    await feed([answered(i) for i in range(6)])
    # The router could not read one record of 4 variants; it read it twice (a restart),
    # which still loses those 4 only once.
    for _ in range(2):
        await sink.handle([lost_letter(7, 4)])
        await sink.flush()
    await feed([], [marker(variant_pb2.JobMarker.KIND_FINISHED, 10)])
    final = (await storage_notes(bus))[-1]
    assert final.state == events_pb2.JOB_STATE_COMPLETE_WITH_ERRORS
    assert (final.done, final.total) == (6, 10)
    assert final.message == "4 of 10 variants were dead-lettered (4 x 'wire format was corrupt')"

    # Redriven, the record's variants are stored after all: the state is decided again.
    await feed([answered(i) for i in range(6, 10)])
    redriven = (await storage_notes(bus))[-1]
    assert (redriven.state, redriven.done, redriven.message) == (
        events_pb2.JOB_STATE_COMPLETE,
        10,
        "complete",
    )


async def test_a_job_whose_every_variant_was_dead_lettered_fails(sink: StoreSink, bus: Bus) -> None:
    feed = Feed(sink)
    await feed([], [marker(variant_pb2.JobMarker.KIND_STARTED)])
    await sink.handle([lost_letter(1, 3, "stage could not parse")])
    await feed([], [marker(variant_pb2.JobMarker.KIND_FINISHED, 3)])
    final = (await storage_notes(bus))[-1]
    assert (final.state, final.done, final.total) == (events_pb2.JOB_STATE_FAILED, 0, 3)
    assert (
        final.message
        == "no variant was stored: 3 of 3 variants were dead-lettered (3 x 'stage could not parse')"
    )


async def test_records_ingest_dead_lettered_end_the_job_with_errors_or_failed_and_survive_a_restart(
    tmp_path: Path, bus: Bus
) -> None:
    """A file some of whose records broke the VCF specification was reported `complete`; one whose
    every record did, `complete` with nothing stored. The FINISHED marker's count of records ingest
    dead-lettered now ends the job complete_with_errors, or failed when no variant was stored."""
    settings = Settings(data_dir=tmp_path, bus_url="embedded://unused")

    async def run(job_id: str, variants: int, rejected: int) -> events_pb2.Notification:
        lance, graph = LanceStore(tmp_path / "lance"), GraphStore(tmp_path / f"{job_id}.lbug")
        lance.open()
        graph.open()
        sink = StoreSink(bus, settings, lance, graph)
        try:
            feed = Feed(sink)
            await feed([], [marker(variant_pb2.JobMarker.KIND_STARTED, job_id=job_id)])
            writes = [
                make_write(i, job_id=job_id, tenant_id=TENANT, providers=("local",)) for i in range(variants)
            ]
            await feed(writes)
            finished = marker(variant_pb2.JobMarker.KIND_FINISHED, variants, job_id=job_id)
            finished.dead_lettered = rejected
            await feed([], [finished])
        finally:
            await sink.stop()
            graph.close()
        return [n for n in await storage_notes(bus) if n.job_id == job_id][-1]

    partly = await run("job-partly", 4, 2)
    assert (partly.state, partly.done, partly.total) == (events_pb2.JOB_STATE_COMPLETE_WITH_ERRORS, 4, 4)
    assert partly.message == (
        "2 records of the file broke the VCF specification and went to the dead-letters stream, each"
        " with its line and reason"
    )
    wholly = await run("job-wholly", 0, 192)
    assert (wholly.state, wholly.done, wholly.total) == (events_pb2.JOB_STATE_FAILED, 0, 0)
    assert wholly.message.startswith("no variant was stored: 192 records of the file broke")
    clean = await run("job-clean", 3, 0)
    assert (clean.state, clean.message) == (events_pb2.JOB_STATE_COMPLETE, "complete")
    # The book keeps the count: a writer started again over it reads the same final state.
    book = _JobBook(tmp_path / "writer" / "jobs.sqlite")
    try:
        reloaded = book.load("job-partly")
        assert reloaded is not None and reloaded.rejected == 2
        assert reloaded.state == events_pb2.JOB_STATE_COMPLETE_WITH_ERRORS
    finally:
        book.close()
