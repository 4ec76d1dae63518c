"""Two tenants sending the same file get independent results; one tenant resending it changes nothing.

The whole pipeline runs in this process over a real embedded log, with real
LanceDB and graph files, and every call goes through real gRPC servers with
tenant tokens. The file is the VCF 4.0 specification's example as PyVCF3
ships it; its 7 ALT alleles and the genotypes checked below were read off
the file by hand.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import vcf as pyvcf

from tests.writer._pipeline import running_services
from tests.writer._pipeline import submit_and_finish as finish
from vcf_agent.bus import open_bus
from vcf_agent.config import ConfigError, Settings
from vcf_agent.control import SecuritySettings
from vcf_agent.schema import STORE_KEY_VERSION
from vcf_agent.services import writer
from vcf_agent.services.writer._graph_store import GRAPH_VERDICTS
from vcf_agent.v1 import events_pb2, jobs_pb2, query_pb2, query_pb2_grpc

SPEC_EXAMPLE = Path(pyvcf.__file__).parent / "test" / "example-4.0.vcf"
SECURITY = SecuritySettings(
    admin_tokens={"admin-secret": "ops"}, tenant_tokens={"token-a": "lab-a", "token-b": "lab-b"}
)
# (POS, REF, ALT) per ALT allele in file order; record 20:1230237 has ALT '.' and stores nothing.
EXPECTED_ALLELES = [
    (14370, "G", "A"),
    (17330, "T", "A"),
    (1110696, "A", "G"),
    (1110696, "A", "T"),
    (1231234, "AT", "A"),
    (1234567, "GTCT", "G"),
    (1234567, "GTCT", "GTACT"),
]


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


@pytest.fixture
async def pipeline(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    async with running_services(tmp_path, SECURITY) as addresses:
        yield addresses


async def submit_and_finish(address: str, token: str) -> jobs_pb2.Job:
    return await finish(address, SPEC_EXAMPLE, bearer(token))


async def all_rows(query: query_pb2_grpc.QueryServiceStub, token: str) -> list[query_pb2.StoredVariant]:
    response = await query.QueryVariants(
        query_pb2.QueryVariantsRequest(page_size=100), metadata=bearer(token), timeout=30
    )
    assert response.total == len(response.variants)
    return list(response.variants)


def without_latency(rows: list[query_pb2.StoredVariant]) -> list[query_pb2.StoredVariant]:
    """Rows as stored, but for the provider's measured latency, which a re-analysis measures anew."""
    copies = []
    for row in rows:
        copy = query_pb2.StoredVariant()
        copy.CopyFrom(row)
        for analysis in copy.analyses:
            detail = json.loads(analysis.detail_json)
            assert detail.pop("latencyMs") >= 0
            analysis.detail_json = json.dumps(detail, sort_keys=True)
        copies.append(copy)
    return copies


async def test_two_tenants_sending_one_file_get_independent_results_and_a_resend_changes_nothing(
    pipeline: dict[str, str],
) -> None:
    job_a = await submit_and_finish(pipeline["ingest"], "token-a")
    job_b = await submit_and_finish(pipeline["ingest"], "token-b")
    for job, tenant in ((job_a, "lab-a"), (job_b, "lab-b")):
        assert job.tenant_id == tenant
        assert job.state == events_pb2.JOB_STATE_COMPLETE, job
        assert (job.counts.total, job.counts.stored) == (7, 7)
    assert job_a.file_id == job_b.file_id and job_a.job_id != job_b.job_id
    # Nothing tells lab-b that lab-a sent this file before.
    assert not job_b.duplicate_of_earlier

    async with grpc.aio.insecure_channel(pipeline["writer"]) as channel:
        query = query_pb2_grpc.QueryServiceStub(channel)
        rows_a = await all_rows(query, "token-a")
        rows_b = await all_rows(query, "token-b")
        for rows, job in ((rows_a, job_a), (rows_b, job_b)):
            # Every allele of the file, in file order, all of this tenant's job and nobody else's.
            assert [(v.position, v.reference, v.alternate) for v in rows] == EXPECTED_ALLELES
            assert {(v.tenant_id, v.job_id) for v in rows} == {(job.tenant_id, job.job_id)}
            assert all(len(v.analyses) == 1 for v in rows)
        ids_a = {v.correlation_id for v in rows_a}
        ids_b = {v.correlation_id for v in rows_b}
        assert len(ids_a) == len(ids_b) == 7 and not ids_a & ids_b

        # 20:1110696 A>T (the second ALT, allele 2): genotypes as written in the file.
        t_allele = rows_b[3]
        assert [(g.sample, g.genotype) for g in t_allele.genotypes] == [
            ("NA00001", "1|2"),
            ("NA00002", "2|1"),
            ("NA00003", "2/2"),
        ]
        own = await query.GetVariant(
            query_pb2.GetVariantRequest(correlation_id=t_allele.correlation_id),
            metadata=bearer("token-b"),
            timeout=10,
        )
        assert own == t_allele
        for token, foreign in (("token-a", t_allele.correlation_id), ("token-b", rows_a[0].correlation_id)):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await query.GetVariant(
                    query_pb2.GetVariantRequest(correlation_id=foreign), metadata=bearer(token), timeout=10
                )
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        # Filters narrow within the tenant only: lab-a asking for lab-b's job sees nothing.
        crossed = await query.QueryVariants(
            query_pb2.QueryVariantsRequest(job_id=job_b.job_id), metadata=bearer("token-a"), timeout=10
        )
        assert (crossed.total, list(crossed.variants)) == (0, [])

        admin = bearer("admin-secret")
        stats = await query.GetStoreStats(query_pb2.GetStoreStatsRequest(), metadata=admin, timeout=30)
        # The graph holds the variants naming a gene or carrying a verdict (issue 15's rule).
        in_graph = sum(1 for v in rows_a + rows_b if v.gene or v.classification in GRAPH_VERDICTS)
        assert (stats.variants, stats.analyses, stats.graph_variants) == (14, 14, in_graph)
        # One File node and three Sample nodes per tenant, whichever variants the graph holds.
        assert (stats.graph_files, stats.graph_samples) == (2, 6)

        again = await submit_and_finish(pipeline["ingest"], "token-a")
        assert again.job_id == job_a.job_id and again.state == events_pb2.JOB_STATE_COMPLETE
        assert again.duplicate_of_earlier
        assert (again.counts.total, again.counts.stored) == (7, 7)
        assert (
            await query.GetStoreStats(query_pb2.GetStoreStatsRequest(), metadata=admin, timeout=30) == stats
        )
        assert without_latency(await all_rows(query, "token-a")) == without_latency(rows_a)
        assert await all_rows(query, "token-b") == rows_b  # not even re-analysed


async def test_a_writer_directory_from_before_tenant_scoped_keys_is_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, bus_url=f"embedded://{tmp_path / 'bus'}")
    bus = open_bus(settings.bus_url)
    writer.build(settings, bus)  # a fresh directory is stamped with this version's key scheme
    stamp = tmp_path / "writer" / "store-key-version"
    assert stamp.read_text().strip() == str(STORE_KEY_VERSION)
    writer.build(settings, bus)  # and accepted again

    stamp.unlink()  # what an earlier version left: stores, no stamp
    (tmp_path / "writer" / "lance").mkdir()
    with pytest.raises(ConfigError) as old:
        writer.build(settings, bus)
    message = str(old.value)
    assert "\n" not in message and "tenant" in message and str(tmp_path / "writer") in message

    stamp.write_text("2\n")  # tenant-scoped keys with string graph keys, from before integer keys
    with pytest.raises(ConfigError, match="key scheme '2'"):
        writer.build(settings, bus)
    stamp.write_text("4\n")  # a later scheme is refused too, naming it
    with pytest.raises(ConfigError, match="key scheme '4'"):
        writer.build(settings, bus)
