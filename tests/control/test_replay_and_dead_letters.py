"""ReplayJob re-runs a job from the retained stream; dead letters are listed and redriven."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from tests.control.conftest import PROBE_STREAM, HostFactory, control_stub, probe_service
from tests.control.test_checkpoints import until
from tests.control.test_flags import bad_request_fields
from vcf_agent.app.cli import EXAMPLE_VCF
from vcf_agent.bus import Bus
from vcf_agent.config import Settings
from vcf_agent.control._scan import scan_stream
from vcf_agent.processing import DeadLetterSink
from vcf_agent.schema import decode, message_type
from vcf_agent.services import ingest
from vcf_agent.v1 import control_pb2, events_pb2, variant_pb2

VARIANTS = Settings().topology.variants


async def job_batches(bus: Bus, job_id: str) -> tuple[int, int, int]:
    """(batches, variants, markers) of a job on vcf-variants, every run included."""
    batches = variants = markers = 0
    async for records in scan_stream(bus, VARIANTS, timeout_s=20):
        for record in records:
            if message_type(record.headers) == variant_pb2.JobMarker.DESCRIPTOR.full_name:
                markers += decode(record.value, record.headers, variant_pb2.JobMarker).job_id == job_id
            else:
                batch = decode(record.value, record.headers, variant_pb2.VariantBatch)
                if batch.variants[0].job_id == job_id:
                    batches += 1
                    variants += len(batch.variants)
    return batches, variants, markers


async def test_replay_job_republishes_the_jobs_variants_without_the_file(
    bus: Bus, run_host: HostFactory, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "ingest", bus_url=f"embedded://{tmp_path / 'bus'}", batch_size=3)
    parts = ingest.build(settings, bus)
    async with run_host(parts, batch_size=3) as host, control_stub(host.control.address) as stub:
        copy = tmp_path / "copy.vcf"
        copy.write_bytes(EXAMPLE_VCF.read_bytes())
        publisher = parts.publisher
        job = await publisher.submit(copy, tenant_id="lab-a")
        await publisher.wait(job.job_id)
        first = await job_batches(bus, job.job_id)
        assert first[0] >= 2 and first[2] == 2
        copy.unlink()  # the replay must not need the file

        replayed = await stub.ReplayJob(control_pb2.ReplayJobRequest(job_id=job.job_id))
        assert (replayed.batches, replayed.variants, replayed.markers) == first
        assert replayed.stream == VARIANTS
        assert await job_batches(bus, job.job_id) == tuple(2 * n for n in first)

        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.ReplayJob(control_pb2.ReplayJobRequest(job_id="no-such-job"))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.ReplayJob(control_pb2.ReplayJobRequest())
        assert bad_request_fields(missing.value) == ["job_id"]


async def test_dead_letters_are_listed_and_redriven_to_their_source(bus: Bus, run_host: HostFactory) -> None:
    parts, recorder = probe_service(bus)
    sink = DeadLetterSink(bus, Settings().topology.dead_letters, "probe")
    await sink.send(
        [
            events_pb2.DeadLetter(
                original_payload=b"try-me-again",
                original_headers={"message-type": "x.Probe", "tenant-id": "lab-a"},
                source_stream=PROBE_STREAM,
                source_partition=1,
                source_offset=7,
                reason="provider timed out",
                error_code="timeout",
                job_id="job-1",
                tenant_id="lab-a",
            ),
            events_pb2.DeadLetter(
                source_stream="file.vcf",
                reason="bad POS",
                error_code="vcf_parse",
                job_id="job-2",
                raw_line="chr1\tx",
                line_number=12,
            ),
        ]
    )
    async with run_host(parts) as host, control_stub(host.control.address) as stub:
        listed = await stub.ListDeadLetters(control_pb2.ListDeadLettersRequest())
        assert [e.letter.job_id for e in listed.entries] == ["job-1", "job-2"]
        assert listed.entries[1].letter.line_number == 12
        only = await stub.ListDeadLetters(
            control_pb2.ListDeadLettersRequest(job_id="job-2", omit_payload=True)
        )
        assert [e.letter.reason for e in only.entries] == ["bad POS"]
        paged = await stub.ListDeadLetters(control_pb2.ListDeadLettersRequest(page_size=1))
        assert len(paged.entries) == 1 and paged.next_page_token == "1"

        with pytest.raises(grpc.aio.AioRpcError) as unscoped:
            await stub.RedriveDeadLetters(control_pb2.RedriveDeadLettersRequest())
        assert bad_request_fields(unscoped.value) == ["all"]

        first = listed.entries[0]
        done = await stub.RedriveDeadLetters(
            control_pb2.RedriveDeadLettersRequest(
                refs=[control_pb2.DeadLetterRef(partition=first.partition, offset=first.offset)]
            )
        )
        assert (done.redriven, done.skipped) == (1, 0)
        await until(lambda: recorder.values == [b"try-me-again"])
        everything = await stub.RedriveDeadLetters(control_pb2.RedriveDeadLettersRequest(all=True))
        # The unparsable VCF line has nowhere to go back to.
        assert (everything.redriven, everything.skipped) == (1, 1)
        await until(lambda: recorder.values == [b"try-me-again"] * 2)
        async for records in scan_stream(bus, PROBE_STREAM, timeout_s=10):
            assert all(r.headers["tenant-id"] == "lab-a" and "redriven-from" in r.headers for r in records)
