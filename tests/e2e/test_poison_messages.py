"""Poison on every stream, and a job record no stage can read: nothing waits forever.

Writer, aggregator, router (local annotator), notifier and ingest run in this process
on one embedded log, each behind its own gRPC server. Records of random bytes go onto
every stream the stages consume; each stage dead-letters what it cannot read and goes
on. Between ingest and the router a relay garbles one of the job's VariantBatch records
(its headers stay, as a bit flip in storage or a bad producer would leave them): the
router dead-letters it, and the job ends complete_with_errors with the exact counts
instead of `storing` forever. The input is PyVCF3's gatk.vcf (real GATK output,
37 records with one ALT each, counted again with htslib below).
"""

from __future__ import annotations

import asyncio
import os
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import pysam
import vcf as pyvcf
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.writer._pipeline import submit_and_finish
from vcf_agent.analysis import RouterSettings
from vcf_agent.bus import Bus, OutgoingMessage, open_bus
from vcf_agent.config import Settings, Topology
from vcf_agent.runner import ServiceHost, ensure_topology
from vcf_agent.schema import HEADER_MESSAGE_TYPE, HEADER_TENANT, HEADER_VARIANT_COUNT
from vcf_agent.services import aggregator, ingest, notifier, router, writer
from vcf_agent.services.writer._graph_store import GRAPH_VERDICTS
from vcf_agent.v1 import control_pb2, control_pb2_grpc, events_pb2, query_pb2, query_pb2_grpc

GATK_VCF = Path(pyvcf.__file__).parent / "test" / "gatk.vcf"
RAW_VARIANTS = "vcf-variants-before-the-relay"


def poison() -> list[OutgoingMessage]:
    """Random bytes: bare, claiming a message type, and claiming to be a job's variants."""
    return [
        OutgoingMessage(os.urandom(64), None, {}),
        OutgoingMessage(os.urandom(300), b"k", {HEADER_MESSAGE_TYPE: "vcf_agent.v1.VariantBatch"}),
        OutgoingMessage(
            os.urandom(5000),
            b"k",
            # The provider header routes it to the local worker, which reads only its own.
            {HEADER_MESSAGE_TYPE: "vcf_agent.v1.Notification", HEADER_TENANT: "lab-p", "x-provider": "local"},
        ),
    ]


async def relay_garbling_one(bus: Bus, garbled: asyncio.Future[int]) -> None:
    """Copy ingest's records to the router's stream, the job's second variant batch garbled."""
    consumer = bus.consumer([RAW_VARIANTS], "relay")
    await consumer.start()
    batches = 0
    try:
        while True:
            records = await consumer.poll(64, 0.1)
            out = []
            for record in records:
                value = record.value
                if HEADER_VARIANT_COUNT in record.headers:
                    batches += 1
                    if batches == 2:
                        value = b"\xff" + os.urandom(len(value))
                        garbled.set_result(int(record.headers[HEADER_VARIANT_COUNT]))
                out.append(OutgoingMessage(value, record.key, dict(record.headers)))
            if out:
                await bus.publish(Topology().variants, out)
                await consumer.commit()
    finally:
        await consumer.stop()


async def test_poison_on_every_stream_and_a_garbled_job_record_end_in_a_final_state(tmp_path: Path) -> None:
    with pysam.VariantFile(str(GATK_VCF)) as vcf:
        expected = sum(len(r.alts or ()) for r in vcf)
    assert expected == 37
    settings = Settings(data_dir=tmp_path / "data", bus_url=f"embedded://{tmp_path / 'bus'}")
    # Ingest alone publishes its variants before the relay, in small batches.
    ingest_settings = Settings(
        data_dir=settings.data_dir,
        bus_url=settings.bus_url,
        topology=Topology(variants=RAW_VARIANTS),
        batch_size=10,
    )
    bus = open_bus(settings.bus_url)
    await bus.start()
    await ensure_topology(bus, settings)
    await ensure_topology(bus, ingest_settings)
    offline = RouterSettings()
    garbled: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    relay = asyncio.create_task(relay_garbling_one(bus, garbled))
    try:
        async with AsyncExitStack() as stack:
            addresses = {}
            for parts, own in (
                (writer.build(settings, bus), settings),
                (aggregator.build(settings, bus), settings),
                (router.build(settings, bus, offline), settings),
                (notifier.build(settings, bus), settings),
                (ingest.build(ingest_settings, bus, router_settings=offline), ingest_settings),
            ):
                host = await stack.enter_async_context(ServiceHost(parts, bus, own))
                addresses[parts.name] = host.control.address

            consumed = [
                settings.topology.variants,
                settings.topology.analysis_requests,
                settings.topology.analysis_results,
                settings.topology.database_writes,
                settings.topology.user_notifications,
            ]
            for stream, _ in settings.topology.specs():
                await bus.publish(stream, poison())

            job = await submit_and_finish(addresses["ingest"], GATK_VCF)
            lost = await asyncio.wait_for(garbled, 5)
            assert 0 < lost < expected
            assert job.state == events_pb2.JOB_STATE_COMPLETE_WITH_ERRORS, job
            assert (job.counts.total, job.counts.stored) == (expected, expected - lost)
            assert job.error.startswith(f"{lost} of {expected} variants were dead-lettered (")

            async with grpc.aio.insecure_channel(addresses["writer"]) as channel:
                stats = await query_pb2_grpc.QueryServiceStub(channel).GetStoreStats(
                    query_pb2.GetStoreStatsRequest(job_id=job.job_id), timeout=30
                )
                stored = await query_pb2_grpc.QueryServiceStub(channel).QueryVariants(
                    query_pb2.QueryVariantsRequest(job_id=job.job_id, page_size=100), timeout=30
                )
                # The graph holds the variants naming a gene or carrying a verdict (issue 15's rule).
                in_graph = sum(1 for v in stored.variants if v.gene or v.classification in GRAPH_VERDICTS)
                assert (stats.variants, len(stored.variants)) == (expected - lost, expected - lost)
                assert stats.graph_variants == in_graph
                letters = await control_pb2_grpc.ControlServiceStub(channel).ListDeadLetters(
                    control_pb2.ListDeadLettersRequest(page_size=1000, omit_payload=True), timeout=30
                )
            by_stream: dict[str, int] = {}
            for entry in letters.entries:
                by_stream[entry.letter.source_stream] = by_stream.get(entry.letter.source_stream, 0) + 1
                assert entry.letter.reason
            # Every poison record of every consumed stream, and on vcf-variants the garbled batch.
            assert by_stream == {stream: 3 for stream in consumed} | {settings.topology.variants: 4}
            codes = {e.letter.source_stream: set() for e in letters.entries}
            for entry in letters.entries:
                codes[entry.letter.source_stream].add(entry.letter.error_code)
            # Requests that name no provider: no worker reads them, so one says so.
            assert codes[settings.topology.analysis_requests] == {"corrupt_payload", "no_provider"}
            [job_letter] = [e.letter for e in letters.entries if e.letter.job_id]
            assert (job_letter.job_id, job_letter.variant_count) == (job.job_id, lost)

            # Every stage is still ready to work.
            for name, address in addresses.items():
                async with grpc.aio.insecure_channel(address) as channel:
                    health = await health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service=""), timeout=5
                    )
                    assert health.status == health_pb2.HealthCheckResponse.SERVING, name
    finally:
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)
        await bus.stop()
