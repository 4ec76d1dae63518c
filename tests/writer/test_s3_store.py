"""LanceDB on S3-compatible object storage, against a real S3 server (versitygw) started here.

The graph stays on local disk; LanceDB's tables go to s3://bucket/prefix. The same exactly-once
rules hold there: a restarted writer re-delivered what it already stored stores nothing twice, and
a store written by one writer (one data directory, one graph) is refused to any other.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import lancedb
import pytest

from vcf_agent.app._settings_tree import load_settings
from vcf_agent.app.cli import main
from vcf_agent.bus import Bus, Record, open_bus
from vcf_agent.config import Settings
from vcf_agent.localdev import LocalS3Server, find_s3_server, free_port
from vcf_agent.runner import ensure_topology
from vcf_agent.schema import encode
from vcf_agent.services import writer
from vcf_agent.services.writer import StoreLocation, StoreSink, StoreUnavailableError, VariantQuery
from vcf_agent.synthetic_vcf import SyntheticVcfSpec, write_synthetic_vcf
from vcf_agent.v1 import events_pb2

from ._writes import make_write

pytestmark = pytest.mark.skipif(
    find_s3_server() is None,
    reason="versitygw (the S3-compatible server) is not installed: run scripts/install-s3-server.sh",
)

BATCH = 5


@pytest.fixture(scope="module")
def s3() -> Iterator[LocalS3Server]:
    with LocalS3Server() as server:
        yield server


def _settings(tmp_path: Path, s3: LocalS3Server, store: str, *, secret: str | None = None) -> Settings:
    """Read as the command line reads them: the store URL and the standard AWS variables."""
    environ = {
        **(s3.environment() if secret is None else s3.environment(secret_key=secret)),
        "VCF_AGENT_STORE": store,
        "VCF_AGENT_DATA_DIR": str(tmp_path),
        "VCF_AGENT_BUS": f"embedded://{tmp_path / 'bus'}",
        "VCF_AGENT_WRITER_BATCH_ROWS": str(BATCH),
    }
    return load_settings(environ).service


def _record(offset: int) -> Record:
    writes = [make_write(offset * BATCH + i) for i in range(BATCH)]
    payload, headers = encode(events_pb2.DatabaseWriteBatch(writes=writes))
    return Record("database-writes", 0, offset, payload, None, headers, 0)


@asynccontextmanager
async def _writer(settings: Settings, bus: Bus) -> AsyncIterator[writer.WriterParts]:
    """The writer as `serve writer` builds it, stores and sink started; the test delivers records."""
    parts = writer.build(settings, bus)
    started = [c for c in parts.components if c in (parts.lance, parts.graph) or isinstance(c, StoreSink)]
    for component in started:
        await component.start()
    try:
        yield parts
    finally:
        for component in reversed(started):
            await component.stop()


def _sink(parts: writer.WriterParts) -> StoreSink:
    return next(c for c in parts.components if isinstance(c, StoreSink))


async def test_a_restarted_writer_redelivered_its_batches_stores_nothing_twice_on_s3(
    tmp_path: Path, s3: LocalS3Server
) -> None:
    settings = _settings(tmp_path, s3, f"{s3.bucket('exactly-once')}/results")
    bus = open_bus(settings.bus_url)
    await bus.start()
    await ensure_topology(bus, settings)
    try:
        async with _writer(settings, bus) as first:
            for offset in range(3):
                await _sink(first).handle([_record(offset)])
            await _sink(first).flush()
            assert first.lance.count() == 3 * BATCH
        # A restart, then the same records again (their offsets were never committed, say) and one
        # new batch: the replayed rows are merged on their keys, the new ones appended.
        async with _writer(settings, bus) as second:
            for offset in range(4):
                await _sink(second).handle([_record(offset)])
            await _sink(second).flush()
            lance = second.lance
            assert lance.count() == 4 * BATCH
            assert lance.count_analyses() == 4 * BATCH
            assert second.graph.counts().variants == 4 * BATCH
            # Compaction (fragments merged, indexes updated, old versions removed) on S3 too.
            lance.compact()
            assert lance.fragments() == 1
            assert lance.count("job-1") == 4 * BATCH
            matched, total = lance.query(VariantQuery(gene="GENE2", limit=100))
            assert total == 4 * BATCH // 5
            assert {v.gene for v in matched} == {"GENE2"}
            assert len({v.correlation_id for v in matched}) == total
    finally:
        await bus.stop()
    # The tables are in the bucket (the server's own directory), not in the data directory.
    assert (s3.data_root / "exactly-once" / "results" / "variants.lance").is_dir()
    assert not (tmp_path / "writer" / "lance").exists()
    assert (tmp_path / "writer" / "graph.lbug").exists()


async def test_a_store_paired_with_one_data_directory_is_refused_to_another(
    tmp_path: Path, s3: LocalS3Server
) -> None:
    store = f"{s3.bucket('paired')}/results"
    bus = open_bus(f"memory://{tmp_path.name}")
    await bus.start()
    try:
        async with _writer(_settings(tmp_path / "first", s3, store), bus) as first:
            _sink(first)
        # Its graph does not know what the store holds: appending "new" variants would double them.
        with pytest.raises(
            StoreUnavailableError, match="paired with the writer whose graph is in"
        ) as refused:
            async with _writer(_settings(tmp_path / "second", s3, store), bus):
                pass
        assert "\n" not in str(refused.value) and str(tmp_path / "first") in str(refused.value)
        # The paired writer itself opens it again.
        async with _writer(_settings(tmp_path / "first", s3, store), bus):
            pass
    finally:
        await bus.stop()


def _cli(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    environ: Mapping[str, str],
    *args: str,
) -> tuple[int, str, str]:
    """`vcf-agent ARGS` in this process, with the test's AWS variables and none of the developer's."""
    for name in [name for name in os.environ if name.startswith(("AWS_", "VCF_AGENT_"))]:
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_vcf_agent_run_stores_a_job_in_s3_and_query_reads_it_back(
    tmp_path: Path, s3: LocalS3Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    vcf = write_synthetic_vcf(
        tmp_path / "job.vcf", SyntheticVcfSpec(records=1000, samples=2, seed=15, gene_annotations=True)
    )
    store = f"{s3.bucket('run')}/lab-a"
    where = ["--data-dir", str(tmp_path / "data"), "--store", store]
    code, out, err = _cli(monkeypatch, capsys, s3.environment(), "run", "--json", *where, str(vcf))
    assert code == 0, err[-3000:]
    summary = json.loads(out.splitlines()[-1])
    assert summary["status"] == "complete"
    assert summary["stored"] == summary["variants"] == 1000

    query = ["query", "--json", *where, "--job", summary["job_id"], "--gene", "BRCA1", "--limit", "1000"]
    code, out, err = _cli(monkeypatch, capsys, s3.environment(), *query)
    assert code == 0, err[-3000:]
    answer = json.loads(out)
    assert 0 < int(answer["total"]) == len(answer["variants"]) < 1000
    assert {variant["gene"] for variant in answer["variants"]} == {"BRCA1"}
    assert not (tmp_path / "data" / "writer" / "lance").exists()


def test_wrong_credentials_are_one_line_that_says_so(
    tmp_path: Path, s3: LocalS3Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    vcf = write_synthetic_vcf(tmp_path / "job.vcf", SyntheticVcfSpec(records=10, seed=1))
    store = f"{s3.bucket('denied')}/results"
    wrong = s3.environment(secret_key="not-the-secret")
    code, _, err = _cli(
        monkeypatch, capsys, wrong, "run", "--data-dir", str(tmp_path), "--store", store, str(vcf)
    )
    assert code == 2
    assert err.startswith(f"vcf-agent: LanceDB store {store}: access denied: check the credentials")
    assert err.count("\n") == 1 and "not-the-secret" not in err


def test_an_unreachable_endpoint_is_one_line_that_says_so(tmp_path: Path, s3: LocalS3Server) -> None:
    nothing_listens = {**s3.environment(), "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    settings = load_settings({**nothing_listens, "VCF_AGENT_STORE": "s3://nowhere/results"}).service
    lance = writer.build(replace(settings, data_dir=tmp_path), open_bus(f"memory://{tmp_path.name}")).lance
    with pytest.raises(StoreUnavailableError, match="cannot reach the S3 endpoint") as refused:
        lance.open()
    assert "\n" not in str(refused.value) and "Connection refused" in str(refused.value)


def test_a_missing_bucket_is_one_line_that_says_so(tmp_path: Path, s3: LocalS3Server) -> None:
    settings = _settings(tmp_path, s3, "s3://no-such-bucket/results")
    parts = writer.build(settings, open_bus(f"memory://{tmp_path.name}"))
    with pytest.raises(StoreUnavailableError, match="no such bucket") as refused:
        parts.lance.open()
    assert "\n" not in str(refused.value)


def test_two_writers_pairing_one_empty_store_at_once_leave_exactly_one_paired(
    tmp_path: Path, s3: LocalS3Server
) -> None:
    """The pairing is committed with a conditional put: of two racing writers, one wins, always.

    Lance commits a racing create as an overwrite on top of the first (seen in about one race in
    three here), so the winner is the row of the table's first version; a few races make that likely
    to be met.
    """
    s3.bucket("race")
    for race in range(6):
        store = f"s3://race/results-{race}"
        settings = [_settings(tmp_path / f"{race}-{name}", s3, store) for name in ("one", "two")]
        locations = [StoreLocation.of_settings(s.store, s.data_dir) for s in settings]
        barrier = threading.Barrier(2)

        def pair(location: StoreLocation, barrier: threading.Barrier = barrier) -> str:
            barrier.wait()
            try:
                location.connect(lancedb.Session())
            except StoreUnavailableError as error:
                return str(error)
            return "paired"

        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(pair, locations))
        assert outcomes.count("paired") == 1, outcomes
        refused = next(outcome for outcome in outcomes if outcome != "paired")
        # Refused after reading the winner's pairing, or while the winner's commit is under way.
        assert "paired with the writer whose graph is in" in refused or "cannot pair" in refused, refused
