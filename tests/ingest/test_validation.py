"""One generated file per spec rule: the right error code at the right line, and ingest agrees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vcf_agent.schema import genotype_calls
from vcf_agent.services.ingest import validate_command, validate_file
from vcf_agent.services.ingest._vcf_reader import ISSUE_LIMIT, VcfReader

from ._vcf_text import COLUMNS, GOOD, HEADER, HEADER_LINES, record, write_vcf

# (id, bad record, error code, column): the bad record is the second data line.
RECORD_RULES = [
    ("columns", "chr1\t200\t.\tA\tG\t50\tPASS", "COLUMN_COUNT", "CHROM"),
    ("pos-not-integer", record(pos="12a"), "POS_INVALID", "POS"),
    ("pos-negative", record(pos="-5"), "POS_INVALID", "POS"),
    ("ref-bases", record(ref="AXG"), "REF_INVALID", "REF"),
    ("alt-syntax", record(alt="G<DEL"), "ALT_INVALID", "ALT"),
    ("alt-breakend-broken", record(alt="G]chr2:100["), "ALT_INVALID", "ALT"),
    ("qual", record(qual="high"), "QUAL_INVALID", "QUAL"),
    ("format-gt-not-first", record(format="DP:GT", s1="1:0/1", s2="1:0/0"), "FORMAT_GT_NOT_FIRST", "FORMAT"),
    ("gt-syntax", record(s1="0-1:10:99:5,5:0,10,100"), "GT_INVALID", "FORMAT"),
    ("gt-allele-range", record(s1="0/2:10:99:5,5:0,10,100"), "GT_ALLELE_RANGE", "FORMAT"),
    ("sample-too-many-values", record(s2="0|0:8:50:8,0:0,20,200:7"), "SAMPLE_TOO_MANY_VALUES", "FORMAT"),
]

# (id, bad record, error code, column, key, what the record keeps of the value): a MUST broken by one
# INFO or FORMAT value alone (VALUE_CODES) is an error of the file, but the record flows, the INFO
# value kept as its text, the FORMAT value left out (DP, GQ and AD of that sample missing).
VALUE_RULES = [
    ("info-integer-type", record(info="DP=ten"), "INFO_TYPE", "INFO", "DP", ["ten"]),
    ("info-flag-with-value", record(info="DB=1"), "INFO_TYPE", "INFO", "DB", ["1"]),
    ("info-character", record(info="CH=ab"), "INFO_TYPE", "INFO", "CH", ["ab"]),
    ("info-number-a", record(info="AF=0.1,0.2"), "INFO_NUMBER", "INFO", "AF", ["0.1,0.2"]),
    ("info-number-r", record(info="AD2=1"), "INFO_NUMBER", "INFO", "AD2", ["1"]),
    ("info-number-fixed", record(info="DP=1,2"), "INFO_NUMBER", "INFO", "DP", ["1,2"]),
    ("integer-overflow", record(info="DP=2147483648"), "INTEGER_OUT_OF_RANGE", "INFO", "DP", ["2147483648"]),
    (
        "integer-reserved-minimum",
        record(info="DP=-2147483648"),
        "INTEGER_OUT_OF_RANGE",
        "INFO",
        "DP",
        ["-2147483648"],
    ),
    ("percent-encoding", record(info="GENE=BRCA%2"), "PERCENT_ENCODING", "INFO", "GENE", ["BRCA%2"]),
    # Sample 1's AD "5" (Number=R: 2 here): its allele depths are left out, its DP and GQ stay.
    ("format-number-r", record(s1="0/1:10:99:5:0,10,100"), "FORMAT_NUMBER", "FORMAT", "AD", (0, 10, 99, ())),
    # Haploid sample 1's PL with 3 values (Number=G: 2 for one copy): PL is not stored.
    (
        "format-number-g-ploidy",
        record(s1="1:10:99:5,5:0,10,100"),
        "FORMAT_NUMBER",
        "FORMAT",
        "PL",
        (0, 10, 99, (5, 5)),
    ),
    # Sample 2's DP 8.5 (Type=Integer): its depth is missing, its GQ and AD stay.
    ("format-type", record(s2="0|0:8.5:50:8,0:0,20,200"), "FORMAT_TYPE", "FORMAT", "DP", (1, -1, 50, (8, 0))),
]


@pytest.mark.parametrize(
    ("bad", "code", "column"), [r[1:] for r in RECORD_RULES], ids=[r[0] for r in RECORD_RULES]
)
def test_each_record_rule_reports_code_and_line(tmp_path: Path, bad: str, code: str, column: str) -> None:
    third = record(pos="300")
    path = write_vcf(tmp_path / "bad.vcf", [GOOD, bad, third])
    report = validate_file(path)
    assert not report.valid
    assert [(e.line, e.code, e.column) for e in report.errors] == [(HEADER_LINES + 2, code, column)]
    assert report.errors[0].message
    # Ingest (lenient) rejects exactly that line and keeps the other two records.
    with VcfReader(path, file_id="f", job_id="j", tenant_id="t", source_name="bad.vcf") as reader:
        variants = [v for batch in reader for v in batch.variants]
    (letter,) = reader.take_dead_letters()
    assert (letter.line_number, letter.error_code, letter.file_name) == (HEADER_LINES + 2, code, "bad.vcf")
    assert letter.raw_line == bad
    assert [v.position for v in variants] == [100, 300]


@pytest.mark.parametrize(
    ("bad", "code", "column", "key", "kept"), [r[1:] for r in VALUE_RULES], ids=[r[0] for r in VALUE_RULES]
)
def test_a_value_breaking_its_header_is_an_error_of_the_file_and_the_record_flows(
    tmp_path: Path, bad: str, code: str, column: str, key: str, kept: object
) -> None:
    third = record(pos="300")
    path = write_vcf(tmp_path / "bad.vcf", [GOOD, bad, third])
    report = validate_file(path)
    assert not report.valid
    assert [(e.line, e.code, e.column) for e in report.errors] == [(HEADER_LINES + 2, code, column)]
    assert "the record is kept with" in report.errors[0].message
    with VcfReader(path, file_id="f", job_id="j", tenant_id="t", source_name="bad.vcf") as reader:
        variants = [v for batch in reader for v in batch.variants]
    assert reader.take_dead_letters() == []
    assert [(v.line_number, v.position) for v in variants] == [
        (HEADER_LINES + 1, 100),
        (HEADER_LINES + 2, 100),
        (HEADER_LINES + 3, 300),
    ]
    kept_in = variants[1]
    if column == "INFO":
        assert list(kept_in.info[key].strings.values) == kept
    else:
        sample = 0 if bad.split("\t")[9] != GOOD.split("\t")[9] else 1
        call = genotype_calls(kept_in.genotypes)[sample]
        assert (sample, call.depth, call.genotype_quality, tuple(call.allele_depths)) == kept


def test_a_file_of_good_records_is_valid(tmp_path: Path) -> None:
    path = write_vcf(
        tmp_path / "good.vcf",
        [
            GOOD,
            record(pos="200", alt="G,T", info="AF=0.1,0.2;AD2=1,2,3", s1="1/2:1:1:1,1,1:0,1,2,3,4,5", s2="."),
        ],
    )
    report = validate_file(path)
    assert report.valid, report.errors
    assert report.records == 2


HEADER_RULES = [
    ("info-missing-type", '##INFO=<ID=X,Number=1,Description="x">', "META_MISSING_KEY"),
    ("info-bad-type", '##INFO=<ID=X,Number=1,Type=Text,Description="x">', "META_INVALID_TYPE"),
    ("info-bad-number", '##INFO=<ID=X,Number=Z,Type=Integer,Description="x">', "META_INVALID_NUMBER"),
    ("flag-with-number", '##INFO=<ID=X,Number=1,Type=Flag,Description="x">', "META_INVALID_NUMBER"),
    ("format-flag", '##FORMAT=<ID=X,Number=0,Type=Flag,Description="x">', "META_INVALID_TYPE"),
    ("broken-structure", "##INFO=<ID=X,Number=1", "META_SYNTAX"),
    ("duplicate-id", '##INFO=<ID=DP,Number=1,Type=Integer,Description="again">', "META_DUPLICATE_ID"),
    ("no-double-hash", "#INFO=<ID=X>", "META_SYNTAX"),
]


@pytest.mark.parametrize(("line", "code"), [r[1:] for r in HEADER_RULES], ids=[r[0] for r in HEADER_RULES])
def test_each_meta_rule_reports_code_and_line(tmp_path: Path, line: str, code: str) -> None:
    path = write_vcf(tmp_path / "meta.vcf", [GOOD], header=HEADER + line + "\n")
    report = validate_file(path)
    assert [(e.line, e.code) for e in report.errors] == [(HEADER_LINES, code)]


FILE_RULES = [
    ("no-fileformat", "##source=x\n" + COLUMNS + GOOD + "\n", "FILEFORMAT_MISSING"),
    ("bad-version", "##fileformat=VCFv3.3\n" + COLUMNS + GOOD + "\n", "FILEFORMAT_UNSUPPORTED"),
    ("no-header", GOOD + "\n", "FILEFORMAT_MISSING"),
    ("spaces-in-header-line", HEADER + COLUMNS.replace("\t", " ") + GOOD + "\n", "HEADER_LINE_INVALID"),
    ("duplicate-sample", HEADER + COLUMNS.replace("S2", "S1") + GOOD + "\n", "DUPLICATE_SAMPLE"),
    ("empty", "", "EMPTY_FILE"),
]


@pytest.mark.parametrize(("text", "code"), [r[1:] for r in FILE_RULES], ids=[r[0] for r in FILE_RULES])
def test_file_level_rules(tmp_path: Path, text: str, code: str) -> None:
    path = tmp_path / "file.vcf"
    path.write_text(text)
    report = validate_file(path)
    assert [e.code for e in report.errors] == [code]
    assert report.errors[0].column == "FILE"


def test_warnings_do_not_make_a_file_invalid(tmp_path: Path) -> None:
    path = tmp_path / "warn.vcf"
    path.write_text(HEADER.replace("VCFv4.3", "VCFv4.0") + COLUMNS + GOOD)  # and no final newline
    report = validate_file(path)
    assert report.valid
    assert sorted(w.code for w in report.warnings) == ["MISSING_FINAL_NEWLINE", "OLD_VERSION"]


def test_validate_command_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_vcf(tmp_path / "good.vcf", [GOOD])
    bad = write_vcf(tmp_path / "bad.vcf", [GOOD, record(pos="200", info="DP=x")])
    assert validate_command(good, as_json=True) == 0
    assert json.loads(capsys.readouterr().out) == {
        "valid": True,
        "error_count": 0,
        "warning_count": 0,
        "errors": [],
        "warnings": [],
    }
    assert validate_command(bad, as_json=True) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is False and out["error_count"] == 1
    assert out["errors"] == [
        {
            "line": HEADER_LINES + 2,
            "column": "INFO",
            "code": "INFO_TYPE",
            "message": "INFO DP value 'x' is not an integer (VCF 4.3 §1.6.1); the record is kept with the"
            " value as text, and later values of INFO DP that break its header are not reported again",
        }
    ]
    assert validate_command(bad, as_json=False) == 1
    text = capsys.readouterr().out
    assert "INVALID" in text and f"line {HEADER_LINES + 2}, INFO" in text


def test_a_header_of_many_bad_lines_keeps_the_first_thousand_issues_and_counts_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """VCF 4.3 §1.4: a meta line is `##key=value`. 200,000 `##x` lines fit the 16 MiB a header
    may hold (room for ~4 million); each kept as an issue once took ~700 bytes, so the limit's
    worth took gigabytes. The first ISSUE_LIMIT are kept, the rest counted."""
    path = tmp_path / "many.vcf"
    path.write_text(
        "##fileformat=VCFv4.3\n" + "##x\n" * 200_000 + HEADER.split("\n", 1)[1] + COLUMNS + GOOD + "\n"
    )
    report = validate_file(path)
    assert len(report.errors) == ISSUE_LIMIT and report.error_count == 200_000
    assert report.errors[-1].line == ISSUE_LIMIT + 1 and report.errors[-1].code == "META_SYNTAX"
    assert validate_command(path, as_json=False) == 1
    text = capsys.readouterr().out
    assert "200000 error(s)" in text and "and 199000 more error(s), counted, not listed" in text
    reader = VcfReader(path, file_id="f", job_id="j", tenant_id="t", source_name="many.vcf")
    try:
        assert len(reader.header_issues) == ISSUE_LIMIT
        assert (reader.header_issues.dropped_errors, reader.header_issues.dropped_warnings) == (199_000, 0)
    finally:
        reader.close()


def test_value_errors_and_warnings_past_the_first_thousand_are_counted_in_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """VCF 4.3 §1.6.1 (an INFO value MUST match its declared Type) broken once by each of 1,500
    declared keys (a key is reported once), each record kept with its value as text, and a blank
    line (not a data line, §1.6) before each record but the first. Both lists keep ISSUE_LIMIT and
    count the rest: the report's totals are the file's (once, 1,000 errors for this file)."""
    keys = [f"K{i}" for i in range(1500)]
    declared = "".join(f'##INFO=<ID={k},Number=1,Type=Integer,Description="a count">\n' for k in keys)
    records = [record(pos=str(100 + i), info=f"{k}=ten") for i, k in enumerate(keys)]
    path = tmp_path / "many-values.vcf"
    path.write_text(HEADER + declared + COLUMNS + "\n\n".join(records) + "\n")
    report = validate_file(path)
    assert report.records == 1500 and len(report.errors) == ISSUE_LIMIT
    assert {i.code for i in report.errors} == {"INFO_TYPE"} and len(report.warnings) == ISSUE_LIMIT
    assert (report.error_count, report.warning_count) == (1500, 1499)
    assert validate_command(path, as_json=True) == 1
    printed = json.loads(capsys.readouterr().out)
    assert (printed["error_count"], printed["warning_count"]) == (1500, 1499)
    validate_command(path, as_json=False)
    text = capsys.readouterr().out
    assert "1500 error(s), 1499 warning(s)" in text
    assert "and 500 more error(s), counted" in text and "and 499 more warning(s), counted" in text
