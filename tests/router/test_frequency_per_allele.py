"""A population frequency belongs to its allele: Number=A lists keep a missing value's place (VCF 4.3
§1.4.2), and a source that cannot be read for an allele never counts as absence.

ACMG/AMP 2015 (Richards et al.) Table 4 BA1 (AF > 0.05, ClinGen SVI 2018) and Table 3 PM2 at
Supporting strength (ClinGen SVI PM2 v1.0: absent from population databases) are decided from
the allele's own frequency. Ingest once dropped a `.` from `gnomAD_AF=.,0.3`, so the first ALT took
the second's 0.3 and was called benign by BA1; and a list with more values than alleles was read
by position, so dbSNP's CAF gave rs368041661's C another allele's 0.6112 (BA1, benign).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vcf_agent.v1 import analysis_pb2

from ._file_analysis import analyse_file, at

DBSNP = (
    Path(__file__).parents[2]
    / ".venv/test-data/debian/usr/share/doc/vcfanno-examples/tests/id-test/dbsnp.small.vcf.gz"
)

HEADER = (
    "##fileformat=VCFv4.2\n"
    "##contig=<ID=1,length=1000000>\n"
    '##INFO=<ID=gnomAD_AF,Number=A,Type=Float,Description="Alternate allele frequency in gnomAD genomes">\n'
    '##INFO=<ID=gnomAD_note,Number=.,Type=String,Description="gnomAD allele frequency as text">\n'
    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
)


def _write(tmp_path: Path, *records: str) -> Path:
    path = tmp_path / "frequencies.vcf"
    path.write_text(HEADER + "".join(f"1\t{1000 * (i + 1)}\t.\tA\t{r}\n" for i, r in enumerate(records)))
    return path


def _criteria(result: analysis_pb2.AnalysisResult) -> list[tuple[str, bool, str]]:
    return [(c.code, c.met, c.value) for c in result.annotation.acmg_criteria]


def test_an_allele_whose_frequency_is_missing_does_not_take_the_next_alleles(tmp_path: Path) -> None:
    results = analyse_file(
        _write(
            tmp_path,
            "G,T\t50\tPASS\tgnomAD_AF=.,0.3",
            "G,T\t50\tPASS\tgnomAD_AF=0.3,.",
        )
    )
    for missing, listed in (((1000, "G"), (1000, "T")), ((2000, "T"), (2000, "G"))):
        absent = at(results, *missing)
        assert absent.annotation.population_af == -1.0
        assert absent.annotation.frequency_tier == "absent"
        assert _criteria(absent) == [("PM2_Supporting", True, "absent")]
        assert absent.classification == "uncertain_significance"
        common = at(results, *listed)
        assert common.annotation.population_af == pytest.approx(0.3)
        assert common.annotation.population_af_source == "INFO:gnomAD_AF"
        assert _criteria(common) == [("BA1", True, "0.3")]
        assert common.classification == "benign"


def test_an_unreadable_source_bounds_the_frequency_from_below_only(tmp_path: Path) -> None:
    """gnomAD_note is text no number can be read from: BA1 from gnomAD_AF's 0.2 stands (the
    frequency is at least that), but 0.00001 cannot show rarity, nor nothing show absence."""
    results = analyse_file(
        _write(
            tmp_path,
            "G\t50\tPASS\tgnomAD_AF=0.2;gnomAD_note=n/a",
            "G\t50\tPASS\tgnomAD_AF=0.00001;gnomAD_note=n/a",
            "G\t50\tPASS\tgnomAD_note=n/a",
            "G\t50\tPASS\tgnomAD_note=0.00001",
        )
    )
    common = at(results, 1000, "G")
    assert _criteria(common) == [("BA1", True, "0.2")] and common.classification == "benign"
    assert common.annotation.frequency_tier == "common"
    # Read alone, 0.00001 is ultra-rare (and, at the default PM2 threshold of 0, no PM2).
    rare_read = at(results, 2000, "G")
    assert rare_read.annotation.frequency_tier == "unknown"
    assert _criteria(rare_read) == []
    assert "INFO:gnomAD_note unreadable for this allele" in rare_read.rationale
    nothing_read = at(results, 3000, "G")
    assert nothing_read.annotation.frequency_tier == "unknown"
    assert nothing_read.annotation.population_af == -1.0
    assert _criteria(nothing_read) == [("PM2_Supporting", False, "absent; INFO:gnomAD_note unreadable")]
    assert "no population frequency read; INFO:gnomAD_note unreadable" in nothing_read.rationale
    # Text that is a number is read as one.
    as_text = at(results, 4000, "G")
    assert as_text.annotation.frequency_tier == "ultra_rare"
    assert as_text.annotation.population_af == pytest.approx(0.00001)


CSQ_HEADER = (
    "##fileformat=VCFv4.2\n"
    "##contig=<ID=1,length=1000000>\n"
    '##INFO=<ID=CSQ,Number=.,Type=String,Description="Consequence annotations from Ensembl VEP. '
    'Format: Allele|Consequence|IMPACT|SYMBOL|gnomADe_AF|MAX_AF">\n'
    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
)


def test_a_csq_frequency_that_is_text_is_unreadable_not_absence(tmp_path: Path) -> None:
    """The same rule inside VEP's CSQ (ClinGen SVI PM2 v1.0: absence must be shown): a frequency
    field whose value for the allele is text no number can be read from may hold a higher
    frequency. It once counted as nothing listed, so the allele was called absent and PM2 met."""
    path = tmp_path / "csq.vcf"
    path.write_text(
        CSQ_HEADER
        + "1\t1000\t.\tA\tG\t50\tPASS\tCSQ=G|missense_variant|MODERATE|GENE1|n/a|\n"
        + "1\t2000\t.\tA\tG\t50\tPASS\tCSQ=G|missense_variant|MODERATE|GENE1|0.2&n/a|\n"
        + "1\t3000\t.\tA\tG\t50\tPASS\tCSQ=G|missense_variant|MODERATE|GENE1|0.00001|n/a\n"
        # Empty and '.' are VEP's way of writing "not listed": still absence.
        + "1\t4000\t.\tA\tG\t50\tPASS\tCSQ=G|missense_variant|MODERATE|GENE1|.|\n"
    )
    results = analyse_file(path)
    text_only = at(results, 1000, "G")
    assert text_only.annotation.frequency_tier == "unknown"
    assert text_only.annotation.population_af == -1.0
    assert _criteria(text_only) == [("PM2_Supporting", False, "absent; CSQ:gnomADe_AF unreadable")]
    assert "CSQ:gnomADe_AF unreadable" in text_only.rationale
    # What was read is a lower bound: 0.2 is enough for BA1 (ACMG/AMP 2015 Table 4, > 0.05).
    common = at(results, 2000, "G")
    assert _criteria(common) == [("BA1", True, "0.2")] and common.classification == "benign"
    assert common.annotation.population_af_source == "CSQ:gnomADe_AF"
    # 0.00001 read from one field cannot show rarity while another field is unreadable.
    rare_read = at(results, 3000, "G")
    assert rare_read.annotation.frequency_tier == "unknown"
    assert rare_read.annotation.population_af == pytest.approx(0.00001)
    assert "CSQ:MAX_AF unreadable for this allele" in rare_read.rationale
    absent = at(results, 4000, "G")
    assert absent.annotation.frequency_tier == "absent"
    assert _criteria(absent) == [("PM2_Supporting", True, "absent")]


@pytest.mark.skipif(
    not DBSNP.exists(), reason="Debian package vcfanno-examples not unpacked (scripts/install-test-data.sh)"
)
def test_dbsnp_caf_with_more_values_than_alleles_is_unreadable_not_benign() -> None:
    # chr21 9483406 rs368041661 G C . . CAF=0.3888,.,0.6112 (checked by hand): CAF is "based on
    # 1000Genomes, starting with the reference allele followed by alternate alleles as ordered in
    # the ALT column", so REF and one ALT should give two values; three cannot be placed, and the
    # 0.6112 once read as C's made it benign by BA1. The next record, rs9996 (C,G), has no INFO:
    # 1000 Genomes does not list it (the file declares CAF), so PM2_Supporting for both ALTs.
    results = analyse_file(DBSNP)
    caf = at(results, 9483406, "C")
    assert caf.annotation.frequency_tier == "unknown"
    assert caf.annotation.population_af == -1.0
    assert _criteria(caf) == [("PM2_Supporting", False, "absent; INFO:CAF unreadable")]
    assert caf.classification == "uncertain_significance"
    for alternate in ("C", "G"):
        unlisted = at(results, 10910311, alternate)
        assert unlisted.annotation.frequency_tier == "absent"
        assert _criteria(unlisted) == [("PM2_Supporting", True, "absent")]
