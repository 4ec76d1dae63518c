"""One job through the five services: one OpenTelemetry trace, and no personal data anywhere.

The five services run in one process here (`vcf-agent run`'s LocalPipeline) over the
embedded log, so the trace context crosses every stream exactly as between processes:
only the message headers carry it (test_jaeger.py sends the same from five processes to
a real Jaeger). The job is PyVCF3's 1000 Genomes extract (629 samples) with one record's
POS broken and one sample's genotype broken, run with DEBUG logs in JSON, tracing into an
in-memory exporter, and /metrics rendered: then every one of those, and every dead
letter's reason, is searched for each sample name and for the sample fields (genotype and
likelihoods) of the broken record.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import generate_latest

from tests.e2e.test_five_processes import ONE_KG
from vcf_agent import tracing
from vcf_agent.app.pipeline import LocalPipeline
from vcf_agent.config import SERVICES, Settings
from vcf_agent.control._dead_letters import read_dead_letters
from vcf_agent.observability import JsonLogFormatter
from vcf_agent.v1 import events_pb2


def broken_file(directory: Path) -> tuple[Path, list[str], list[str]]:
    """The extract with record 10's POS and record 20's 5th genotype broken; (path, samples, fields)."""
    with gzip.open(ONE_KG, "rt") as source:
        lines = source.read().splitlines(keepends=True)
    samples = next(line for line in lines if line.startswith("#CHROM")).rstrip("\n").split("\t")[9:]
    first = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    columns = lines[first + 9].split("\t")
    columns[1] = "x1"
    lines[first + 9] = "\t".join(columns)
    columns = lines[first + 19].rstrip("\n").split("\t")
    columns[13] = "0|Z" + columns[13][3:]
    lines[first + 19] = "\t".join(columns) + "\n"
    # What identifies a person's call: the whole sample field (GT:GQ:GL...), broken one included.
    fields = sorted({field for field in columns[9:] if len(field) >= 12})
    path = directory / "1kg-two-bad.vcf"
    path.write_text("".join(lines))
    return path, samples, fields


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonLogFormatter("pipeline"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def job_trace(finished: tuple[ReadableSpan, ...], job_id: str) -> list[ReadableSpan]:
    roots = [
        s for s in finished if s.name == "ingest.job" and s.attributes and s.attributes["job_id"] == job_id
    ]
    assert len(roots) == 1, [s.name for s in finished]
    trace_id = roots[0].context.trace_id
    return [s for s in finished if s.context.trace_id == trace_id]


def check_one_trace(trace: list[ReadableSpan], finished: tuple[ReadableSpan, ...], job_id: str) -> None:
    by_id = {s.context.span_id: s for s in trace}
    services = {str(s.attributes["vcf_agent.service"]) for s in trace if s.attributes}
    assert services == set(SERVICES), services
    # Every span but the job's hangs under another span of the same trace.
    roots = [s for s in trace if s.parent is None or s.parent.span_id not in by_id]
    assert [s.name for s in roots] == ["ingest.job"], [(s.name, s.parent) for s in roots]

    def parent_name(span: ReadableSpan) -> str:
        assert span.parent is not None
        return by_id[span.parent.span_id].name

    names = {s.name for s in trace}
    assert {"ingest.publish_batch", "router.route", "router.analyse", "aggregator.aggregate"} <= names
    assert {"writer.store", "notifier.deliver"} <= names
    expected_parents = {
        "ingest.publish_batch": {"ingest.job"},
        "router.route": {"ingest.publish_batch"},
        "router.analyse": {"router.route"},
        # A batch that only forwards the job's first marker continues from the job itself.
        "aggregator.aggregate": {"router.analyse", "ingest.job"},
        "writer.store": {"aggregator.aggregate"},
        # Progress from ingest, the aggregator and the writer all reaches the notifier.
        "notifier.deliver": {"ingest.job", "aggregator.progress", "writer.store"},
    }
    for span in trace:
        if span.name in expected_parents:
            assert parent_name(span) in expected_parents[span.name], (span.name, parent_name(span))
    assert any(s.name == "notifier.deliver" and parent_name(s) == "writer.store" for s in trace)
    assert any(s.name == "aggregator.aggregate" and parent_name(s) == "router.analyse" for s in trace)
    # Nothing of this job's is in another trace.
    others = [
        (s.name, dict(s.attributes or {}), s.parent)
        for s in finished
        if s.attributes
        and s.attributes.get("job_id") == job_id
        and s.context.trace_id != trace[0].context.trace_id
    ]
    assert not others, others


async def test_one_job_is_one_trace_with_no_personal_data(tmp_path: Path, json_log: io.StringIO) -> None:
    vcf, samples, fields = broken_file(tmp_path)
    assert len(samples) == 629 and fields
    exporter = InMemorySpanExporter()
    assert tracing.configure("pipeline", exporter=exporter)
    try:
        settings = Settings(data_dir=tmp_path / "data")
        async with LocalPipeline(settings) as pipeline:
            job = await pipeline.wait(await pipeline.submit(vcf, tenant_id="lab-a"), timeout_s=180)
            # Two records of the file were dead-lettered: the job ends with errors, naming them.
            assert job.state == events_pb2.JOB_STATE_COMPLETE_WITH_ERRORS, job.error
            assert job.error.startswith("2 records of the file broke the VCF specification"), job.error
            assert job.counts.dead_lettered == 2, job
            letters = await read_dead_letters(
                pipeline.bus, settings.topology.dead_letters, job_id=job.job_id, timeout_s=30
            )
    finally:
        tracing.shutdown()
    finished = exporter.get_finished_spans()
    trace = job_trace(finished, job.job_id)
    check_one_trace(trace, finished, job.job_id)
    # One publish span per VariantBatch, each routed once.
    published = [s for s in trace if s.name == "ingest.publish_batch"]
    assert sum(int(s.attributes["variants"]) for s in published if s.attributes) == job.counts.total
    assert len([s for s in trace if s.name == "router.route"]) == len(published)
    reasons = [entry.letter.reason for entry in letters]
    assert len(reasons) == 2 and any("genotype" in r for r in reasons), reasons
    logs = json_log.getvalue()
    lines = [json.loads(line) for line in logs.splitlines()]
    assert lines and all(line["service"] == "pipeline" for line in lines)
    # Lines about the job name it in their job_id field, the dead letters' lines included.
    about = [line for line in lines if job.job_id in line["message"]]
    assert about and all(line.get("job_id") == job.job_id for line in about), about
    dead = [line for line in lines if line["message"].startswith("dead letter from")]
    assert len(dead) == 2 and all(line["job_id"] == job.job_id for line in dead), dead
    spans = [
        json.dumps(
            {"name": s.name, "attributes": dict(s.attributes or {}), "events": [e.name for e in s.events]}
        )
        for s in finished
    ]
    assert spans
    metrics = generate_latest().decode()
    # Whole JSON lines: the message and every field (job, correlation, trace ids) are searched.
    places = {
        "logs": logs,
        "spans": "\n".join(spans),
        "metrics": metrics,
        "dead-letter reasons": "\n".join(reasons),
    }
    for where, text in places.items():
        named = [s for s in samples if s in text]
        assert not named, f"sample names in {where}: {named[:5]}"
        called = [f for f in fields if f in text]
        assert not called, f"genotype fields in {where}: {called[:3]}"
        assert "0|Z" not in text, where
