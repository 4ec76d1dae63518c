"""`vcf-agent validate`: the ingest checks run over a whole file, reported for people or as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ._vcf_header import Issue, VcfFileError
from ._vcf_reader import ISSUE_LIMIT, VcfReader


@dataclass(slots=True)
class ValidationReport:
    """Errors make a file invalid; warnings are legal oddities worth knowing about."""

    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    records: int = 0
    # gVCF records of only <*>/<NON_REF>: read and valid, not variants.
    reference_blocks: int = 0
    # Errors and warnings beyond ISSUE_LIMIT of each kind are counted, not listed.
    error_count: int = 0
    warning_count: int = 0

    @property
    def valid(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, object]:
        return {
            "valid": self.valid,
            # The file's totals, those beyond the lists' first ISSUE_LIMIT included.
            "error_count": self.error_count,
            "warning_count": self.warning_count,
            "errors": [issue.as_dict() for issue in self.errors],
            "warnings": [issue.as_dict() for issue in self.warnings],
        }


def validate_file(path: Path) -> ValidationReport:
    """Every problem ingest would see in `path`, with line numbers."""
    try:
        return read_report(
            VcfReader(path, file_id="", job_id="", tenant_id="", source_name=path.name, keep_issues=True)
        )
    except VcfFileError as exc:
        message = str(exc).removeprefix(f"{path.name}: ")
        return ValidationReport(errors=[Issue(exc.line, "FILE", exc.code, message)], error_count=1)


def read_report(reader: VcfReader) -> ValidationReport:
    """Read every record of `reader` (opened with keep_issues) and report what it found.

    A file that turns unreadable part way raises VcfFileError.
    """
    report = ValidationReport()
    with reader:
        for _ in reader.batches():
            pass
    report.records = reader.records
    report.reference_blocks = reader.counters.reference_blocks
    for issue in [*reader.header_issues, *reader.record_issues, *reader.file_issues, *reader.warnings]:
        if issue.is_warning:
            report.warnings.append(issue)
        else:
            report.errors.append(issue)
    report.errors.sort(key=lambda issue: issue.line)
    kept_lists = (reader.header_issues, reader.file_issues, reader.warnings)
    # Every rejected record is counted by dead_lettered, listed or not.
    report.error_count = (
        len(report.errors)
        - len(reader.record_issues)
        + reader.dead_lettered
        + sum(issues.dropped_errors for issues in kept_lists)
    )
    report.warning_count = len(report.warnings) + sum(
        issues.dropped_warnings for issues in (*kept_lists, reader.record_issues)
    )
    return report


def render_report(path: Path, report: ValidationReport) -> str:
    blocks = f", {report.reference_blocks} gVCF reference block(s)" if report.reference_blocks else ""
    lines = [
        f"{path}: {'valid' if report.valid else 'INVALID'} ({report.records} records{blocks},"
        f" {report.error_count} error(s), {report.warning_count} warning(s))"
    ]
    for label, issues in (("error", report.errors), ("warning", report.warnings)):
        for issue in issues:
            where = f"line {issue.line}" if issue.line else "file"
            lines.append(f"  {label}: {where}, {issue.column}: {issue.message} [{issue.code}]")
    for label, count, listed in (
        ("error", report.error_count, report.errors),
        ("warning", report.warning_count, report.warnings),
    ):
        if count > len(listed):
            lines.append(
                f"  ... and {count - len(listed)} more {label}(s), counted, not listed"
                f" (the first {ISSUE_LIMIT} of each kind are)"
            )
    return "\n".join(lines)


def validate_command(path: Path, *, as_json: bool) -> int:
    """Exit code 0 for a valid file and 1 for an invalid one, after printing the report."""
    report = validate_file(path)
    print(json.dumps(report.as_dict()) if as_json else render_report(path, report))
    return 0 if report.valid else 1
