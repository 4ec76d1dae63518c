"""A lenient job lists on itself (GetJob) the faults of the file it read past without losing a
record: values that break their header line, kept as text or left out (VCF 4.3 §1.4.2 and
§1.6.2 are MUSTs, the record's identity is not broken), and what the file SHOULD do and does not.

Before, they reached only ingest's log and `vcf-agent validate`: the job said `complete` and
nothing else, though a sample's DP, GQ or AD may have been left out.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from vcf_agent.app.pipeline import LocalPipeline
from vcf_agent.config import Settings
from vcf_agent.services.ingest import validate_file
from vcf_agent.services.ingest._jobs import JOB_ISSUE_LIMIT, JobRegistry
from vcf_agent.services.ingest._vcf_header import Issue, bounded
from vcf_agent.v1 import events_pb2, jobs_pb2, jobs_pb2_grpc

from ._published import published

EXAC = Path(__file__).parents[2] / ".venv/test-data/debian/usr/share/doc/vcfanno-examples/example/exac.vcf.gz"


@pytest.mark.skipif(
    not EXAC.exists(), reason="Debian package vcfanno-examples not unpacked (scripts/install-test-data.sh)"
)
async def test_a_lenient_job_lists_the_files_value_errors_as_validate_reports_them(tmp_path: Path) -> None:
    # ExAC's sites extract declares DP_HIST, GQ_HIST and the AC/AF/Het/Hom keys Number=A and
    # writes more values (checked by hand: line 199, 1:13372 G>C, has two '|'-joined DP_HIST
    # histograms for its one ALT; line 203, 1:13404 G>A, one ALT, keeps its site's two-ALT INFO:
    # AC=2,1 and AC_Het=0,1,0). Every record is stored, and the job names each key once.
    report = validate_file(EXAC)
    assert report.error_count == 28 and not report.warnings
    settings = Settings(data_dir=tmp_path / "data", bus_url=f"memory://issues-{tmp_path.name}")
    async with LocalPipeline(settings) as pipeline:
        job = await pipeline.wait(await pipeline.submit(EXAC), timeout_s=120)
    assert events_pb2.JobState.Name(job.state) == "JOB_STATE_COMPLETE", job.error
    assert (job.counts.stored, job.counts.dead_lettered) == (148, 0)
    listed = [(i.line, i.column, i.code, i.message, i.warning) for i in job.file_issues]
    assert listed == [(i.line, i.column, i.code, i.message, False) for i in report.errors]
    assert {i.code for i in job.file_issues} == {"INFO_NUMBER"}
    assert (listed[0][0], listed[0][1]) == (199, "INFO") and "INFO DP_HIST has 2 value(s)" in listed[0][3]
    assert "the record is kept with the value as text" in listed[0][3]
    assert not job.more_file_issues


@pytest.mark.skipif(
    not EXAC.exists(), reason="Debian package vcfanno-examples not unpacked (scripts/install-test-data.sh)"
)
def test_vcf_agent_run_shows_the_issues_its_job_read_past(tmp_path: Path) -> None:
    def run(*options: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "vcf_agent", "run", str(EXAC), "--data-dir", str(tmp_path), *options],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    summary = json.loads(run("--json").strip().splitlines()[-1])
    assert summary["status"] == "complete" and summary["stored"] == 148
    assert len(summary["file_issues"]) == 28 and not summary["more_file_issues"]
    first = summary["file_issues"][0]
    assert (first["line"], first["column"], first["code"], first["warning"]) == (
        199,
        "INFO",
        "INFO_NUMBER",
        False,
    )
    # The table names the count and the first few; the same file again is the same job.
    table = " ".join(run().split())
    assert "file issues 28 error(s), 0 warning(s) read past; first:" in table
    assert "line 199 error INFO_NUMBER: INFO DP_HIST has 2 value(s)" in table


def _issue(line: int, code: str = "INFO_TYPE", *, warning: bool = False) -> Issue:
    return Issue(line, "INFO", code, f"issue at {line}", warning=warning)


def test_issues_recorded_as_ingest_goes_merge_in_line_order_once_each(tmp_path: Path) -> None:
    """What a run resumed from a checkpoint records (the header's issues again, then lines after
    the checkpoint) joins what the run before the crash recorded."""
    registry = JobRegistry(tmp_path / "jobs.sqlite")
    try:
        job = registry.begin("lab", "f" * 64, "a.vcf", ["local"])
        registry.record_file_issues(job, [_issue(3, "HEADER_SHOULD", warning=True), _issue(120)], more=False)
    finally:
        registry.close()
    reopened = JobRegistry(tmp_path / "jobs.sqlite")
    try:
        job = reopened.get(job.job_id)  # type: ignore[assignment]
        assert job is not None
        reopened.record_file_issues(
            job, [_issue(3, "HEADER_SHOULD", warning=True), _issue(90_000)], more=False
        )
        stored = reopened.get(job.job_id)
        assert stored is not None
        assert [(i.line, i.code, i.is_warning) for i in stored.file_issues] == [
            (3, "HEADER_SHOULD", True),
            (120, "INFO_TYPE", False),
            (90_000, "INFO_TYPE", False),
        ]
        proto = stored.to_proto()
        assert [(i.line, i.warning) for i in proto.file_issues] == [(3, True), (120, False), (90_000, False)]
        assert not proto.more_file_issues
    finally:
        reopened.close()


def test_a_job_lists_at_most_the_limit_and_says_there_are_more(tmp_path: Path) -> None:
    registry = JobRegistry(tmp_path / "jobs.sqlite")
    try:
        job = registry.begin("lab", "f" * 64, "a.vcf", ["local"])
        registry.record_file_issues(
            job, [_issue(line) for line in range(10, 10 + JOB_ISSUE_LIMIT)], more=False
        )
        assert not job.more_file_issues
        registry.record_file_issues(job, [_issue(5)], more=False)
        stored = registry.get(job.job_id)
        assert stored is not None and stored.more_file_issues
        assert len(stored.file_issues) == JOB_ISSUE_LIMIT
        # The first in the file are kept: the 101st is the one left to `vcf-agent validate`.
        assert [i.line for i in stored.file_issues] == [5, *range(10, 9 + JOB_ISSUE_LIMIT)]
        # The reader's own limit reached (more=True) says so even with nothing new to list.
        other = registry.begin("lab", "e" * 64, "b.vcf", ["local"])
        registry.record_file_issues(other, [], more=True)
        again = registry.get(other.job_id)
        assert again is not None and again.more_file_issues and again.to_proto().more_file_issues
    finally:
        registry.close()


async def test_a_hostile_files_issues_stay_small_on_the_job_and_its_dead_letters(tmp_path: Path) -> None:
    """Messages quote the file's text. 150 undeclared INFO keys of 100,000 characters each (a
    SHOULD: VCF 4.2 §1.4.1, read as htslib does), a 1 MB value breaking its Type and a 200,000
    character CHROM once made a job of ~11 MB and dead letters naming every character: over
    gRPC's 4 MB message limit for GetJob and WatchJob. Each quoted run is now cut to 200
    characters, saying how long it was."""
    key = "K" * 100_000
    lines = [
        "##fileformat=VCFv4.2",
        '##INFO=<ID=DP,Number=1,Type=Integer,Description="Total depth">',
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO",
        f"1\t1\t.\tA\tG\t50\tPASS\tDP={'9' * 1_000_000}x",
        f"{'c' * 200_000} c\t2\t.\tA\tG\t50\tPASS\tDP=3",
        *(f"1\t{3 + i}\t.\tA\tG\t50\tPASS\t{key}{i}=1" for i in range(150)),
    ]
    path = tmp_path / "hostile.vcf"
    path.write_text("\n".join(lines) + "\n")
    settings = Settings(data_dir=tmp_path / "data", bus_url=f"memory://hostile-{tmp_path.name}")
    async with LocalPipeline(settings) as pipeline:
        job_id = await pipeline.submit(path)
        await pipeline.wait(job_id, timeout_s=120)
        letters = await published(
            pipeline.bus, pipeline.settings.topology.dead_letters, events_pb2.DeadLetter
        )
        # Through ingest's own servicer on a real gRPC server, with a client's default limits.
        server = grpc.aio.server()
        pipeline.ingest.apis[0].register(server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = jobs_pb2_grpc.IngestServiceStub(channel)
                job = await stub.GetJob(jobs_pb2.GetJobRequest(job_id=job_id), timeout=10)
                listed = await stub.ListJobs(jobs_pb2.ListJobsRequest(), timeout=10)
        finally:
            await server.stop(None)
    assert (job.counts.stored, job.counts.dead_lettered) == (151, 1)
    assert len(job.file_issues) == 100 and job.more_file_issues
    first = job.file_issues[0]
    assert (first.line, first.code) == (4, "INFO_TYPE")
    # The run cut is the quoted value: its 1,000,001 characters and two quotes.
    assert "...[1000003 characters] is not an integer (VCF 4.2 §1.4.1)" in first.message
    assert all(len(issue.message) <= 600 for issue in job.file_issues)
    assert job.ByteSize() < 50_000
    # A page of jobs carries each one's count, not its list.
    (summary,) = listed.jobs
    assert (summary.job_id, summary.file_issue_count, summary.more_file_issues) == (job_id, 100, True)
    assert not summary.file_issues and job.file_issue_count == 100
    (letter,) = letters
    # The CHROM's first 200,000 characters and the opening quote, up to its space.
    assert letter.error_code == "CHROM_INVALID" and "...[200001 characters] c'" in letter.reason
    assert len(letter.reason) < 600


def test_a_message_keeps_a_path_whole_and_its_cited_section_when_cut() -> None:
    path = "/data/" + "run-2026-12-07/" * 16 + "sample.vcf.gz"  # 259 characters, spaceless
    assert len(path) > 256
    kept = bounded(f"{path[:250]}: the file changed since the job started")
    assert kept.startswith(path[:250] + ":")
    cut = bounded(f"{path}: the file changed")
    assert cut == f"{path[:200]}...[260 characters] the file changed"
    # Words with spaces between them: the middle goes, the section the message cites stays.
    wordy = bounded("sample names " + "lab sample " * 1_000 + "repeat (VCF 4.3 §1.5)")
    assert len(wordy) <= 2_000 and wordy.startswith("sample names lab sample")
    assert wordy.endswith("repeat (VCF 4.3 §1.5)") and "...[" in wordy
    assert bounded(wordy) == wordy and bounded(cut) == cut
