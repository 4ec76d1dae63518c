"""Hostile files against a real ingest process: each job ends at once, naming what was wrong,
and the process's peak RSS stays under 1 GB.

Every file is generated here, small on disk: a 2 GiB line in a ~2 MB gzip, a gzip bomb,
100,000 samples, a header past its limit, a record whose ALTs times samples would encode
to hundreds of MB, two million tiny records, truncated and corrupt bgzip, binary garbage and
non-UTF-8 bytes. Ingest and the notifier run as their own processes on the embedded bus;
the peak RSS is the kernel's high-water mark of the ingest process (VmHWM).
"""

from __future__ import annotations

import asyncio
import gzip
import os
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pysam
import pytest

from vcf_agent.localdev import ServiceProcess, start_service, stop_service
from vcf_agent.schema import genotype_calls
from vcf_agent.services.ingest import InputLimitError, InputLimits
from vcf_agent.services.ingest._vcf_header import UNDECLARED_KEY_LIMIT
from vcf_agent.services.ingest._vcf_reader import _LAYOUT_LIMIT, ISSUE_LIMIT, VcfReader
from vcf_agent.services.ingest._vcf_source import open_vcf_text
from vcf_agent.v1 import events_pb2, jobs_pb2, jobs_pb2_grpc, notifier_pb2, notifier_pb2_grpc

HEADER = (
    "##fileformat=VCFv4.2\n"
    "##contig=<ID=1,length=248956422>\n"
    '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
)
COLUMNS = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"
GIB = 1024**3
# The bound the issue sets for any input; the process starts at ~150 MB.
MAX_PEAK_RSS = 1024**3


def _peak_rss(pid: int) -> int:
    """The process's peak resident set so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def _gzip(path: Path, parts: Iterator[bytes]) -> Path:
    """Each part as its own gzip member (a valid gzip file), compressed once per distinct part.

    Repeated parts (the bulk of a bomb) are compressed once and their member written again,
    so generating a 2 GiB line takes well under a second.
    """
    members: dict[bytes, bytes] = {}
    with path.open("wb") as out:
        for part in parts:
            member = members.get(part)
            if member is None:
                member = gzip.compress(part, compresslevel=9, mtime=0)
                if len(part) > 1 << 20:
                    members[part] = member
            out.write(member)
    return path


def _bgzip(path: Path, parts: Iterator[bytes]) -> Path:
    with pysam.BGZFile(str(path), "wb") as out:
        for part in parts:
            out.write(part)
    return path


def _one_long_line(length: int) -> Iterator[bytes]:
    yield (HEADER + COLUMNS + "\n" + "1\t100\t.\tA\t").encode()
    chunk = b"C" * (1 << 24)
    for _ in range(length // len(chunk)):
        yield chunk
    yield b"\t.\t.\t.\n"


def _bomb(length: int) -> Iterator[bytes]:
    """A valid header, then zeros: ~1000:1 compressed."""
    yield (HEADER + COLUMNS + "\n").encode()
    chunk = bytes(1 << 24)
    for _ in range(length // len(chunk)):
        yield chunk


def _tiny_records(count: int) -> Iterator[bytes]:
    yield (HEADER + COLUMNS + "\n").encode()
    step = 100_000
    for start in range(0, count, step):
        yield "".join(f"1\t{pos + 1}\t.\tA\tC\t.\t.\t.\n" for pos in range(start, start + step)).encode()


def _many_samples(samples: int) -> Iterator[bytes]:
    names = "\t".join(f"S{i}" for i in range(samples))
    yield (HEADER + COLUMNS + "\tFORMAT\t" + names + "\n").encode()
    yield ("1\t100\t.\tA\tC\t.\t.\t.\tGT" + "\t0/1" * samples + "\n").encode()


def _huge_header(size: int) -> Iterator[bytes]:
    yield HEADER.encode()
    line = b"##comment=" + b"x" * 1000 + b"\n"
    for _ in range(size // len(line) + 1):
        yield line
    yield (COLUMNS + "\n1\t100\t.\tA\tC\t.\t.\t.\n").encode()


def _wide_record(alts: int, samples: int) -> Iterator[bytes]:
    """One record whose every ALT message repeats every sample's call."""
    bases = ["A", "C", "G", "T"]
    alleles = ",".join("".join(bases[(i >> (2 * k)) & 3] for k in range(6)) + "T" for i in range(alts))
    names = "\t".join(f"S{i}" for i in range(samples))
    yield (HEADER + COLUMNS + "\tFORMAT\t" + names + "\n").encode()
    yield (f"1\t100\t.\tA\t{alleles}\t.\t.\t.\tGT" + "\t0/1" * samples + "\n").encode()


async def _submit(address: str, path: Path) -> str:
    async with grpc.aio.insecure_channel(address) as channel:

        async def request():  # type: ignore[no-untyped-def]
            meta = jobs_pb2.SubmitVcfMetadata(tenant_id="lab-h", file_name=path.name, path=str(path))
            yield jobs_pb2.SubmitVcfRequest(metadata=meta)

        response = await jobs_pb2_grpc.IngestServiceStub(channel).SubmitVcf(request(), timeout=60)
    return response.job.job_id


async def _ingest_outcome(services: dict[str, ServiceProcess], job_id: str, timeout_s: float) -> jobs_pb2.Job:
    """The job once ingest is done with it: failed, or read to the end (its total known)."""
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(services["ingest"].grpc) as channel:
        stub = jobs_pb2_grpc.IngestServiceStub(channel)
        while True:
            job = await stub.GetJob(jobs_pb2.GetJobRequest(job_id=job_id), timeout=10)
            if job.state == events_pb2.JOB_STATE_FAILED or job.counts.total:
                return job
            assert time.monotonic() < deadline, f"ingest did not finish the job: {job}"
            await asyncio.sleep(0.1)


async def _last_notification(services: dict[str, ServiceProcess], job_id: str) -> events_pb2.Notification:
    async with grpc.aio.insecure_channel(services["notifier"].grpc) as channel:
        stub = notifier_pb2_grpc.NotifierServiceStub(channel)
        for _ in range(100):
            notes = []
            stream = stub.Watch(notifier_pb2.WatchRequest(job_id=job_id, include_latest=True), timeout=2)
            try:
                async for note in stream:
                    notes.append(note)
                    break
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
            if notes and notes[-1].state == events_pb2.JOB_STATE_FAILED:
                return notes[-1]
            await asyncio.sleep(0.1)
    raise AssertionError("the notifier never saw the job fail")


@pytest.fixture
def ingest_alone(tmp_path: Path) -> Iterator[dict[str, ServiceProcess]]:
    """Ingest and the notifier (for the failure notifications), nothing downstream."""
    bus_url = f"embedded://{tmp_path / 'bus'}"
    data_dir = tmp_path / "services"
    env = {"VCF_AGENT_INGEST_ALLOWED_DIRS": str(tmp_path / "files")}
    services: dict[str, ServiceProcess] = {}
    try:
        for name in ("notifier", "ingest"):
            services[name] = start_service(name, bus_url, data_dir, env=env)
        yield services
    finally:
        for service in services.values():
            stop_service(service)


async def test_hostile_files_fail_at_once_naming_the_limit_within_bounded_memory(
    tmp_path: Path, ingest_alone: dict[str, ServiceProcess]
) -> None:
    files = tmp_path / "files"
    files.mkdir()
    pid = ingest_alone["ingest"].process.pid
    peaks: dict[str, int] = {"at start": _peak_rss(pid)}
    # (file, the limit its error must name or the error code's words, seconds ingest may take)
    cases = [
        (_gzip(files / "long-line.vcf.gz", _one_long_line(2 * GIB)), "max_line_bytes=16777216", 60),
        (_bgzip(files / "long-line-bgzf.vcf.gz", _one_long_line(64 * 1024**2)), "max_line_bytes", 30),
        (_gzip(files / "bomb.vcf.gz", _bomb(GIB)), "max_line_bytes", 60),
        (_gzip(files / "samples.vcf.gz", _many_samples(100_000)), "max_samples=20000", 30),
        (_gzip(files / "header.vcf.gz", _huge_header(20 * 1024**2)), "max_header_bytes", 30),
        (_gzip(files / "wide.vcf.gz", _wide_record(3000, 5000)), "max_record_bytes", 30),
    ]
    assert (files / "long-line.vcf.gz").stat().st_size < 3 * 1024**2
    for path, limit, timeout_s in cases:
        job_id = await _submit(ingest_alone["ingest"].grpc, path)
        job = await _ingest_outcome(ingest_alone, job_id, timeout_s)
        assert job.state == events_pb2.JOB_STATE_FAILED, (path.name, job)
        assert limit in job.error and path.name in job.error, (path.name, job.error)
        if limit:
            assert "VCF_AGENT_INGEST_" in job.error, job.error
        note = await _last_notification(ingest_alone, job_id)
        assert note.message == job.error
        peaks[path.name] = _peak_rss(pid)
    print("ingest peak RSS (MB):", {name: round(peak / 1024**2) for name, peak in peaks.items()})
    assert max(peaks.values()) < MAX_PEAK_RSS, peaks


async def test_two_million_tiny_records_and_broken_files_end_within_bounded_memory(
    tmp_path: Path, ingest_alone: dict[str, ServiceProcess]
) -> None:
    files = tmp_path / "files"
    files.mkdir()
    pid = ingest_alone["ingest"].process.pid
    tiny = _bgzip(files / "tiny.vcf.gz", _tiny_records(2_000_000))
    valid = (
        HEADER + COLUMNS + "\n" + "".join(f"1\t{p}\t.\tA\tC\t.\t.\t.\n" for p in range(1, 5001))
    ).encode()
    _bgzip(files / "valid.vcf.gz", iter([valid]))
    whole = (files / "valid.vcf.gz").read_bytes()
    (files / "truncated.vcf.gz").write_bytes(whole[: len(whole) // 2])
    corrupt = bytearray(whole)
    corrupt[len(corrupt) // 2 : len(corrupt) // 2 + 64] = os.urandom(64)
    (files / "corrupt.vcf.gz").write_bytes(bytes(corrupt))
    (files / "garbage.vcf").write_bytes(os.urandom(1 << 20))
    (files / "deflate-garbage.vcf.gz").write_bytes(b"\x1f\x8b\x08\x00" + zlib.compress(os.urandom(4096)))
    latin1 = HEADER + COLUMNS + "\n1\t100\tr\xe9gion\tA\tC\t.\t.\t.\n1\t200\t.\tA\tG\t.\t.\t.\n"
    (files / "latin1.vcf").write_bytes(latin1.encode("latin-1"))
    latin1_header = HEADER + "##source=caf\xe9\n" + COLUMNS + "\n1\t100\t.\tA\tC\t.\t.\t.\n"
    (files / "latin1-header.vcf").write_bytes(latin1_header.encode("latin-1"))

    job = await _ingest_outcome(ingest_alone, await _submit(ingest_alone["ingest"].grpc, tiny), 600)
    assert job.state != events_pb2.JOB_STATE_FAILED, job.error
    assert job.counts.total == 2_000_000
    tiny_peak = _peak_rss(pid)

    expectations = {
        "truncated.vcf.gz": "truncated",
        "corrupt.vcf.gz": "corrupt",
        "garbage.vcf": "binary",
        "deflate-garbage.vcf.gz": "cannot be decompressed",
        "latin1-header.vcf": "not UTF-8",
    }
    for name, words in expectations.items():
        job = await _ingest_outcome(
            ingest_alone, await _submit(ingest_alone["ingest"].grpc, files / name), 60
        )
        assert job.state == events_pb2.JOB_STATE_FAILED, (name, job)
        assert words in job.error and name in job.error, (name, job.error)
    # A record with bytes that are not UTF-8 is dead-lettered (VCF 4.3 §1.2); the next one flows.
    job = await _ingest_outcome(
        ingest_alone, await _submit(ingest_alone["ingest"].grpc, files / "latin1.vcf"), 60
    )
    assert job.state != events_pb2.JOB_STATE_FAILED, job.error
    assert (job.counts.total, job.counts.dead_lettered) == (1, 1), job
    peak = _peak_rss(pid)
    print(
        f"ingest peak RSS: {tiny_peak / 1024**2:.0f} MB after 2,000,000 records,"
        f" {peak / 1024**2:.0f} MB at the end"
    )
    assert peak < MAX_PEAK_RSS


HTSLIB_BCF = (
    Path(__file__).resolve().parents[2]
    / ".venv/test-data/debian/usr/share/htslib-test/test/tabix/vcf_file.bcf"
)


@pytest.mark.skipif(
    not HTSLIB_BCF.is_file(),
    reason=f"Debian's htslib-test data is not at {HTSLIB_BCF} (install.sh --test-servers)",
)
def test_the_sample_limit_holds_for_bcf_too() -> None:
    # htslib-test's BCF names two samples: one over a limit of 1, and within the default.
    with pytest.raises(InputLimitError, match="names 2 samples, over the input limit max_samples=1"):
        open_vcf_text(HTSLIB_BCF, limits=InputLimits(max_samples=1))
    text = open_vcf_text(HTSLIB_BCF)
    text.close()
    assert text.kind == "bcf"


def test_ever_new_keys_and_format_strings_are_read_right_within_bounded_caches(tmp_path: Path) -> None:
    """A FILTER, a FORMAT string and two undeclared INFO keys new in every record (VCF 4.3
    §1.6.1-2: they SHOULD be declared; htslib types an undeclared key Number=1, Type=String, a
    value-less one a flag). Each FORMAT string's layout and each key's definition was kept, ~1.6 KB a record:
    300,000 such records took `vcf-agent validate` 503 MB against 83 for as many plain ones.
    Past the limits they are typed at each use instead, and the caches are dropped whole."""
    records = UNDECLARED_KEY_LIMIT + 2_000
    path = tmp_path / "new-keys.vcf"
    with path.open("w") as out:
        out.write(
            "##fileformat=VCFv4.3\n##contig=<ID=1,length=248956422>\n"
            '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
            '##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Read depth">\n'
            f"{COLUMNS}\tFORMAT\tS1\n"
        )
        for i in range(records):
            out.write(f"1\t{i + 1}\t.\tA\tG\t50\tLow{i}\tU{i}=v{i};F{i}\tGT:DP:X{i}\t0/1:{i % 200}:1\n")
    with VcfReader(path, file_id="f", job_id="j", tenant_id="t", source_name=path.name) as reader:
        variants = [v for batch in reader for v in batch.variants]
        assert len(reader._layouts) <= _LAYOUT_LIMIT
        assert len(reader.header.info) == len(reader.header.undeclared_info) == UNDECLARED_KEY_LIMIT
        # Besides the header's own: GT and DP, PASS.
        assert len(reader.header.format) == 2 + UNDECLARED_KEY_LIMIT
        assert len(reader.header.filters) == 1 + UNDECLARED_KEY_LIMIT
    assert reader.take_dead_letters() == []
    assert [v.position for v in variants] == list(range(1, records + 1))
    for i, variant in enumerate(variants):
        assert list(variant.info[f"U{i}"].strings.values) == [f"v{i}"], i
        assert variant.info[f"F{i}"].flag, i
        assert list(variant.filters) == [f"Low{i}"], i
        assert genotype_calls(variant.genotypes)[0].depth == i % 200, i
    # Each undeclared key is warned of once while the warnings last (the first ISSUE_LIMIT).
    assert len(reader.warnings) == ISSUE_LIMIT
    assert {w.code for w in reader.warnings} == {"FILTER_UNDECLARED", "INFO_UNDECLARED", "FORMAT_UNDECLARED"}


def test_a_header_declaring_many_keys_leaves_the_records_their_own_room_for_undeclared_ones(
    tmp_path: Path,
) -> None:
    """VCF 4.3 §1.4.2/§1.4.3: an undeclared FORMAT key or FILTER name SHOULD have had its header
    line, and is warned of once, then remembered. The limit on remembered ones counts what the
    records added, not what the header declared: a header of 10,000 FORMAT and FILTER lines once
    left no room, and each later use of an undeclared one was warned of again."""
    path = tmp_path / "declared-many.vcf"
    declared = "".join(
        f'##FORMAT=<ID=K{i},Number=1,Type=Integer,Description="k">\n##FILTER=<ID=F{i},Description="f">\n'
        for i in range(UNDECLARED_KEY_LIMIT)
    )
    path.write_text(
        "##fileformat=VCFv4.3\n##contig=<ID=1,length=248956422>\n"
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
        f"{declared}{COLUMNS}\tFORMAT\tS1\n"
        # Each record's FILTER and FORMAT text is new, so no cache of the reader's hides a check.
        + "1\t10\t.\tA\tG\t50\tNoisy\t.\tGT:X:K7\t0/1:abc:10\n"
        + "1\t20\t.\tA\tG\t50\tNoisy;F1\t.\tGT:K7:X\t0/1:20:abc\n"
        + "1\t30\t.\tA\tG\t50\tF2;Noisy\t.\tGT:X\t0/1:abc\n"
    )
    with VcfReader(path, file_id="f", job_id="j", tenant_id="t", source_name=path.name) as reader:
        variants = [v for batch in reader for v in batch.variants]
    assert [list(v.filters) for v in variants] == [["Noisy"], ["Noisy", "F1"], ["F2", "Noisy"]]
    warned = sorted((w.code, w.line) for w in reader.warnings)
    first = 3 + 2 * UNDECLARED_KEY_LIMIT + 2  # the first record's line
    assert warned == [("FILTER_UNDECLARED", first), ("FORMAT_UNDECLARED", first)]
    assert (reader.header.undeclared_formats, reader.header.undeclared_filters) == (1, 1)
