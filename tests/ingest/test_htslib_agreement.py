"""Ingest and htslib agree on real files: every record htslib reads is ingested or named as a MUST broken.

Files: pyvcf3's test VCFs (a dev dependency); the VCFs of Debian's htslib-test, python3-cyvcf2
and vcfanno-examples packages and of bcftools' source package (its `csq` test inputs), and the
scout-browser wheel's demo (all unpacked by `scripts/install-test-data.sh`, run by
`scripts/install.sh --test-servers`, into .venv/test-data). htslib is read
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
    "bcf-sr/merge.noidx.c.vcf",
    "bcf-sr/merge.noidx.rec_order.vcf",
    "formatmissing-out.vcf",
]
TEST_DATA = Path(__file__).resolve().parents[2] / ".venv" / "test-data"
# Every VCF of these packages that htslib opens (those it refuses: an empty file, a sample name
# empty, #CHROM lines with spaces or FORMAT but no sample, plain gzip it cannot seek in).
CYVCF2_TEST = TEST_DATA / "debian/usr/lib/python3/dist-packages/cyvcf2/tests"
CYVCF2_FILES = [
    "bug.vcf.gz",
    "decomposed.vcf",
    "issue_198.vcf",
    "issue_44.vcf",
    "no-seq-len.vcf",
    "no-seq-names.vcf",
    "o.vcf.gz",
    "seg.vcf.gz",
    "test-alt-repr.vcf",
    "test-format-string.vcf",
    "test-genotypes.vcf",
    "test-haploidX.vcf",
    "test-hemi.vcf",
    "test-multiallelic-homozygous-alt.vcf.gz",
    "test-strict-gt-option-flag.vcf.gz",
    "test.bug.117.vcf",
    "test.comp_het.3.vcf",
    "test.isa.vcf",
    "test.mnp.vcf",
    "test.snpeff.vcf",
    "test.vcf.gz",
    "test_gt_alt_freqs.vcf",
    "test_gt_bases.vcf.gz",
]
VCFANNO = TEST_DATA / "debian/usr/share/doc/vcfanno-examples"
VCFANNO_FILES = [
    "example/exac.vcf.gz",
    "example/query.vcf.gz",
    "tests/astar/astar.anno.vcf.gz",
    "tests/by_alt_float/q.vcf",
    "tests/data/multiple-alts.vcf.gz",
    "tests/dbnsfp/Calls_for_dbNSFP_example.vcf.gz",
    "tests/id-test/cosmic.small.vcf.gz",
    "tests/id-test/dbsnp.small.vcf.gz",
    "tests/id-test/small.ann.vcf",
    "tests/id-test/small.vcf.gz",
    "tests/missing_postanno/o.vcf",
    "tests/multiple-alts/ma-db.vcf.gz",
    "tests/multiple-alts/ma-query.vcf",
    "tests/notbgz/gno.vcf.gz",
    "tests/overwrite-multiple-alts/a/input.vcf",
    "tests/overwrite-multiple-alts/a/whole.vcf.gz",
    "tests/overwrite-multiple-alts/b/cadd_indels.vcf.gz",
    "tests/overwrite-multiple-alts/b/input.vcf",
    "tests/overwrite-multiple-alts/b/whole_genome_snv_slice.vcf.gz",
    "tests/ref-alt-test/tmp_calls.vcf.gz",
    "tests/testVA/test-gnomad.vcf.gz",
    "tests/testVA/test-input.vcf",
]
BCFTOOLS_CSQ = TEST_DATA / "debian-source/bcftools-1.16/test/csq/ENST00000379416"
BCFTOOLS_CSQ_FILES = [
    "compound.del-snp.vcf",
    "compound.ins-del.vcf",
    "compound.ins-ins.vcf",
    "compound.ins-snp.vcf",
    "single.vcf",
]
SCOUT_DEMO = TEST_DATA / "pypi/scout-browser-4.115.2/scout/demo/643594.clinical.vcf.gz"


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


def _unpacked(path: Path, package: str) -> Path:
    if not path.exists():
        pytest.skip(f"{package} not unpacked at {path} (scripts/install-test-data.sh)")
    return path


@pytest.mark.parametrize("name", CYVCF2_FILES)
def test_cyvcf2_test_records_htslib_reads_are_ingested_or_dead_lettered_for_a_named_must(name: str) -> None:
    _check_agreement(_unpacked(CYVCF2_TEST / name, "Debian's python3-cyvcf2"))


@pytest.mark.parametrize("name", VCFANNO_FILES)
def test_vcfanno_example_records_htslib_reads_are_ingested_or_dead_lettered_for_a_named_must(
    name: str,
) -> None:
    _check_agreement(_unpacked(VCFANNO / name, "Debian's vcfanno-examples"))


@pytest.mark.parametrize("name", BCFTOOLS_CSQ_FILES)
def test_bcftools_csq_input_records_htslib_reads_are_ingested(name: str) -> None:
    outcome = _check_agreement(_unpacked(BCFTOOLS_CSQ / name, "Debian's bcftools source package"))
    assert outcome["dead_lettered"] == 0


def test_scout_demo_values_breaking_their_header_are_errors_of_the_file_and_every_record_flows() -> None:
    """The MIP demo (680 records) declares INFO CADD `Number=1,Type=Integer` and writes scores like
    2.444, INFO PG and FORMAT PP `Number=G` and writes other counts, and several dbNSFP keys
    `Number=A` with two values for one ALT: each a MUST broken (VCF 4.2 §1.4.1, §1.4.2: values of
    their Type and Number) by a value alone, so each is an error of the file, reported once per key
    at its first line, and every record is ingested. Which keys and lines is worked out here from
    the text alone (INFO by its declarations; FORMAT PP, the one FORMAT key that breaks)."""
    path = _unpacked(SCOUT_DEMO, "the scout-browser wheel's demo")
    outcome = _check_agreement(path)
    assert outcome == {"ingested": 680, "not_a_variant": 0, "dead_lettered": 0}
    declared: dict[str, tuple[str, str]] = {}
    with pysam.BGZFile(os.fspath(path), "rb") as compressed:
        text = compressed.read().decode()
    for line in text.splitlines():
        if line.startswith("##INFO=<ID="):
            fields = dict(part.split("=", 1) for part in line[len("##INFO=<") :].split(",")[:3])
            declared[fields["ID"]] = (fields["Number"], fields["Type"])
    expected: dict[tuple[str, str], tuple[int, str]] = {}
    for number, columns in _data_lines(path):
        alts = len(columns[4].split(","))
        counts = {"A": alts, "R": alts + 1, "G": (alts + 1) * (alts + 2) // 2}
        for entry in columns[7].split(";"):
            key, has_value, value = entry.partition("=")
            if not has_value or key not in declared:
                continue
            wanted, kind = declared[key]
            items = value.split(",")
            code = ""
            if kind == "Integer" and not all(i == "." or i.lstrip("+-").isdigit() for i in items):
                code = "INFO_TYPE"
            elif (wanted in counts and len(items) != counts[wanted]) or (
                wanted.isdigit() and len(items) != int(wanted)
            ):
                code = "INFO_NUMBER"
            if code:
                expected.setdefault(("INFO", key), (number, code))
        keys = columns[8].split(":")
        if "PP" in keys:
            pp = keys.index("PP")
            for call in (sample.split(":") for sample in columns[9:]):
                if len(call) > pp and call[pp] != "." and len(call[pp].split(",")) != counts["G"]:
                    expected.setdefault(("FORMAT", "PP"), (number, "FORMAT_NUMBER"))
    report = validate_file(path)
    found = {
        (e.column, e.message.split(" ")[1 if e.column == "INFO" else 5]): (e.line, e.code)
        for e in report.errors
    }
    assert found == expected
    assert expected[("INFO", "CADD")][1] == "INFO_TYPE" and len(expected) == 11
    # CADD's scores are kept as the text they are: line 351 (checked by hand) holds CADD=2.444.
    with VcfReader(path, file_id="f", job_id="j", tenant_id="t", source_name=path.name) as reader:
        at_351 = [v for batch in reader for v in batch.variants if v.line_number == 351]
    assert [list(v.info["CADD"].strings.values) for v in at_351] == [["2.444"]]


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


BCFTOOLS_TEST = TEST_DATA / "debian-source/bcftools-1.16/test"


def test_a_format_of_missing_is_a_record_without_sample_data_as_htslib_writes_it() -> None:
    """bcftools' gtcheck.5.vcf (checked by hand): 8 records of sample A, the last
    `1 3782658 . A T . . . . .`, FORMAT and sample both the MISSING value, which htslib writes for a
    record with samples and no FORMAT key (VCF 4.5 §1: `.` for a field with nothing in it). Before,
    that A>T was dead-lettered as an invalid FORMAT; now it is a variant whose one sample is a
    no-call. The first record is a gVCF block (<NON_REF>) and the second REF-only (ALT `.`);
    1:3781602 A>C,T gives two variants: 7 variants from 6 records."""
    path = _unpacked(BCFTOOLS_TEST / "gtcheck.5.vcf", "Debian's bcftools source package")
    assert _check_agreement(path) == {"ingested": 6, "not_a_variant": 2, "dead_lettered": 0}
    variants = _read(path)
    assert len(variants) == 7
    last = variants[-1]
    assert (last.chromosome, last.position, last.reference, last.alternate, last.line_number) == (
        "1",
        3782658,
        "A",
        "T",
        14,
    )
    assert [(c.sample, c.alleles) for c in genotype_calls(last.genotypes)] == [("A", (-1,))]


def test_an_empty_info_entry_is_an_error_of_the_file_and_its_record_flows() -> None:
    """bcftools' filter-missing-floats.vcf: 35 records, 6 of them with INFO ending in `;` (the first
    at line 11, `1 203 . A T 0 PASS A_AF=0.00008;B_AF=0.00008;`, checked by hand). VCF 4.5 §1: "Zero
    length fields are not allowed", so the file is invalid, reported once, at its first line; but
    the entry holds nothing, so every record is ingested with its values, as htslib reads them."""
    path = _unpacked(BCFTOOLS_TEST / "filter-missing-floats.vcf", "Debian's bcftools source package")
    assert _check_agreement(path) == {"ingested": 35, "not_a_variant": 0, "dead_lettered": 0}
    report = validate_file(path)
    assert not report.valid
    assert [(e.line, e.code) for e in report.errors] == [(11, "INFO_EMPTY_ENTRY")]
    at_11 = next(v for v in _read(path) if v.line_number == 11)
    assert sorted(at_11.info) == ["A_AF", "B_AF"]
    assert [list(at_11.info[key].floats.values) for key in ("A_AF", "B_AF")] == [
        pytest.approx([0.00008]),
        pytest.approx([0.00008]),
    ]


def test_an_alt_listing_one_allele_twice_is_read_allele_by_allele_with_a_warning() -> None:
    """bcftools' many.alleles.vcf: three records at chr7:142459798 with 33, 34 and 63 ALTs; the
    second and third list CCTTCTCTCTGCCCC more than once (counted by hand). No version of the spec
    forbids a repeated ALT (4.3+ forbid repeated IDs, FILTERs and keys), and each copy is an allele
    index of its own for the genotypes, so every ALT is a variant: 130, and one warning."""
    path = _unpacked(BCFTOOLS_TEST / "many.alleles.vcf", "Debian's bcftools source package")
    assert _check_agreement(path) == {"ingested": 3, "not_a_variant": 0, "dead_lettered": 0}
    variants = _read(path)
    assert len(variants) == 33 + 34 + 63
    report = validate_file(path)
    assert report.valid
    assert [(w.line, w.code) for w in report.warnings] == [(7, "ALT_DUPLICATE")]
    assert "'CCTTCTCTCTGCCCC'" in report.warnings[0].message


def test_a_line_ending_in_a_tab_is_an_error_of_the_file_and_its_record_flows() -> None:
    """vcfanno's dbNSFP example (GATK output, one sample) has one record, line 136,
    `22 17072303 ORIGID C T 1804.12 PASS ... GT:AD:DP:FT:GQ:PGT:PID:PL:PP 0/1:27,27:54:...`, ending in
    a tab: an eleventh, empty column past the header's ten (checked by hand). It was dead-lettered
    for its column count, the file's only variant lost; the empty column holds nothing, so the record
    is read without it, and the file is invalid for it (fields are tab-separated, none empty)."""
    path = _unpacked(VCFANNO / "tests/dbnsfp/Calls_for_dbNSFP_example.vcf.gz", "Debian's vcfanno-examples")
    assert _check_agreement(path) == {"ingested": 1, "not_a_variant": 0, "dead_lettered": 0}
    (variant,) = _read(path)
    assert (variant.chromosome, variant.position, variant.id, variant.reference, variant.alternate) == (
        "22",
        17072303,
        "ORIGID",
        "C",
        "T",
    )
    assert [(c.alleles, c.depth, c.genotype_quality) for c in genotype_calls(variant.genotypes)] == [
        ((0, 1), 54, 78)
    ]
    report = validate_file(path)
    assert [(e.line, e.code) for e in report.errors] == [(136, "TRAILING_TAB")]
