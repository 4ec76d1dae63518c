"""Nothing lost, nothing doubled: SIGKILL services mid-stream, restart them, check the stores."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import grpc
import lancedb
import pysam

from vcf_agent.localdev import running_pipeline, start_service, stop_service
from vcf_agent.services.ingest import file_digest, job_id_for
from vcf_agent.services.writer._graph_store import GRAPH_VERDICTS
from vcf_agent.synthetic_vcf import SyntheticVcfSpec, write_synthetic_vcf
from vcf_agent.v1 import events_pb2, jobs_pb2, jobs_pb2_grpc, query_pb2, query_pb2_grpc

from ._ingest_calls import get_job, submit_path


async def _stats(address: str, job_id: str) -> query_pb2.GetStoreStatsResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        return await query_pb2_grpc.QueryServiceStub(channel).GetStoreStats(
            query_pb2.GetStoreStatsRequest(job_id=job_id), timeout=30
        )


async def test_killing_router_aggregator_and_writer_mid_job_loses_and_doubles_nothing(tmp_path: Path) -> None:
    samples = 3
    # Genes on about half the records, so the graph holds about half the variants (issue 15's rule).
    path = write_synthetic_vcf(
        tmp_path / "big.vcf.gz",
        SyntheticVcfSpec(records=60_000, samples=samples, seed=5, gene_annotations=True),
        bgzip=True,
    )
    with pysam.VariantFile(str(path)) as vcf:
        expected = sum(len(record.alts or ()) for record in vcf)
    job_id = job_id_for("lab-k", file_digest(path))
    bus_url = f"embedded://{tmp_path / 'bus'}?session_timeout_ms=2000"
    data_dir = tmp_path / "services"
    # Ingest reads the generated file by path, which must be allowed (the data dir stays unreachable).
    allowed = {"VCF_AGENT_INGEST_ALLOWED_DIRS": str(tmp_path)}
    with running_pipeline(bus_url, data_dir, env=allowed) as services:
        async with grpc.aio.insecure_channel(services["ingest"].grpc) as channel:

            async def upload():  # type: ignore[no-untyped-def]
                meta = jobs_pb2.SubmitVcfMetadata(tenant_id="lab-k", file_name=path.name, path=str(path))
                yield jobs_pb2.SubmitVcfRequest(metadata=meta)

            await jobs_pb2_grpc.IngestServiceStub(channel).SubmitVcf(upload(), timeout=30)

        # Wait until the writer has stored part of the job, then kill three stages at once.
        deadline = time.monotonic() + 120
        while (await get_job(services["ingest"].grpc, job_id)).counts.stored < 5_000:
            assert time.monotonic() < deadline, "nothing was stored"
            await asyncio.sleep(0.1)
        partial = (await get_job(services["ingest"].grpc, job_id)).counts.stored
        assert partial < expected, "the job finished before the crash; use a bigger file"
        for name in ("router", "aggregator", "writer"):
            stop_service(services[name], signal.SIGKILL)
        for name in ("writer", "aggregator", "router"):
            services[name] = start_service(name, bus_url, data_dir)

        deadline = time.monotonic() + 240
        while True:
            job = await get_job(services["ingest"].grpc, job_id)
            if job.state == events_pb2.JOB_STATE_COMPLETE:
                break
            assert job.state != events_pb2.JOB_STATE_FAILED, job.error
            assert time.monotonic() < deadline, f"job stuck after restart: {job}"
            await asyncio.sleep(0.2)

        assert (job.counts.total, job.counts.stored) == (expected, expected)
        stats = await _stats(services["writer"].grpc, job_id)
        assert stats.variants == expected
        assert stats.analyses == expected
        in_graph, carriers = _graph_share(data_dir, job_id)
        assert 0 < in_graph < expected
        assert stats.graph_variants == in_graph
        assert 0 < carriers < in_graph * samples
        assert stats.graph_carries == carriers
        assert stats.graph_analyses == in_graph


def _graph_share(data_dir: Path, job_id: str) -> tuple[int, int]:
    """(variants, carrier calls) of the job the graph should hold, read from the writer's LanceDB:
    the variants naming a gene or carrying a verdict, and the samples whose genotype holds their ALT."""
    table = lancedb.connect(str(data_dir / "writer" / "writer" / "lance")).open_table("variants")
    rows = (
        table.search()
        .where(f"job_id = '{job_id}'")
        .select(["gene", "classification", "carriers"])
        .limit(None)
        .to_arrow()
        .to_pylist()
    )
    kept = [row for row in rows if row["gene"] or row["classification"] in GRAPH_VERDICTS]
    return len(kept), sum(len(row["carriers"]) for row in kept)


def _lance_rows(data_dir: Path, job_id: str) -> tuple[int, int]:
    """(rows, distinct correlation ids) of the job in the writer's LanceDB, read from its files."""
    table = lancedb.connect(str(data_dir / "writer" / "writer" / "lance")).open_table("variants")
    ids = table.search().where(f"job_id = '{job_id}'").select(["correlation_id"]).limit(None).to_arrow()
    return ids.num_rows, len(set(ids.column("correlation_id").to_pylist()))


async def test_killing_ingest_mid_file_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    """SIGKILL ingest while it reads two files; on restart one resumes, the other's file is gone.

    The kept file's job completes with every variant stored once (rows and distinct ids in
    LanceDB), ingest's total still exact; the deleted file's job fails saying so; no count
    ever passes the ingested count while it runs. A value breaking its header before the crash
    (whose line the resumed read skips) and one after it are both listed on the job.
    """
    text = write_synthetic_vcf(
        tmp_path / "kept.vcf",
        SyntheticVcfSpec(records=60_000, samples=2, seed=21, multi_allelic_fraction=0.05),
    )
    lines = text.read_text().splitlines(keepends=True)
    first_record = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    early, late = first_record + 100, first_record + 59_000
    columns = lines[early].split("\t")
    columns[7] = "DP=abc;" + ";".join(e for e in columns[7].split(";") if not e.startswith("DP="))
    lines[early] = "\t".join(columns)
    columns = lines[late].rstrip("\n").split("\t")
    columns[8:] = ["GT:GQ", "0/1:x", "0/1:30"]
    lines[late] = "\t".join(columns) + "\n"
    text.write_text("".join(lines))
    kept = tmp_path / "kept.vcf.gz"
    pysam.tabix_compress(str(text), str(kept))
    deleted = write_synthetic_vcf(
        tmp_path / "deleted.vcf.gz", SyntheticVcfSpec(records=60_000, samples=2, seed=22), bgzip=True
    )
    # Counted from the text: htslib stops at the GQ of 'x'.
    expected = sum(len(line.split("\t")[4].split(",")) for line in lines[first_record:])
    bus_url = f"embedded://{tmp_path / 'bus'}?session_timeout_ms=2000"
    data_dir = tmp_path / "services"
    # Small batches slow ingest down enough to be caught mid-file.
    env = {"VCF_AGENT_INGEST_ALLOWED_DIRS": str(tmp_path), "VCF_AGENT_BATCH_SIZE": "50"}
    with running_pipeline(bus_url, data_dir, env=env) as services:
        kept_id = await submit_path(services["ingest"].grpc, kept, "lab-k")
        deleted_id = await submit_path(services["ingest"].grpc, deleted, "lab-k")
        deadline = time.monotonic() + 120
        while True:
            job = await get_job(services["ingest"].grpc, kept_id)
            assert not job.counts.total, f"ingest finished before the crash; slow it down: {job}"
            if job.counts.ingested >= 3_000:
                break
            assert time.monotonic() < deadline, "ingest made no progress"
            await asyncio.sleep(0.05)
        stop_service(services["ingest"], signal.SIGKILL)
        deleted.unlink()
        services["ingest"] = start_service("ingest", bus_url, data_dir, env=env)

        deadline = time.monotonic() + 300
        while True:
            job = await get_job(services["ingest"].grpc, kept_id)
            ceiling = job.counts.total or job.counts.ingested
            assert job.counts.analysed <= ceiling and job.counts.stored <= ceiling, job.counts
            if job.state == events_pb2.JOB_STATE_COMPLETE:
                break
            assert job.state != events_pb2.JOB_STATE_FAILED, job.error
            assert time.monotonic() < deadline, f"job stuck after ingest's restart: {job}"
            await asyncio.sleep(0.2)
        assert (job.counts.total, job.counts.ingested, job.counts.stored) == (expected, expected, expected)
        assert "resuming after" in services["ingest"].log_path.read_text()
        assert [(i.line, i.column, i.code) for i in job.file_issues] == [
            (early + 1, "INFO", "INFO_TYPE"),
            (late + 1, "FORMAT", "FORMAT_TYPE"),
        ]

        gone = await get_job(services["ingest"].grpc, deleted_id)
        assert gone.state == events_pb2.JOB_STATE_FAILED
        assert "disappeared" in gone.error and str(deleted) in gone.error, gone.error

        stats = await _stats(services["writer"].grpc, kept_id)
        assert stats.variants == expected
        assert stats.analyses == expected
        assert stats.graph_variants == _graph_share(data_dir, kept_id)[0]
    rows, distinct = _lance_rows(data_dir, kept_id)
    assert (rows, distinct) == (expected, expected)
