"""Every input shape ingests with the right values; unusable files fail the job with nothing stored."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

import pysam
import pytest
import vcf
from pysam import bcftools

from vcf_agent.app.pipeline import LocalPipeline
from vcf_agent.config import Settings
from vcf_agent.schema import genotype_calls
from vcf_agent.services.ingest import validate_file
from vcf_agent.services.ingest._annotation_context import annotation_context
from vcf_agent.services.ingest._vcf_header import VcfFileError
from vcf_agent.services.ingest._vcf_reader import VcfReader
from vcf_agent.services.writer import LanceStore
from vcf_agent.synthetic_vcf import SyntheticVcfSpec, write_synthetic_vcf
from vcf_agent.v1 import events_pb2, variant_pb2

from ._published import published
from ._vcf_text import GOOD, HEADER, record, write_vcf

PYVCF_DATA = Path(vcf.__file__).parent / "test"


def _variants(path: Path, region: str | None = None) -> list[variant_pb2.VariantMessage]:
    with VcfReader(
        path, file_id="f", job_id="j", tenant_id="t", source_name=path.name, region=region
    ) as reader:
        variants = [v for batch in reader for v in batch.variants]
        assert reader.dead_lettered == 0, reader.take_dead_letters()
    return variants


def test_plain_gzip_that_is_not_bgzip_ingests() -> None:
    # pyvcf's 1kg.vcf.gz is gzip, not BGZF: pysam raises "seek not implemented" on it.
    path = PYVCF_DATA / "1kg.vcf.gz"
    with gzip.open(path, "rt") as fh:
        lines = [line for line in fh if not line.startswith("#")]
    variants = _variants(path)
    expected = sum(len(line.split("\t")[4].split(",")) for line in lines if line.split("\t")[4] != ".")
    assert len(variants) == expected
    first = lines[0].split("\t")
    assert (variants[0].chromosome, variants[0].position, variants[0].reference) == (
        first[0],
        int(first[1]),
        first[3],
    )
    assert len(genotype_calls(variants[0].genotypes)) == 629


@pytest.mark.parametrize(
    "name",
    [
        "gatk.vcf",
        "freebayes.vcf",
        "bcftools.vcf",
        "example-4.1.vcf",
        "1kg.sites.vcf",
        "gonl.chr20.release4.gtc.vcf",
    ],
)
def test_real_caller_outputs_are_valid_and_ingest(name: str) -> None:
    path = PYVCF_DATA / name
    report = validate_file(path)
    assert report.valid, report.errors
    variants = _variants(path)
    assert variants and all(v.line_number > 0 for v in variants)


def test_real_malformed_files_are_flagged_where_they_break() -> None:
    # mixed-filtering.vcf line 24 uses FILTER q50, which its header never declares: a SHOULD
    # (VCF 4.1 §1.2: lines describing the FILTERs used are "strongly encouraged"), so a warning,
    # and the record is ingested with its filter, as htslib reads it.
    report = validate_file(PYVCF_DATA / "mixed-filtering.vcf")
    assert report.valid, report.errors
    assert [(w.line, w.code) for w in report.warnings] == [(24, "FILTER_UNDECLARED")]
    at_24 = [v for v in _variants(PYVCF_DATA / "mixed-filtering.vcf") if v.line_number == 24]
    # 20 1234567 microsat1 GTC G,GTCT 50 q10;q50: one variant per ALT, both filters kept.
    assert [(v.position, v.alternate, list(v.filters)) for v in at_24] == [
        (1234567, "G", ["q10", "q50"]),
        (1234567, "GTCT", ["q10", "q50"]),
    ]
    # issue-214.vcf line 32 has REF '*'.
    assert [(e.line, e.code) for e in validate_file(PYVCF_DATA / "issue-214.vcf").errors] == [
        (32, "REF_INVALID")
    ]


def test_sites_only_crlf_and_utf8_header(tmp_path: Path) -> None:
    header = HEADER.replace("##ALT", '##source="Zürich lab, ünïcode"\n##ALT')
    body = header + "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" + "\t".join(GOOD.split("\t")[:8]) + "\n"
    path = tmp_path / "sites.vcf"
    path.write_bytes(body.replace("\n", "\r\n").encode())
    (variant,) = _variants(path)
    assert (variant.position, variant.alternate, genotype_calls(variant.genotypes)) == (100, "G", [])
    assert list(variant.info["DP"].ints.values) == [10]


def test_gvcf_placeholders_are_not_variants_and_real_alts_keep_their_index(tmp_path: Path) -> None:
    # VCF 4.3 §5.5: <*> (or GATK's <NON_REF>) is "any other allele", a reference block when alone.
    records = [
        record(alt="<*>", info="DP=3", s1="0/0", s2="0/0"),
        record(pos="200", alt="<NON_REF>", s1="0/0", s2="0/0"),
        record(pos="300", alt="<NON_REF>,T", info="AF=0.1,0.2", s1="0/2", s2="0/0"),
        record(pos="400", alt="G,<*>", info="AF=0.5,0", s1="0/1", s2="0/0"),
    ]
    path = write_vcf(tmp_path / "gvcf.vcf", records)
    assert validate_file(path).valid
    with VcfReader(path, file_id="f", job_id="j", tenant_id="t", source_name=path.name) as reader:
        variants = [v for batch in reader for v in batch.variants]
    assert [(v.position, v.alternate, v.alt_index, list(v.all_alternates)) for v in variants] == [
        (300, "T", 1, ["<NON_REF>", "T"]),
        (400, "G", 0, ["G", "<*>"]),
    ]
    assert (reader.counters.reference_blocks, reader.counters.placeholder_alleles) == (2, 2)


def test_alleles_ploidy_phasing_and_symbolic_shapes(tmp_path: Path) -> None:
    records = [
        record(
            alt="G,T,*",
            info="AF=0.1,0.2,0.3",
            s1="1/3:5:9:1,2,3,4:" + ",".join("0" * 10),
            s2="2|1:5:9:1,2,3,4:" + ",".join("0" * 10),
        ),
        record(pos="200", alt="<DEL>", info="SVTYPE=DEL", s1="1:5:9:1,2:0,1", s2="0/1/1:5:9:1,2:0,1,2,3"),
        record(pos="300", alt="G[chr2:500[", s1="0|1", s2="./."),
        record(pos="400", alt="]chr2:600]A", s1=".", s2="0/1:.:."),
        record(pos="500", alt="A.,.A", info="DP=1", s1="0/1", s2="1/2"),
    ]
    path = write_vcf(tmp_path / "shapes.vcf", records)
    assert validate_file(path).valid, validate_file(path).errors
    variants = _variants(path)
    assert [v.alternate for v in variants] == [
        "G",
        "T",
        "*",
        "<DEL>",
        "G[chr2:500[",
        "]chr2:600]A",
        "A.",
        ".A",
    ]
    multi = variants[0]
    assert [list(g.alleles) for g in genotype_calls(multi.genotypes)] == [[1, 3], [2, 1]]
    assert [g.phased for g in genotype_calls(multi.genotypes)] == [False, True]
    assert list(genotype_calls(multi.genotypes)[0].allele_depths) == [1, 2, 3, 4]
    haploid, triploid = genotype_calls(variants[3].genotypes)
    assert (list(haploid.alleles), list(triploid.alleles)) == ([1], [0, 1, 1])
    missing = genotype_calls(variants[4].genotypes)[1]  # ./. with DP, GQ, AD dropped
    assert (list(missing.alleles), missing.depth, missing.genotype_quality) == ([-1, -1], -1, -1)
    assert list(genotype_calls(variants[5].genotypes)[0].alleles) == [-1]  # a bare "."


def test_vcf45_local_alleles(tmp_path: Path) -> None:
    header = (
        HEADER.replace("VCFv4.3", "VCFv4.5")
        + '##FORMAT=<ID=LAA,Number=.,Type=Integer,Description="Local alleles">\n'
        + '##FORMAT=<ID=LAD,Number=LR,Type=Integer,Description="Local allele depths">\n'
    )
    path = write_vcf(
        tmp_path / "local.vcf",
        [record(alt="G,T,C", info="AF=0.1,0.2,0.3", format="GT:LAA:LAD", s1="0/3:3:5,6", s2="1|2:1,2:1,2,3")],
        header=header,
    )
    assert validate_file(path).valid
    variants = _variants(path)
    assert len(variants) == 3
    assert [list(g.alleles) for g in genotype_calls(variants[2].genotypes)] == [[0, 3], [1, 2]]


def test_annotations_travel_as_written_and_their_subfield_names_once_per_job(tmp_path: Path) -> None:
    """CSQ and ANN reach the router as the file wrote them; how to split them is the job's
    AnnotationContext, read from this header (the router reads every batch with it), not a copy
    of every subfield on every variant."""
    header = HEADER + (
        '##INFO=<ID=CSQ,Number=.,Type=String,Description="Consequence annotations from Ensembl VEP. '
        'Format: Allele|Consequence|IMPACT|SYMBOL">\n'
        '##INFO=<ID=ANN,Number=.,Type=String,Description="Functional annotations: '
        "'Allele | Annotation | Annotation_Impact | Gene_Name'\">\n"
    )
    csq = "G|missense_variant|MODERATE|BRCA1,G|intron_variant|MODIFIER|NBR2"
    path = write_vcf(
        tmp_path / "csq.vcf", [record(info=f"CSQ={csq};ANN=G|stop_gained|HIGH|BRCA1")], header=header
    )
    (variant,) = _variants(path)
    assert list(variant.info["CSQ"].strings.values) == csq.split(",")
    assert list(variant.info["ANN"].strings.values) == ["G|stop_gained|HIGH|BRCA1"]
    assert sorted(variant.info) == ["ANN", "CSQ"]
    context = annotation_context(header.splitlines())
    assert list(context.csq_fields) == ["Allele", "Consequence", "IMPACT", "SYMBOL"]
    assert list(context.ann_fields) == ["Allele", "Annotation", "Annotation_Impact", "Gene_Name"]


def test_percent_decoding_and_huge_info(tmp_path: Path) -> None:
    gene = "A%3BB" + "x" * 100_000
    (variant,) = _variants(write_vcf(tmp_path / "pct.vcf", [record(info=f"GENE={gene}")]))
    assert variant.info["GENE"].strings.values[0] == "A;B" + "x" * 100_000


def test_bcf_and_region_on_indexed_files(tmp_path: Path) -> None:
    path = write_synthetic_vcf(
        tmp_path / "s.vcf.gz", SyntheticVcfSpec(records=500, samples=2, seed=5), bgzip=True, index=True
    )
    bcf = tmp_path / "s.bcf"
    with (
        pysam.VariantFile(os.fspath(path)) as src,
        pysam.VariantFile(os.fspath(bcf), "wb", header=src.header) as out,
    ):
        for rec in src:
            out.write(rec)
    bcftools.index(os.fspath(bcf))
    text = _variants(path)
    assert [(v.position, v.alternate) for v in _variants(bcf)] == [(v.position, v.alternate) for v in text]
    region = _variants(path, region="chr1:1000-5000")
    assert region and all(v.chromosome == "chr1" and 1000 <= v.position <= 5000 for v in region)
    assert [(v.position, v.alternate) for v in _variants(bcf, region="chr1:1000-5000")] == [
        (v.position, v.alternate) for v in region
    ]


def _truncated_bgzip(tmp_path: Path) -> Path:
    full = write_synthetic_vcf(
        tmp_path / "full.vcf.gz", SyntheticVcfSpec(records=3000, samples=1, seed=2), bgzip=True
    )
    data = full.read_bytes()
    path = tmp_path / "truncated.vcf.gz"
    path.write_bytes(data[: len(data) // 2])
    return path


def _binary(tmp_path: Path) -> Path:
    path = tmp_path / "binary.vcf"
    path.write_bytes(bytes(range(256)) * 40)
    return path


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.vcf"
    path.write_bytes(b"")
    return path


UNUSABLE = [
    (_truncated_bgzip, "TRUNCATED_FILE", "truncated"),
    (_binary, "BINARY_FILE", "binary"),
    (_empty, "EMPTY_FILE", "empty"),
]


@pytest.mark.parametrize(("make", "code", "words"), UNUSABLE, ids=[u[1] for u in UNUSABLE])
def test_unusable_files_raise_with_a_code(
    tmp_path: Path, make: Callable[[Path], Path], code: str, words: str
) -> None:
    with pytest.raises(VcfFileError) as caught:
        VcfReader(make(tmp_path), file_id="f", job_id="j", tenant_id="t", source_name="x")
    assert caught.value.code == code
    assert words in str(caught.value)


def _store(pipeline: LocalPipeline) -> LanceStore:
    return pipeline.writer.lance


def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", bus_url=f"memory://ingest-{tmp_path.name}")


async def test_lenient_run_stores_good_records_and_dead_letters_the_bad(tmp_path: Path) -> None:
    source = write_synthetic_vcf(tmp_path / "g.vcf", SyntheticVcfSpec(records=10_000, samples=1, seed=11))
    lines = source.read_text().splitlines(keepends=True)
    first_record = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    bad_at = [first_record + 10, first_record + 5000, first_record + 9999]  # 0-based
    breakers = [(1, "x1"), (4, "G<DEL"), (3, "Q")]  # POS, ALT, REF
    # An INFO value of the wrong Type: an error of the file, but the record is stored.
    value_at = first_record + 7000
    columns = lines[value_at].rstrip("\n").split("\t")
    columns[7] = "DP=abc"
    lines[value_at] = "\t".join(columns) + "\n"
    for index, (column, value) in zip(bad_at, breakers, strict=True):
        columns = lines[index].rstrip("\n").split("\t")
        columns[column] = value
        lines[index] = "\t".join(columns) + "\n"
    path = tmp_path / "three-bad.vcf"
    path.write_text("".join(lines))
    async with LocalPipeline(_settings(tmp_path)) as pipeline:
        job_id = await pipeline.submit(path)
        job = await pipeline.wait(job_id, timeout_s=120)
        # Three records of the file went to the dead-letters stream: the job ends with errors.
        assert events_pb2.JobState.Name(job.state) == "JOB_STATE_COMPLETE_WITH_ERRORS", job.error
        assert job.error.startswith("3 records of the file broke the VCF specification"), job.error
        assert job.counts.dead_lettered == 3
        # DP=abc is listed on the job (GetJob), at its line, as what the job read past.
        assert [(i.line, i.column, i.code, i.warning) for i in job.file_issues] == [
            (value_at + 1, "INFO", "INFO_TYPE", False)
        ]
        assert "the record is kept with the value as text" in job.file_issues[0].message
        assert not job.more_file_issues
        # Every ALT of every other record, the one with DP=abc among them.
        records = [line.split("\t") for line in lines[first_record:]]
        kept = [r for i, r in enumerate(records) if first_record + i not in bad_at]
        assert job.counts.total == sum(len(r[4].split(",")) for r in kept)
        writer = _store(pipeline)
        assert writer.count(job_id) == job.counts.total
        letters = await published(
            pipeline.bus, pipeline.settings.topology.dead_letters, events_pb2.DeadLetter
        )
    records_stored = {v for v in range(10_000)} - {i - first_record for i in bad_at}
    assert len(records_stored) == 9_997
    assert sorted((d.line_number, d.error_code) for d in letters) == [
        (bad_at[0] + 1, "POS_INVALID"),
        (bad_at[1] + 1, "ALT_INVALID"),
        (bad_at[2] + 1, "REF_INVALID"),
    ]
    assert all(
        d.raw_line == lines[d.line_number - 1].rstrip("\n") and d.file_name == path.name for d in letters
    )
    assert all(d.job_id == job_id for d in letters)


async def test_strict_mode_fails_before_publishing(tmp_path: Path) -> None:
    path = write_vcf(tmp_path / "strict.vcf", [GOOD, record(pos="200", info="DP=x")])
    async with LocalPipeline(_settings(tmp_path)) as pipeline:
        publisher = pipeline.ingest.publisher
        job = await publisher.submit(path, validation="strict")
        done = await pipeline.wait(job.job_id, timeout_s=60)
        assert events_pb2.JobState.Name(done.state) == "JOB_STATE_FAILED"
        assert "strict validation found 1 error" in done.error and "line 20, column INFO" in done.error
        assert _store(pipeline).count(job.job_id) == 0


async def test_strict_mode_passes_shoulds_and_stores_the_records(tmp_path: Path) -> None:
    # An undeclared INFO key and FILTER (SHOULDs, VCF 4.3 §1.6.1 and §1.4) and unsorted positions
    # are warnings: a strict job completes and stores all three records.
    records = [GOOD, record(pos="300", info="XX=1", filter="q10"), record(pos="200")]
    path = write_vcf(tmp_path / "shoulds.vcf", records)
    async with LocalPipeline(_settings(tmp_path)) as pipeline:
        publisher = pipeline.ingest.publisher
        job = await publisher.submit(path, validation="strict")
        done = await pipeline.wait(job.job_id, timeout_s=60)
        assert events_pb2.JobState.Name(done.state) == "JOB_STATE_COMPLETE", done.error
        assert (done.counts.total, done.counts.dead_lettered) == (3, 0)
        assert _store(pipeline).count(job.job_id) == 3


@pytest.mark.parametrize(("make", "code", "words"), UNUSABLE, ids=[u[1] for u in UNUSABLE])
async def test_unusable_files_fail_the_job_and_store_nothing(
    tmp_path: Path, make: Callable[[Path], Path], code: str, words: str
) -> None:
    path = make(tmp_path)
    async with LocalPipeline(_settings(tmp_path)) as pipeline:
        job_id = await pipeline.submit(path)
        job = await pipeline.wait(job_id, timeout_s=60)
        assert events_pb2.JobState.Name(job.state) == "JOB_STATE_FAILED"
        assert words in job.error
        assert _store(pipeline).count(job_id) == 0
        assert job.counts.ingested == 0


async def test_header_without_records_is_valid_and_its_job_completes_empty(tmp_path: Path) -> None:
    # No version of the spec requires a record (VCF 4.3 §1.6: data lines follow the header).
    path = write_vcf(tmp_path / "header-only.vcf", [])
    report = validate_file(path)
    assert report.valid and report.records == 0
    assert [w.code for w in report.warnings] == ["NO_RECORDS"]
    async with LocalPipeline(_settings(tmp_path)) as pipeline:
        job_id = await pipeline.submit(path)
        job = await pipeline.wait(job_id, timeout_s=60)
        assert events_pb2.JobState.Name(job.state) == "JOB_STATE_COMPLETE", job.error
        assert (job.counts.total, job.counts.ingested, job.counts.dead_lettered) == (0, 0, 0)
        assert _store(pipeline).count(job_id) == 0


def test_fixture_copies_match_their_origin() -> None:
    # tests/data/vcf holds copies of real files; see tests/data/vcf/ORIGIN.md.
    data = Path(__file__).parent.parent / "data" / "vcf"
    for name in ("mixed-filtering.vcf", "1kg.vcf.gz"):
        assert (data / name).read_bytes() == (PYVCF_DATA / name).read_bytes()
