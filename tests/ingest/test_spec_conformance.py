"""One conformance test per VCF rule and specification version: a valid and an invalid example.

Each case's id names the version, the section of hts-specs' VCFv4.x.tex that
states the rule, the rule and its level there (MUST: an error, the record is
dead-lettered, unless only an INFO or FORMAT value breaks it; SHOULD: a warning, the record is
ingested). Sections and levels
were read by hand from VCFv4.1.tex .. VCFv4.5.tex: 4.1/4.2 number the meta
lines 1.2.x and the data lines 1.4.x, 4.3+ number them 1.4.x and 1.6.x. Every
issue's message must cite the same version and section.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from vcf_agent.services.ingest import validate_file
from vcf_agent.services.ingest._vcf_reader import VcfReader
from vcf_agent.services.ingest._vcf_validator import VALUE_CODES

from ._vcf_text import COLUMNS, GOOD, HEADER, record

VERSIONS = ("4.1", "4.2", "4.3", "4.4", "4.5")
OLD = ("4.1", "4.2")


def _section(version: str, old: str, new: str) -> str:
    return old if version in OLD else new


@dataclass(frozen=True)
class Rule:
    """A rule: `valid` and `invalid` are (extra header lines, records) of a small file."""

    name: str
    code: str
    # Section in 4.1/4.2 and in 4.3+.
    old_section: str
    new_section: str
    # Versions where it is a MUST; elsewhere in `versions` a SHOULD.
    must_in: tuple[str, ...]
    valid: tuple[str, tuple[str, ...]]
    invalid: tuple[str, tuple[str, ...]]
    versions: tuple[str, ...] = VERSIONS
    # The record (1-based among the records) the issue is reported at; 0 for a header line.
    record_at: int = 2


def _records(*records: str) -> tuple[str, ...]:
    return (GOOD, *records)


ALL_MUST = VERSIONS
NEW_MUST = ("4.3", "4.4", "4.5")

RULES = [
    # Data lines: fixed fields (4.1/4.2 §1.4.1, 4.3+ §1.6.1).
    Rule(
        "pos-is-an-integer",
        "POS_INVALID",
        "1.4.1",
        "1.6.1",
        ALL_MUST,
        ("", _records(record(pos="200"))),
        ("", _records(record(pos="2x0"))),
    ),
    Rule(
        "ref-is-acgtn",
        "REF_INVALID",
        "1.4.1",
        "1.6.1",
        ALL_MUST,
        ("", _records(record(pos="200", ref="ACGTN"))),
        ("", _records(record(pos="200", ref="AXG"))),
    ),
    Rule(
        "alt-syntax",
        "ALT_INVALID",
        "1.4.1",
        "1.6.1",
        ALL_MUST,
        ("", _records(record(pos="200", alt="<DEL>"))),
        ("", _records(record(pos="200", alt="G<DEL"))),
    ),
    Rule(
        "qual-is-a-number",
        "QUAL_INVALID",
        "1.4.1",
        "1.6.1",
        ALL_MUST,
        ("", _records(record(pos="200", qual="1e3"))),
        ("", _records(record(pos="200", qual="high"))),
    ),
    Rule(
        "info-value-of-its-type",
        "INFO_TYPE",
        "1.4.1",
        "1.6.1",
        ALL_MUST,
        ("", _records(record(pos="200", info="DP=7"))),
        ("", _records(record(pos="200", info="DP=seven"))),
    ),
    Rule(
        "info-number-a",
        "INFO_NUMBER",
        "1.4.1",
        "1.6.1",
        ALL_MUST,
        ("", _records(record(pos="200", info="AF=0.1"))),
        ("", _records(record(pos="200", info="AF=0.1,0.2"))),
    ),
    Rule(
        "chrom-without-whitespace",
        "CHROM_INVALID",
        "1.4.1",
        "1.6.1",
        ALL_MUST,
        ("", _records(record(chrom="<ctg1>", pos="200"))),  # an ##assembly contig, in every version
        ("", _records(record(chrom="chr 2", pos="200"))),
    ),
    Rule(
        "undeclared-info-key",
        "INFO_UNDECLARED",
        "1.4.1",
        "1.6.1",
        (),
        ("", _records(record(pos="200", info="GENE=X"))),
        ("", _records(record(pos="200", info="NOT_IN_HEADER=1"))),
    ),
    Rule(
        "undeclared-filter",
        "FILTER_UNDECLARED",
        "1.2",
        "1.4",
        (),
        ("", _records(record(pos="200", filter="LowQual"))),
        ("", _records(record(pos="200", filter="q10"))),
    ),
    Rule(
        "positions-sorted",
        "POS_UNSORTED",
        "1.4.1",
        "1.6.1",
        (),
        ("", _records(record(pos="200"))),
        ("", _records(record(pos="50"))),
    ),
    Rule(
        "contig-line-recommended",
        "CHROM_UNDECLARED",
        "1.2.7",
        "1.4.7",
        (),
        ("", _records(record(chrom="chr2", pos="200"))),
        ("", _records(record(chrom="chr9", pos="200"))),
    ),
    Rule(
        "chrom-contiguous-block",
        "CHROM_NOT_CONTIGUOUS",
        "1.4.1",
        "1.6.1",
        NEW_MUST,
        ("", _records(record(chrom="chr2", pos="50"), record(chrom="chr2", pos="60"))),
        ("", _records(record(chrom="chr2", pos="50"), record(chrom="chr1", pos="300"))),
        record_at=3,
    ),
    Rule(
        "id-list-without-repeats",
        "ID_INVALID",
        "1.4.1",
        "1.6.1",
        NEW_MUST,  # 4.3+: "duplicate values not allowed"; 4.1/4.2's "unique identifiers": a warning
        ("", _records(record(pos="200", id="rs2;rs3"))),
        ("", _records(record(pos="200", id="rs2;rs2"))),
    ),
    Rule(
        "id-list-without-empty-identifiers",
        "ID_INVALID",
        "1.4.1",
        "1.6.1",
        ALL_MUST,
        ("", _records(record(pos="200", id="rs2;rs3"))),
        ("", _records(record(pos="200", id="rs2;"))),
    ),
    Rule(
        "filter-0-reserved",
        "FILTER_RESERVED",
        "1.4.1",
        "1.6.1",
        NEW_MUST,  # "should not be used" in 4.1/4.2, "must not" from 4.3
        ("", _records(record(pos="200", filter="LowQual"))),
        ("", _records(record(pos="200", filter="0"))),
    ),
    Rule(
        "filter-names-without-repeats",
        "FILTER_INVALID",
        "1.4.1",
        "1.6.1",
        NEW_MUST,
        ("", _records(record(pos="200", filter="LowQual"))),
        ("", _records(record(pos="200", filter="LowQual;LowQual"))),
        versions=NEW_MUST,
    ),
    Rule(
        "filter-missing-alone",
        "FILTER_INVALID",
        "1.4.1",
        "1.6.1",
        ALL_MUST,
        ("", _records(record(pos="200", filter="."))),
        ("", _records(record(pos="200", filter="LowQual;."))),
    ),
    Rule(
        "no-empty-column-after-the-last",
        "TRAILING_TAB",
        "1.4.1",
        "1.6.1",
        ALL_MUST,  # an error of the file; the record flows without the empty column
        ("", _records(record(pos="200"))),
        ("", _records(record(pos="200") + "\t")),
    ),
    Rule(
        "info-keys-without-repeats",
        "INFO_DUPLICATE_KEY",
        "1.4.1",
        "1.6.1",
        NEW_MUST,  # 4.3+: "Duplicate keys are not allowed"; 4.1/4.2 are silent: a warning
        ("", _records(record(pos="200", info="DP=10;AF=0.5"))),
        ("", _records(record(pos="200", info="DP=10;DP=12"))),
    ),
    Rule(
        "info-without-empty-entries",
        "INFO_EMPTY_ENTRY",
        "1.4.1",
        "1.6.1",
        ALL_MUST,  # an error of the file; the record flows without the empty entry
        ("", _records(record(pos="200", info="DP=10;AF=0.5"))),
        ("", _records(record(pos="200", info="DP=10;AF=0.5;"))),
    ),
    Rule(
        "info-key-pattern",
        "INFO_KEY_INVALID",
        "1.4.1",
        "1.6.1",
        NEW_MUST,  # an error of the file; the record flows with the key as it is
        ("", _records(record(pos="200", info="DP=10;1000G"))),
        ("", _records(record(pos="200", info="DP=10;1KG=2"))),
        versions=NEW_MUST,
    ),
    Rule(
        "info-string-comma-delimits-values",
        "INFO_NUMBER",
        "1.4.1",
        "1.6.1",
        NEW_MUST,  # "literal commas are permitted only as delimiters for lists of values"
        ("", _records(record(pos="200", info="GENE=BRCA1"))),
        ("", _records(record(pos="200", info="GENE=BRCA1,BRCA2"))),
        versions=NEW_MUST,
    ),
    # Genotype fields (4.1/4.2 §1.4.2, 4.3+ §1.6.2).
    Rule(
        "gt-first",
        "FORMAT_GT_NOT_FIRST",
        "1.4.2",
        "1.6.2",
        ALL_MUST,
        ("", _records(record(pos="200", format="GT:DP", s1="0/1:1", s2="0/0:1"))),
        ("", _records(record(pos="200", format="DP:GT", s1="1:0/1", s2="1:0/0"))),
    ),
    Rule(
        "gt-allele-in-range",
        "GT_ALLELE_RANGE",
        "1.4.2",
        "1.6.2",
        ALL_MUST,
        ("", _records(record(pos="200", format="GT", s1="0/1", s2="1/1"))),
        ("", _records(record(pos="200", format="GT", s1="0/2", s2="1/1"))),
    ),
    Rule(
        "format-key-pattern",
        "FORMAT_KEY_INVALID",
        "1.4.2",
        "1.6.2",
        NEW_MUST,  # an error of the file; the record flows with the key as it is
        ("", _records(record(pos="200", format="GT:X_1", s1="0/1:a", s2="0/0:b"))),
        ("", _records(record(pos="200", format="GT:1X", s1="0/1:a", s2="0/0:b"))),
        versions=NEW_MUST,
    ),
    Rule(
        "format-missing-with-every-sample-missing",
        "SAMPLE_TOO_MANY_VALUES",
        "1.4.2",
        "1.6.2",
        ALL_MUST,  # FORMAT `.`, as htslib writes a record with samples and no FORMAT key
        ("", _records(record(pos="200", format=".", s1=".", s2="."))),
        ("", _records(record(pos="200", format=".", s1="0/1", s2="."))),
    ),
    Rule(
        "undeclared-format-key",
        "FORMAT_UNDECLARED",
        "1.2",
        "1.4",
        (),
        ("", _records(record(pos="200", format="GT:DP", s1="0/1:3", s2="0/0:4"))),
        ("", _records(record(pos="200", format="GT:ZZ", s1="0/1:x", s2="0/0:y"))),
    ),
    # Meta-information lines.
    Rule(
        "info-description-quoted",
        "META_UNQUOTED",
        "1.2.2",
        "1.4.2",
        ALL_MUST,
        ('##INFO=<ID=XQ,Number=1,Type=Integer,Description="Quoted">\n', _records()),
        ("##INFO=<ID=XQ,Number=1,Type=Integer,Description=Not quoted>\n", _records()),
        record_at=0,
    ),
    Rule(
        "flag-number-0",
        "META_INVALID_NUMBER",
        "1.2.2",
        "1.4.2",
        NEW_MUST,
        ('##INFO=<ID=XF,Number=0,Type=Flag,Description="A flag">\n', _records()),
        ('##INFO=<ID=XF,Number=A,Type=Flag,Description="A flag">\n', _records()),
        record_at=0,
    ),
    Rule(
        "id-number-type-description-in-order",
        "META_FIELD_ORDER",
        "1.2",
        "1.4",
        NEW_MUST,
        ('##INFO=<ID=XO,Number=1,Type=Integer,Description="x",Source="y">\n', _records()),
        ('##INFO=<Number=1,Type=Integer,Description="x",ID=XO>\n', _records()),
        record_at=0,
    ),
    Rule(
        "meta-value-not-empty",
        "META_EMPTY_VALUE",
        "1.2",
        "1.4",
        ALL_MUST,
        ("##reference=file:///ref.fa\n", _records()),
        ("##reference=\n", _records()),
        record_at=0,
    ),
    Rule(
        "alt-id-characters",
        "META_SYNTAX",
        "1.2.5",
        "1.4.5",
        ALL_MUST,
        ('##ALT=<ID=DEL:ME,Description="Mobile element deletion">\n', _records()),
        ('##ALT=<ID=DEL:A B,Description="Whitespace in the ID">\n', _records()),
        record_at=0,
    ),
    Rule(
        "contig-name-characters",
        "META_SYNTAX",
        "1.2.7",
        "1.4.7",
        NEW_MUST,
        ("##contig=<ID=chrUn_1.*,length=10>\n", _records()),
        ("##contig=<ID=*chrUn,length=10>\n", _records()),
        versions=NEW_MUST,
        record_at=0,
    ),
    Rule(
        "pedigree-has-an-id",
        "META_MISSING_KEY",
        "1.2.9",
        "1.4",
        NEW_MUST,
        ("##PEDIGREE=<ID=Child,Father=Dad,Mother=Mum>\n", _records()),
        ("##PEDIGREE=<Father=Dad,Mother=Mum>\n", _records()),
        versions=NEW_MUST,
        record_at=0,
    ),
    Rule(
        "meta-values-in-brackets",
        "META_SYNTAX",
        "1.2.8",
        "1.4.8",
        NEW_MUST,
        ("##META=<ID=Assay,Type=String,Number=.,Values=[WholeGenome, Exome]>\n", _records()),
        ("##META=<ID=Assay,Type=String,Number=.,Values=WholeGenome>\n", _records()),
        versions=NEW_MUST,
        record_at=0,
    ),
]

# Reserved keys (tables "Reserved INFO keys" §1.6.1 and "Reserved genotype keys" §1.6.2, VCF 4.3+).
RESERVED = [
    ("info-AD-number-R", "INFO", "AD", "R", "Integer", "A", "Integer", "1.6.1"),
    ("info-DP-integer", "INFO", "DP", "1", "Integer", "1", "Float", "1.6.1"),
    ("info-DB-flag", "INFO", "DB", "0", "Flag", "0", "String", "1.6.1"),
    ("format-AD-number-R", "FORMAT", "AD", "R", "Integer", "A", "Integer", "1.6.2"),
    ("format-GQ-number-1", "FORMAT", "GQ", "1", "Integer", "A", "Integer", "1.6.2"),
    ("format-DP-integer", "FORMAT", "DP", "1", "Integer", "1", "String", "1.6.2"),
    ("format-GT-string", "FORMAT", "GT", "1", "String", "1", "Float", "1.6.2"),
]


def _cases() -> list[object]:
    cases: list[object] = []
    for rule in RULES:
        for version in rule.versions:
            level = "MUST" if version in rule.must_in else "SHOULD"
            section = _section(version, rule.old_section, rule.new_section)
            name = f"VCF{version}-s{section}-{rule.name}-{level}"
            cases.append(pytest.param(rule, version, section, level, id=name))
    return cases


def _write(path: Path, version: str, extra_header: str, records: tuple[str, ...], drop: str = "") -> Path:
    header = HEADER.replace("VCFv4.3", f"VCFv{version}")
    if drop:
        header = "".join(line + "\n" for line in header.splitlines() if not line.startswith(drop))
    path.write_text(header + extra_header + COLUMNS + "".join(r + "\n" for r in records))
    return path


def _issue_line(version: str, extra_header: str, record_at: int) -> int:
    header_lines = HEADER.count("\n") + extra_header.count("\n")
    return header_lines if record_at == 0 else header_lines + 1 + record_at


@pytest.mark.parametrize(("rule", "version", "section", "level"), _cases())
def test_rule(tmp_path: Path, rule: Rule, version: str, section: str, level: str) -> None:
    valid = _write(tmp_path / "valid.vcf", version, *rule.valid)
    report = validate_file(valid)
    assert rule.code not in [i.code for i in [*report.errors, *report.warnings]], report.errors
    assert report.valid, report.errors

    invalid = _write(tmp_path / "invalid.vcf", version, *rule.invalid)
    report = validate_file(invalid)
    line = _issue_line(version, rule.invalid[0], rule.record_at)
    found = report.errors if level == "MUST" else report.warnings
    matching = [i for i in found if i.code == rule.code]
    assert [i.line for i in matching] == [line], (report.errors, report.warnings)
    assert f"VCF {version} §{section}" in matching[0].message
    assert report.valid == (level == "SHOULD")

    # Lenient ingest: a record that breaks a MUST is dead-lettered for it, any other record flows;
    # so does one whose only fault is an INFO or FORMAT value (VALUE_CODES: an error of the file).
    with VcfReader(invalid, file_id="f", job_id="j", tenant_id="t", source_name="invalid.vcf") as reader:
        lines = [v.line_number for batch in reader for v in batch.variants]
    letters = reader.take_dead_letters()
    flowing = (
        "CHROM_NOT_CONTIGUOUS",
        "INFO_KEY_INVALID",
        "FORMAT_KEY_INVALID",
        "TRAILING_TAB",
        "INFO_EMPTY_ENTRY",
        *VALUE_CODES,
    )
    record_rule = rule.record_at and rule.code not in flowing
    if level == "MUST" and record_rule:
        assert [(d.line_number, d.error_code) for d in letters] == [(line, rule.code)]
        assert line not in lines
    else:
        assert letters == []
        assert len(set(lines)) == len(rule.invalid[1])


@pytest.mark.parametrize("version", ["4.3", "4.4", "4.5"])
@pytest.mark.parametrize(
    ("kind", "key", "number", "type_", "wrong_number", "wrong_type", "section"),
    [r[1:] for r in RESERVED],
    ids=[r[0] for r in RESERVED],
)
def test_reserved_key_declared_as_the_table_says_MUST(
    tmp_path: Path,
    version: str,
    kind: str,
    key: str,
    number: str,
    type_: str,
    wrong_number: str,
    wrong_type: str,
    section: str,
) -> None:
    def declare(n: str, t: str) -> str:
        return f'##{kind}=<ID={key},Number={n},Type={t},Description="reserved key">\n'

    drop = f"##{kind}=<ID={key},"
    good = _write(tmp_path / "good.vcf", version, declare(number, type_), _records(), drop=drop)
    assert validate_file(good).valid, validate_file(good).errors
    bad = _write(tmp_path / "bad.vcf", version, declare(wrong_number, wrong_type), _records(), drop=drop)
    errors = [e for e in validate_file(bad).errors if e.code == "META_RESERVED_KEY"]
    assert len(errors) == 1
    assert f"VCF {version} §{section}" in errors[0].message
    assert f"Number={number}, Type={type_}" in errors[0].message


@pytest.mark.parametrize("version", OLD)
def test_reserved_keys_unchecked_in_4_1_4_2_which_have_no_table(tmp_path: Path, version: str) -> None:
    # VCF 4.1/4.2 §1.4.2 name GQ "(Integer)" in prose only; GATK's 4.1 files declare it Float.
    drop = "##FORMAT=<ID=GQ,"
    path = _write(
        tmp_path / "gq.vcf",
        version,
        '##FORMAT=<ID=GQ,Number=1,Type=Float,Description="GATK 3 style">\n',
        _records(),
        drop=drop,
    )
    assert validate_file(path).valid, validate_file(path).errors
