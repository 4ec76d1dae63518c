"""The correlator's batch loop publishes exactly what build_write assembles for each variant.

Randomized: local answers spliced variant-first (as the router's local worker sends them)
or plain, single-provider variants mixed with ones that wait for a second provider.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from vcf_agent.analysis import LocalProvider, build_write
from vcf_agent.app.benchmarks import synthetic_batch
from vcf_agent.bus import OutgoingMessage, Record
from vcf_agent.config import Settings
from vcf_agent.schema import decode, encode, encode_serialized, message_type, variant_first_result
from vcf_agent.services.aggregator import Correlator
from vcf_agent.v1 import analysis_pb2, events_pb2, variant_pb2


class _Published:
    """A bus that keeps what was published."""

    def __init__(self) -> None:
        self.messages: dict[str, list[OutgoingMessage]] = {}

    async def publish(self, stream: str, messages: Sequence[OutgoingMessage]) -> None:
        self.messages.setdefault(stream, []).extend(messages)


def _record(offset: int, payload: bytes, headers: dict[str, str]) -> Record:
    return Record("ai-analysis-results", 0, offset, payload, b"k", headers, 0)


def _answers(seed: int) -> tuple[list[analysis_pb2.AnalysisResult], list[Record]]:
    """Local answers for random variants, some asking for a second provider, as result records."""
    rng = random.Random(seed)
    variants = synthetic_batch(seed * 1000, 60, samples=rng.randint(1, 3)).variants
    for variant in variants:
        variant.job_id = rng.choice(("job-a", "job-b"))
        variant.tenant_id = "tenant-a" if variant.job_id == "job-a" else "tenant-b"
    requests = analysis_pb2.AnalysisRequestBatch(provider="local", requested_providers=["local"])
    requests.variant_batch.variants.extend(variants)
    answers = list(LocalProvider()._analyse_batch(requests).results)
    for answer in answers:
        if rng.random() < 0.2:
            answer.requested_providers[:] = ["local", "openai"]
        if rng.random() < 0.1:
            answer.status = analysis_pb2.AnalysisResult.STATUS_FAILED
            answer.classification = ""
    records = []
    for start in range(0, len(answers), 20):
        chunk = answers[start : start + 20]
        if rng.random() < 0.5:
            serialized = b"".join(
                variant_first_result(a.variant.SerializeToString(), _without_variant(a).SerializeToString())
                for a in chunk
            )
        else:
            serialized = analysis_pb2.AnalysisResultBatch(results=chunk).SerializeToString()
        payload, headers = encode_serialized(
            serialized, analysis_pb2.AnalysisResultBatch.DESCRIPTOR.full_name, compression_threshold=1 << 30
        )
        records.append(_record(len(records), payload, headers))
    return answers, records


def _without_variant(answer: analysis_pb2.AnalysisResult) -> analysis_pb2.AnalysisResult:
    rest = analysis_pb2.AnalysisResult()
    rest.CopyFrom(answer)
    rest.ClearField("variant")
    return rest


@pytest.mark.parametrize("seed", range(6))
async def test_batch_writes_equal_build_write(seed: int, tmp_path: Path) -> None:
    answers, records = _answers(seed)
    second = [a for a in answers if len(a.requested_providers) > 1]
    for offset, answer in enumerate(second, start=len(records)):
        other = analysis_pb2.AnalysisResult(
            correlation_id=answer.correlation_id,
            job_id=answer.job_id,
            tenant_id=answer.tenant_id,
            provider="openai",
            status=analysis_pb2.AnalysisResult.STATUS_OK,
            classification="pathogenic",
            requested_providers=answer.requested_providers,
        )
        other.variant.CopyFrom(answer.variant)
        records.append(_record(offset, *encode(analysis_pb2.AnalysisResultBatch(results=[other]))))
    marker = variant_pb2.JobMarker(
        kind=variant_pb2.JobMarker.KIND_FINISHED, job_id="job-a", tenant_id="tenant-a"
    )
    records.insert(len(records) // 2, _record(len(records), *encode(marker)))

    bus = _Published()
    settings = Settings(data_dir=tmp_path)
    correlator = Correlator(bus, settings)  # type: ignore[arg-type]
    for start in range(0, len(records), 4):
        await correlator.handle(records[start : start + 4])

    published: dict[str, list[events_pb2.DatabaseWrite]] = {}
    markers = []
    for message in bus.messages[settings.topology.database_writes]:
        assert message_type(message.headers) == events_pb2.DatabaseWriteBatch.DESCRIPTOR.full_name
        batch = decode(message.value, message.headers, events_pb2.DatabaseWriteBatch)
        assert all(w.job_id == message.key.decode() for w in batch.writes)  # type: ignore[union-attr]
        published.setdefault(message.key.decode(), []).extend(batch.writes)  # type: ignore[union-attr]
        markers.extend(batch.markers)
    assert markers == [marker]

    expected: dict[str, list[events_pb2.DatabaseWrite]] = {}
    by_cid = {a.correlation_id: a for a in second}
    for answer in answers:
        if answer.correlation_id in by_cid:
            continue
        write = build_write(answer.correlation_id, [answer], frozenset({"local"}), partial=False)
        expected.setdefault(answer.job_id, []).append(write)
    assert correlator.pending == 0
    for job_id, writes in published.items():
        single = [w for w in writes if len(w.results) == 1]
        assert single == expected.get(job_id, [])
        merged = [w for w in writes if len(w.results) == 2]
        assert sorted(w.correlation_id for w in merged) == sorted(
            a.correlation_id for a in second if a.job_id == job_id
        )
        # A spliced answer held for a second provider keeps its variant.
        assert all(w.variant == by_cid[w.correlation_id].variant for w in merged)
        progress = correlator._jobs[job_id]
        assert progress.analysed == len(writes)
        assert progress.classifications == Counter(w.classification for w in writes)


def _spliced_batch(answer_tail: bytes = b"", cut: int = 0) -> bytes:
    (answer,) = (
        LocalProvider()
        ._analyse_batch(
            analysis_pb2.AnalysisRequestBatch(
                provider="local",
                requested_providers=["local"],
                variant_batch=synthetic_batch(0, 1, samples=2),
            )
        )
        .results
    )
    serialized = variant_first_result(
        answer.variant.SerializeToString(), _without_variant(answer).SerializeToString() + answer_tail
    )
    return serialized[: len(serialized) - cut]


CORRUPT_RESULTS = {
    # Invalid UTF-8 in the answer's rationale: the answers are parsed, so upb refuses it.
    "a corrupt answer": _spliced_batch(b"\x52\x01\xff"),
    "a result cut short": _spliced_batch(cut=3),
}


@pytest.mark.parametrize("serialized", CORRUPT_RESULTS.values(), ids=CORRUPT_RESULTS.keys())
async def test_a_corrupt_spliced_batch_is_dead_lettered(serialized: bytes, tmp_path: Path) -> None:
    bus = _Published()
    settings = Settings(data_dir=tmp_path)
    correlator = Correlator(bus, settings)  # type: ignore[arg-type]
    payload, headers = encode_serialized(serialized, analysis_pb2.AnalysisResultBatch.DESCRIPTOR.full_name)
    await correlator.handle([_record(0, payload, headers)])
    assert settings.topology.database_writes not in bus.messages
    (letter_message,) = bus.messages[settings.topology.dead_letters]
    letter = decode(letter_message.value, letter_message.headers, events_pb2.DeadLetter)
    assert (letter.error_code, letter.original_payload) == ("corrupt_payload", payload)


class _Ordered:
    """A bus that keeps every published message in one order: (stream, message)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, OutgoingMessage]] = []

    async def publish(self, stream: str, messages: Sequence[OutgoingMessage]) -> None:
        self.published.extend((stream, message) for message in messages)


async def test_a_jobs_analysis_progress_is_published_before_its_first_write(tmp_path: Path) -> None:
    """The writer announces storage only of published writes, so this order is what watchers see.

    Published after the writes, the aggregator's analysis event of a 381-variant job reached
    Kafka after the writer's "complete", and a WebSocket watcher never saw the analysis stage.
    The second job's first results arrive within the progress interval of the first job's
    event: a job's first analysis progress is not held back by the interval.
    """
    variants = synthetic_batch(7000, 40, samples=1).variants
    for index, variant in enumerate(variants):
        variant.job_id = "job-a" if index < 20 else "job-b"
        variant.tenant_id = "tenant-a" if index < 20 else "tenant-b"
    requests = analysis_pb2.AnalysisRequestBatch(provider="local", requested_providers=["local"])
    requests.variant_batch.variants.extend(variants)
    answers = list(LocalProvider()._analyse_batch(requests).results)
    records = [
        _record(offset, *encode(analysis_pb2.AnalysisResultBatch(results=answers[start : start + 20])))
        for offset, start in enumerate((0, 20))
    ]
    bus = _Ordered()
    settings = Settings(data_dir=tmp_path)
    correlator = Correlator(bus, settings)  # type: ignore[arg-type]
    for record in records:
        await correlator.handle([record])

    first_analysis: dict[str, int] = {}
    first_write: dict[str, int] = {}
    for index, (stream, message) in enumerate(bus.published):
        job_id = message.key.decode()
        if stream == settings.topology.user_notifications:
            note = decode(message.value, message.headers, events_pb2.Notification)
            assert note.stage == events_pb2.STAGE_ANALYSIS  # type: ignore[union-attr]
            first_analysis.setdefault(job_id, index)
        else:
            assert stream == settings.topology.database_writes
            first_write.setdefault(job_id, index)
    assert first_write.keys() == first_analysis.keys() == {"job-a", "job-b"}
    assert all(first_analysis[job] < first_write[job] for job in first_write), (first_analysis, first_write)
