"""The whole product: five services as five OS processes, over the embedded log and over Kafka.

A real multi-sample VCF (PyVCF3's 1000 Genomes extract, 629 samples) and a
generated 100k-variant file go in through the ingest gRPC API; a real
WebSocket client watches; the writer's stores are checked for exactly one row
per ALT allele, right genotypes, and no change when the file is sent again.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pysam
import pytest
import vcf as pyvcf
import websockets

from vcf_agent.localdev import ServiceProcess, running_pipeline
from vcf_agent.services.ingest import file_digest, job_id_for
from vcf_agent.services.writer._graph_store import GRAPH_VERDICTS
from vcf_agent.synthetic_vcf import SyntheticVcfSpec, write_synthetic_vcf
from vcf_agent.v1 import (
    events_pb2,
    jobs_pb2,
    jobs_pb2_grpc,
    notifier_pb2,
    notifier_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
)

ONE_KG = Path(pyvcf.__file__).parent / "test" / "1kg.vcf.gz"
EXAMPLE_VCF = Path(__file__).resolve().parents[2] / "src" / "vcf_agent" / "examples" / "gatk-multisample.vcf"


def alt_alleles(path: Path) -> int:
    with pysam.VariantFile(str(path)) as vcf:
        return sum(len(record.alts or ()) for record in vcf)


async def watch_until_done(port: int, job_id: str, seen: list[dict[str, object]]) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{port}/jobs/{job_id}") as socket:
        async for message in socket:
            event = json.loads(message)
            seen.append(event)
            if event["state"] in ("complete", "complete_with_errors", "failed", "cancelled"):
                return


async def grpc_watch_until_done(address: str, job_id: str, seen: list[events_pb2.Notification]) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = notifier_pb2_grpc.NotifierServiceStub(channel)
        async for note in stub.Watch(notifier_pb2.WatchRequest(job_id=job_id, include_latest=True)):
            seen.append(note)


async def submit_and_watch(
    services: dict[str, ServiceProcess],
    path: Path,
    ends: events_pb2.JobState.ValueType = events_pb2.JOB_STATE_COMPLETE,
) -> tuple[jobs_pb2.Job, list[dict[str, object]]]:
    """Submit `path` over gRPC and watch it (WebSocket and gRPC) to its end, which must be `ends`."""
    job_id = job_id_for("lab-a", file_digest(path))
    seen: list[dict[str, object]] = []
    watched: list[events_pb2.Notification] = []
    watcher = asyncio.create_task(watch_until_done(services["notifier"].websocket_port, job_id, seen))
    grpc_watcher = asyncio.create_task(grpc_watch_until_done(services["notifier"].grpc, job_id, watched))
    await asyncio.sleep(0.2)  # subscribed before the first event is published
    content = await asyncio.to_thread(path.read_bytes)
    async with grpc.aio.insecure_channel(services["ingest"].grpc) as channel:
        ingest = jobs_pb2_grpc.IngestServiceStub(channel)

        async def requests():  # type: ignore[no-untyped-def]
            # Uploaded: server-side paths are off unless VCF_AGENT_INGEST_ALLOWED_DIRS allows them.
            yield jobs_pb2.SubmitVcfRequest(
                metadata=jobs_pb2.SubmitVcfMetadata(tenant_id="lab-a", file_name=path.name)
            )
            yield jobs_pb2.SubmitVcfRequest(chunk=content)

        response = await ingest.SubmitVcf(requests(), timeout=30)
        assert response.job.job_id == job_id
        try:
            await asyncio.wait_for(watcher, timeout=240)
            # The gRPC stream ends by itself at the terminal state, with the same final event.
            await asyncio.wait_for(grpc_watcher, timeout=10)
            assert watched[-1].state == ends, watched[-1]
            assert watched[-1].done == seen[-1]["done"]
        except TimeoutError:
            logs = "\n".join(f"--- {s.name}\n{s.log()}" for s in services.values())
            raise AssertionError(f"job did not complete; events {seen[-3:]}\n{logs}") from None
        # The job tracker folds the same events in; give it a moment to catch up.
        for _ in range(100):
            job = await ingest.GetJob(jobs_pb2.GetJobRequest(job_id=job_id), timeout=5)
            if job.state == ends:
                break
            await asyncio.sleep(0.1)
    return job, seen


async def store_stats(services: dict[str, ServiceProcess], job_id: str) -> query_pb2.GetStoreStatsResponse:
    async with grpc.aio.insecure_channel(services["writer"].grpc) as channel:
        return await query_pb2_grpc.QueryServiceStub(channel).GetStoreStats(
            query_pb2.GetStoreStatsRequest(job_id=job_id), timeout=30
        )


async def query(services: dict[str, ServiceProcess], **kwargs: object) -> query_pb2.QueryVariantsResponse:
    async with grpc.aio.insecure_channel(services["writer"].grpc) as channel:
        return await query_pb2_grpc.QueryServiceStub(channel).QueryVariants(
            query_pb2.QueryVariantsRequest(**kwargs),
            timeout=30,  # type: ignore[arg-type]
        )


async def in_graph(services: dict[str, ServiceProcess], job_id: str) -> int:
    """The job's stored variants the graph holds: those naming a gene or carrying a verdict."""
    kept, token = 0, ""
    while True:
        page = await query(services, job_id=job_id, page_size=1000, page_token=token)
        kept += sum(1 for v in page.variants if v.gene or v.classification in GRAPH_VERDICTS)
        token = page.next_page_token
        if not token:
            return kept


def bgzipped_1kg(tmp_path: Path) -> Path:
    """PyVCF3 ships the extract as plain gzip; labs send BGZF, so recompress it once."""
    plain = tmp_path / "1kg.vcf"
    with gzip.open(ONE_KG, "rb") as source, plain.open("wb") as target:
        shutil.copyfileobj(source, target)
    out = tmp_path / "1kg.vcf.gz"
    pysam.tabix_compress(str(plain), str(out), force=True)
    return out


async def check_pipeline(bus_url: str, data_dir: Path, tmp_path: Path) -> None:
    one_kg = bgzipped_1kg(tmp_path)
    generated = write_synthetic_vcf(
        tmp_path / "generated.vcf.gz",
        SyntheticVcfSpec(records=96_000, samples=2, seed=11, multi_allelic_fraction=0.05, indel_fraction=0.1),
        bgzip=True,
    )
    with running_pipeline(bus_url, data_dir) as services:
        # Real multi-sample data first.
        job, events = await submit_and_watch(services, one_kg)
        expected = alt_alleles(one_kg)
        assert job.state == events_pb2.JOB_STATE_COMPLETE, job
        assert (job.counts.total, job.counts.stored) == (expected, expected)
        assert job.samples == 629
        assert events[-1]["state"] == "complete" and events[-1]["done"] == expected
        # Progress per stage reached the WebSocket client before completion.
        assert {"ingest", "analysis", "storage"} <= {str(e["stage"]) for e in events}
        stats = await store_stats(services, job.job_id)
        assert stats.variants == expected
        assert stats.graph_variants == await in_graph(services, job.job_id)
        assert stats.analyses == expected  # one provider (local) per variant

        # Genotypes of the first record, sample by sample, against what htslib reads from the file.
        with pysam.VariantFile(str(one_kg)) as vcf:
            record = next(iter(vcf))
            samples = list(record.samples)[:5]
            expected_calls = {s: record.samples[s]["GT"] for s in samples}
            chrom, pos = record.chrom, record.pos
        found = await query(services, job_id=job.job_id, region=f"{chrom}:{pos}-{pos}", tenant_id="lab-a")
        assert found.variants, f"no variant stored at {chrom}:{pos}"
        stored = {g.sample: g.genotype for g in found.variants[0].genotypes}
        for sample, alleles in expected_calls.items():
            text = "/".join("." if a is None else str(a) for a in alleles)
            assert stored[sample].replace("|", "/") == text, (sample, stored[sample], text)

        # A generated 100k-variant file.
        job2, _ = await submit_and_watch(services, generated)
        expected2 = alt_alleles(generated)
        assert expected2 >= 100_000
        assert job2.state == events_pb2.JOB_STATE_COMPLETE, job2
        assert (job2.counts.total, job2.counts.stored) == (expected2, expected2)
        stats2 = await store_stats(services, job2.job_id)
        assert stats2.variants == expected2

        # The same file again: recognised, and the stores do not change.
        before = await store_stats(services, "")
        again, _ = await submit_and_watch(services, one_kg)
        assert again.job_id == job.job_id and again.duplicate_of_earlier
        assert again.state == events_pb2.JOB_STATE_COMPLETE
        after = await store_stats(services, "")
        assert after == before

        # The LIMS command line: upload in chunks, follow the job to the end.
        submitted = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "vcf_agent", "submit", str(EXAMPLE_VCF), "--ingest",
             services["ingest"].grpc, "--tenant", "lab-b", "--priority", "5", "--watch"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        last = submitted.stdout.strip().splitlines()[-1]
        assert last.startswith("complete") and f"stored {alt_alleles(EXAMPLE_VCF)}" in last, last


async def test_five_processes_over_embedded_log(tmp_path: Path) -> None:
    await check_pipeline(f"embedded://{tmp_path / 'bus'}", tmp_path / "services", tmp_path)


@pytest.mark.kafka
async def test_five_processes_over_kafka(tmp_path: Path, kafka_bootstrap: str) -> None:
    # Kafka topics are shared by the whole test session: a fresh topology per run keeps them apart.
    await check_pipeline(f"kafka://{kafka_bootstrap}", tmp_path / "services", tmp_path)
