"""The specification's own VCF test suite (hts-specs test/vcf, tests/data/hts-specs): what `validate`
says of each file, and where its reading of the specification's text differs from the suite's.

The suite, mostly EBI's vcf-validator, holds `passed` files (valid) and `failed` ones, each naming
what breaks it in a `##CauseOfFailure` line. Every file is checked here; a difference is listed
with the text of VCFv4.3.tex (or 4.5) that decides it, and the test asserts the exact issues, so a
change on either side shows.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vcf_agent.services.ingest import validate_file
from vcf_agent.services.ingest._vcf_reader import VcfReader

SUITE = Path(__file__).resolve().parents[1] / "data" / "hts-specs"
PASSED_43 = sorted((SUITE / "4.3" / "passed").iterdir())
FAILED_43 = sorted((SUITE / "4.3" / "failed").iterdir())

# Errors `validate` reports in the suite's `passed` files, each (line, code, INFO key or column) and
# why the specification's text makes it one:
PASSED_BUT_ERRORS: dict[str, set[tuple[int, str, str]]] = {
    "complexfile_passed_000.vcf": {
        # CHROM 1 (lines 48, 50-...) on both sides of <1> (line 49): "All entries for a specific
        # CHROM must form a contiguous block" (§1.6.1); <1> names an assembly contig, not 1.
        (50, "CHROM_NOT_CONTIGUOUS", "CHROM"),
        # 1:52185 TTAA with ALT `.` has AC=10, AF=0.0046 (Number=A: one per ALT, none here) and a
        # GL of 3 (Number=G: one genotype, 0/0, when there is no ALT) (§1.4.2).
        (55, "INFO_NUMBER", "AC"),
        (55, "INFO_NUMBER", "AF"),
        (55, "FORMAT_NUMBER", "FORMAT"),
        # FILTER `STD_FILTER;PASS`: PASS "if this position has passed all filters", otherwise the
        # filters that fail (§1.6.1); both at once say both.
        (61, "FILTER_INVALID", "FILTER"),
    },
    "passed_body_alt.vcf": {
        # 1:1900 C with ALT `.`: sample 2's GT 0|1 names allele 1, "the first allele listed in ALT"
        # (§1.6.2), and there is none; AC, AF and GL count as on complexfile's line 55.
        (22, "GT_ALLELE_RANGE", "FORMAT"),
        (22, "INFO_NUMBER", "AC"),
        (22, "INFO_NUMBER", "AF"),
        (22, "FORMAT_NUMBER", "FORMAT"),
    },
    "passed_body_info.vcf": {
        # DB=0, H2=0, H3=0, SOMATIC=0, VALIDATED=0, 1000G=0: "The `Flag' type indicates that the INFO
        # field does not contain a Value entry" (§1.4.2); the suite takes 0 and 1 as flag values.
        (31, "INFO_TYPE", "DB"),
        (38, "INFO_TYPE", "H2"),
        (41, "INFO_TYPE", "H3"),
        (52, "INFO_TYPE", "SOMATIC"),
        (55, "INFO_TYPE", "VALIDATED"),
        (58, "INFO_TYPE", "1000G"),
        # SB=0.150: the reserved INFO keys' table types SB Integer, Number=4 (§1.6.1).
        (49, "INFO_TYPE", "SB"),
        # MY=0.777,-0.123 with MY Number=G: the suite reads G in INFO as any count; this reader
        # counts genotypes as for a diploid sample (3 for one ALT), INFO having no ploidy of its own.
        (61, "INFO_NUMBER", "MY"),
        # EXPLAIN="info_keys_with_Number=G_is_not_defined,_any_number_is_allowed", Number=1: "literal
        # commas are permitted only as delimiters for lists of values" (§1.6.1), so it holds two.
        (61, "INFO_NUMBER", "EXPLAIN"),
    },
    "passed_meta_info.vcf": {
        # ##INFO=<ID=ID3,Number=A,Type=Flag,...>: "the Number must be 0 in this case" (§1.4.2).
        (4, "META_INVALID_NUMBER", "ID3"),
    },
}

# The suite's `failed` files `validate` finds no error in, by what the suite says breaks them
# (each file's ##CauseOfFailure), and why the specification's text does not make it an error here:
FAILED_BUT_NO_ERROR = {
    # "contig ID contains a colon" (chr:1), "illegal character" (chr*1): §1.4.7's pattern for contig
    # names, [0-9A-Za-z!#$%&+./:;?@^_|~-][0-9A-Za-z!#$%&*+./:;=?@^_|~-]*, allows both.
    "failed_body_chrom_001.vcf": "CHROM pattern",
    "failed_body_chrom_004.vcf": "CHROM pattern",
    # "duplicated/triplicated variant": the text forbids no two records at one position with one
    # allele ("It is permitted to have multiple records with the same POS"); "No identifier should
    # be present in more than one data record" is a SHOULD across the whole file, not checked.
    "failed_body_duplicated_000.vcf": "repeated record",
    "failed_body_duplicated_001.vcf": "repeated record",
    "failed_body_duplicated_003.vcf": "repeated record",
    # "INFO AC/AF/AN/DP/END/MQ0/NS is a negative number" and "INFO CIGAR contains illegal characters
    # / is a number": the reserved keys' table gives their Number and Type, not a range or syntax.
    "failed_body_info_001.vcf": "reserved INFO value range",
    "failed_body_info_004.vcf": "reserved INFO value range",
    "failed_body_info_006.vcf": "reserved INFO value range",
    "failed_body_info_010.vcf": "reserved INFO value range",
    "failed_body_info_011.vcf": "reserved INFO value range",
    "failed_body_info_013.vcf": "reserved INFO value range",
    "failed_body_info_016.vcf": "reserved INFO value range",
    "failed_body_info_021.vcf": "reserved INFO value range",
    "failed_body_info_023.vcf": "reserved INFO value range",
    "failed_body_info_036.vcf": "reserved INFO value range",
    # "QUAL is a negative number": QUAL is a Float (§1.6.1), with no range given.
    "failed_body_qual_001.vcf": "QUAL range",
    # "no newline at end of file": the text does not require one; a warning (MISSING_FINAL_NEWLINE)
    # where a record ends the file, and nothing for a header alone (003, 004: no records).
    "failed_body_no_newline_000.vcf": "final newline",
    "failed_body_no_newline_001.vcf": "final newline",
    "failed_body_no_newline_002.vcf": "final newline",
    "failed_body_no_newline_003.vcf": "final newline",
    "failed_body_no_newline_004.vcf": "final newline",
    # A FORMAT column header and no sample: a warning (FORMAT_WITHOUT_SAMPLES); §1.5 puts FORMAT
    # before the samples "if genotype data is present".
    "failed_header_001.vcf": "FORMAT without samples",
    # Meta lines this reader does not check beyond their syntax: ##ALT ID prefixes, ##assembly,
    # ##contig IDs, ##META, ##PEDIGREE, ##pedigreeDB, ##SAMPLE values. None changes how a record
    # is read; records are checked against the contig pattern themselves.
    "failed_meta_alt_005.vcf": "meta line values",
    "failed_meta_assembly_001.vcf": "meta line values",
    "failed_meta_contig_002.vcf": "meta line values",
    "failed_meta_contig_003.vcf": "meta line values",
    "failed_meta_meta_000.vcf": "meta line values",
    "failed_meta_meta_001.vcf": "meta line values",
    "failed_meta_pedigree_000.vcf": "meta line values",
    "failed_meta_pedigree_001.vcf": "meta line values",
    "failed_meta_pedigreedb_002.vcf": "meta line values",
    "failed_meta_sample_001.vcf": "meta line values",
    "failed_meta_sample_002.vcf": "meta line values",
    "failed_meta_sample_003.vcf": "meta line values",
}

# For the failed data lines `validate` does find, an error of the rule the suite names must be
# among those reported (not only an unrelated one): by the file name's part.
CAUSE_CODES = {
    "alt": {"ALT_INVALID"},
    "chrom": {"CHROM_INVALID"},
    "contiguous": {"CHROM_NOT_CONTIGUOUS"},
    "filter": {"FILTER_INVALID", "FILTER_RESERVED"},
    "format": {"FORMAT_INVALID", "FORMAT_KEY_INVALID", "FORMAT_GT_NOT_FIRST", "GT_INVALID"},
    "id": {"ID_INVALID"},
    "info": {"INFO_TYPE", "INFO_NUMBER", "INFO_KEY_INVALID", "INFO_DUPLICATE_KEY", "INTEGER_OUT_OF_RANGE"},
    "pos": {"POS_INVALID"},
    "qual": {"QUAL_INVALID"},
    "ref": {"REF_INVALID"},
    "sample": {
        "GT_INVALID",
        "GT_ALLELE_RANGE",
        "SAMPLE_TOO_MANY_VALUES",
        "FORMAT_NUMBER",
        "FORMAT_TYPE",
        "DUPLICATE_SAMPLE",
    },
    "samples": {"FORMAT_NUMBER"},
}
# Failed for a rule that is a warning here, so only another error of the file (each also breaks a
# Number) makes `validate` call it invalid: "non-sorted vcf" (§1.6.1 "Positions are sorted
# numerically", said of the file, not as a MUST: POS_UNSORTED) and "duplicated variant due to
# multiallelic" (see the duplicated files above).
CAUSE_IS_A_WARNING = {
    "failed_body_unsorted_000.vcf": "POS_UNSORTED",
    "failed_body_duplicated_002.vcf": "",
}


_NO_CAUSE = {"failed_empty.vcf", "failed_empty_sample.vcf", "failed_header_000.vcf", "failed_header_001.vcf"}


def _cause(path: Path) -> str:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("##CauseOfFailure="):
            return line.split("=", 1)[1]
    return ""


@pytest.mark.parametrize("path", PASSED_43, ids=lambda p: p.name)
def test_vcf43_suite_passed_files_are_valid_but_where_the_text_says_otherwise(path: Path) -> None:
    report = validate_file(path)
    found = set()
    for error in report.errors:
        # Header errors and INFO value errors name their key second: "INFO AC has ...".
        named = error.code.startswith("META_") or error.column == "INFO"
        key = error.message.split(" ")[1] if named else error.column
        found.add((error.line, error.code, key))
    assert found == PASSED_BUT_ERRORS.get(path.name, set())


@pytest.mark.parametrize("path", FAILED_43, ids=lambda p: p.name)
def test_vcf43_suite_failed_files_have_an_error_of_the_named_rule_but_where_the_text_says_otherwise(
    path: Path,
) -> None:
    # Four files name no cause: two empty ones, POSITION for POS and FORMAT with no sample.
    assert _cause(path) or path.name in _NO_CAUSE
    report = validate_file(path)
    codes = {error.code for error in report.errors}
    if path.name in FAILED_BUT_NO_ERROR:
        assert codes == set()
        return
    assert codes, f"no error for {_cause(path)!r}"
    if path.name in CAUSE_IS_A_WARNING:
        wanted = CAUSE_IS_A_WARNING[path.name]
        assert not wanted or wanted in {warning.code for warning in report.warnings}
        return
    if path.name.startswith("failed_body_"):
        part = path.name.removeprefix("failed_body_").split("_")[0].removesuffix(".vcf")
        assert codes & CAUSE_CODES[part], (_cause(path), codes)


def test_vcf45_zero_length_local_alleles_are_empty_lists_not_errors() -> None:
    """VCF 4.5 §1.6.2: a sample with no local ALT allele has a zero-length LAA, as its own example
    writes `0/0::30:0`, and so every Number=LA value of it (LEC here). The suite's file has six
    records of 1:100-600 C>T, the `homref` sample's LAA:LEC written `:`, `:.`, `.`, `.:.`, `` and
    `.:` (checked by hand); all six are read, and only the order of POS 400 before 300 is noted."""
    path = SUITE / "4.5" / "passed" / "zero_length_LAA.vcf"
    report = validate_file(path)
    assert report.errors == []
    assert {warning.code for warning in report.warnings} == {"POS_UNSORTED", "MISSING_FINAL_NEWLINE"}
    with VcfReader(path, file_id="f", job_id="j", tenant_id="t", source_name=path.name) as reader:
        variants = [v for batch in reader for v in batch.variants]
    assert reader.take_dead_letters() == []
    assert [(v.position, v.id) for v in variants] == [
        (100, "zero_length_EC"),
        (200, "missing_EC"),
        (400, "omitted_EC"),
        (300, "missing_LAA"),
        (500, "omitted_or_zero_LAA"),
        (600, "inferred_LAA"),
    ]
