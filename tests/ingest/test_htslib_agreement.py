"""Ingest and htslib agree on real files: every record htslib reads is ingested or named as a MUST broken.

Files: pyvcf3's test VCFs (a dev dependency) and the VCFs of Debian's
htslib-test package (unpacked by `scripts/install-test-data.sh`, run by `scripts/install.sh
--test-servers`, into .venv/test-data/debian). htslib is read
through pysam. For each record htslib returns, lenient ingest must have
published it (one variant per real ALT), counted it as REF-only or as a gVCF
reference block, or dead-lettered it with a code that `vcf-agent validate`
reports as an error (never a warning) at the same line.
"""

from __future__ import annotations

import os
from pathlib import Path

import pysam
import pytest
import vcf

from vcf_agent.app.pipeline import LocalPipeline
from vcf_agent.config import Settings
from vcf_agent.schema import genotype_calls
from vcf_agent.services.ingest import validate_file
from vcf_agent.services.ingest._vcf_header import WARNING_CODES
from vcf_agent.services.ingest._vcf_reader import GVCF_PLACEHOLDERS, VcfReader
from vcf_agent.v1 import events_pb2, variant_pb2

PYVCF_DATA = Path(vcf.__file__).parent / "test"
HTSLIB_TEST = (
    Path(__file__).resolve().parents[2]
    / ".venv"
    / "test-data"
    / "debian"
    / "usr"
    / "share"
    / "htslib-test"
    / "test"
)
needs_htslib_test = pytest.mark.skipif(
    not HTSLIB_TEST.is_dir(),
    reason=f"Debian's htslib-test data is not at {HTSLIB_TEST} (scripts/install.sh --test-servers)",
)

# Files htslib reads records from; those it cannot open (VCF 4.0 headers with spaces,
# plain gzip it cannot seek in) have nothing to agree on.
PYVCF_FILES = [
    "1kg.sites.vcf",
    "FT.vcf",
    "bad-info-character.vcf",
    "bcftools.vcf",
    "example-4.0.vcf",
    "example-4.1-ploidy.vcf",
    "example-4.1-sv.vcf",
    "example-4.1.vcf",
    "freebayes.vcf",
    "gatk.vcf",
    "gonl.chr20.release4.gtc.vcf",
    "info-type-character.vcf",
    "issue-140-file1.vcf",
    "issue-140-file2.vcf",
    "issue-140-file3.vcf",
    "issue-201.vcf.gz",
    "issue-214.vcf",
    "mixed-filtering.vcf",
    "null_genotype_mono.vcf",
    "parse-meta-line.vcf",
    "samples-space.vcf",
    "samtools.vcf",
    "string_as_flag.vcf",
    "tb.vcf.gz",
    "uncalled_genotypes.vcf",
    "walk_left.vcf",
    "walk_refcall.vcf",
]
HTSLIB_FILES = [
    "index.vcf",
    "formatcols.vcf",
    "formatmissing.vcf",
    "longrefs/index.vcf",
    "tabix/large_chr.vcf",
    "tabix/vcf_file.vcf",
    "test-vcf-hdr-in.vcf",
    "vcf_meta_meta.vcf",
    "bcf-sr/merge.noidx.a.vcf",
    "bcf-sr/merge.noidx.b.vcf",
    "bcf-sr/merge.noidx.hdr_order.vcf",
]


def _htslib_records(path: Path) -> list[tuple[str, int]]:
    with pysam.VariantFile(os.fspath(path)) as variant_file:
        return [(record.chrom, record.pos) for record in variant_file]


def _data_lines(path: Path) -> list[tuple[int, list[str]]]:
    """(1-based line number, columns) of each data line, as a text reader sees them."""
    opener = pysam.BGZFile if path.suffix == ".gz" else open
    with opener(os.fspath(path), "rb") as fh:
        text = fh.read().decode()
    return [
        (number, line.split("\t"))
        for number, line in enumerate(text.splitlines(), start=1)
        if line and not line.startswith("#")
    ]


def _check_agreement(path: Path) -> dict[str, int]:
    htslib = _htslib_records(path)
    assert htslib, "htslib read no record: nothing to agree on"
    lines = _data_lines(path)
    with VcfReader(path, file_id="f", job_id="j", tenant_id="t", source_name=path.name) as reader:
        variant_lines = [v.line_number for batch in reader for v in batch.variants]
    letters = {d.line_number: d.error_code for d in reader.take_dead_letters()}
    report = validate_file(path)
    errors = {(e.line, e.code) for e in report.errors}
    warnings = {(w.line, w.code) for w in report.warnings}
    outcome = {"ingested": 0, "not_a_variant": 0, "dead_lettered": 0}
    for (chrom, pos), (number, columns) in zip(htslib, lines, strict=False):
        # The k-th record htslib returns is the k-th data line of the file.
        assert (columns[0], columns[1]) == (chrom, str(pos))
        alts = columns[4].split(",")
        real = [a for a in alts if a not in GVCF_PLACEHOLDERS and a != "."]
        if number in letters:
            code = letters[number]
            assert code not in WARNING_CODES
            assert (number, code) in errors and (number, code) not in warnings
            assert number not in variant_lines
            outcome["dead_lettered"] += 1
        elif real:
            assert variant_lines.count(number) == len(real), (number, columns[4])
            outcome["ingested"] += 1
        else:
            # ALT '.' (REF-only) or only <*>/<NON_REF> (a gVCF reference block).
            assert number not in variant_lines
            outcome["not_a_variant"] += 1
    assert sum(outcome.values()) == len(htslib)
    assert reader.counters.ref_only_records + reader.counters.reference_blocks == outcome["not_a_variant"]
    return outcome


@pytest.mark.parametrize("name", PYVCF_FILES)
def test_pyvcf3_records_htslib_reads_are_ingested_or_dead_lettered_for_a_named_must(name: str) -> None:
    _check_agreement(PYVCF_DATA / name)


@needs_htslib_test
@pytest.mark.parametrize("name", HTSLIB_FILES)
def test_htslib_test_records_htslib_reads_are_ingested_or_dead_lettered_for_a_named_must(name: str) -> None:
    _check_agreement(HTSLIB_TEST / name)


def _read(path: Path) -> list[variant_pb2.VariantMessage]:
    with VcfReader(path, file_id="f", job_id="j", tenant_id="t", source_name=path.name) as reader:
        variants = [v for batch in reader for v in batch.variants]
    assert reader.take_dead_letters() == []
    return variants


def test_records_with_undeclared_keys_are_ingested_typed_as_htslib_types_them() -> None:
    # example-4.1-sv.vcf line 33, a homozygous mobile-element insertion whose MIINFO has no
    # ##INFO line: 3 9425916 . C <INS:ME:L1> 23 PASS ...;MIINFO=L1HS,1,6025,- GT:GQ 1/1:15.
    (mei,) = [v for v in _read(PYVCF_DATA / "example-4.1-sv.vcf") if v.line_number == 33]
    assert (mei.chromosome, mei.position, mei.alternate) == ("3", 9425916, "<INS:ME:L1>")
    assert [list(g.alleles) for g in genotype_calls(mei.genotypes)] == [[1, 1]]
    # htslib's dummy definition is Number=1, Type=String: the value stays whole, commas included.
    assert list(mei.info["MIINFO"].strings.values) == ["L1HS,1,6025,-"]
    # issue-201.vcf.gz (dbSNP + snpEff) has no ##INFO line at all; its 3 records all flow.
    # First: 17 19559837 rs375800329 G C 0 . OriginalChr=chr17;...;ASP;REF;S3D;SYN;ANN=C|...
    dbsnp = _read(PYVCF_DATA / "issue-201.vcf.gz")
    assert [(v.position, v.id, v.reference, v.alternate) for v in dbsnp][:1] == [
        (19559837, "rs375800329", "G", "C")
    ]
    assert len(dbsnp) == 3
    first = dbsnp[0].info
    assert list(first["OriginalChr"].strings.values) == ["chr17"]
    assert list(first["RS"].strings.values) == ["375800329"]
    assert first["ASP"].flag and first["SYN"].flag  # value-less keys stay flags, as in htslib
    # uncalled_genotypes.vcf line 6 fails FILTER q10, which has no ##FILTER line.
    (q10,) = [v for v in _read(PYVCF_DATA / "uncalled_genotypes.vcf") if v.line_number == 6]
    assert list(q10.filters) == ["q10"]
    for name in ("example-4.1-sv.vcf", "issue-201.vcf.gz", "mixed-filtering.vcf", "uncalled_genotypes.vcf"):
        assert _check_agreement(PYVCF_DATA / name)["dead_lettered"] == 0


@needs_htslib_test
def test_bcftools_gvcf_reference_blocks_are_counted_not_published() -> None:
    # htslib-test's index.vcf is `bcftools mpileup` output: 621 records, 619 of them ALT <*> only,
    # and two with a real ALT before <*>: 2:4999999 T>C,<*> and 10:3000066 G>A,<*> (checked by hand).
    path = HTSLIB_TEST / "index.vcf"
    with VcfReader(path, file_id="f", job_id="j", tenant_id="t", source_name=path.name) as reader:
        variants = [v for batch in reader for v in batch.variants]
    assert [(v.chromosome, v.position, v.reference, v.alternate, v.alt_index) for v in variants] == [
        ("2", 4999999, "T", "C", 0),
        ("10", 3000066, "G", "A", 0),
    ]
    # The record's full ALT list is kept for reference.
    assert [list(v.all_alternates) for v in variants] == [["C", "<*>"], ["A", "<*>"]]
    counters = reader.counters
    assert (counters.records, counters.reference_blocks, counters.placeholder_alleles) == (621, 619, 2)
    assert reader.take_dead_letters() == []
    report = validate_file(path)
    assert (report.valid, report.records, report.reference_blocks) == (True, 621, 619)


@needs_htslib_test
async def test_gvcf_job_stores_and_analyses_only_real_alleles_and_counts_the_rest(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", bus_url=f"memory://gvcf-{tmp_path.name}")
    async with LocalPipeline(settings) as pipeline:
        job_id = await pipeline.submit(HTSLIB_TEST / "index.vcf")
        job = await pipeline.wait(job_id, timeout_s=120)
        assert events_pb2.JobState.Name(job.state) == "JOB_STATE_COMPLETE", job.error
        assert (job.counts.total, job.counts.stored) == (2, 2)
        assert (job.counts.reference_blocks, job.counts.placeholder_alleles) == (619, 2)
        store = pipeline.writer.lance
        assert store.count(job_id) == 2
