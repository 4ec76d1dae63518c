"""The VCF header as the validator and the encoder need it, parsed from its text.

htslib rewrites headers (adding PASS, contigs, IDX) and accepts malformed
meta lines silently, so the header is parsed here from the file's own lines
and every problem is reported with its line number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Codes that describe something worth knowing but legal: they never fail a job.
WARNING_CODES = frozenset(
    {"OLD_VERSION", "FORMAT_WITHOUT_SAMPLES", "ALT_UNDECLARED", "BLANK_LINE", "MISSING_FINAL_NEWLINE"}
)

FIXED_COLUMNS = ("#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO")
SUPPORTED_VERSIONS = ((4, 0), (4, 1), (4, 2), (4, 3), (4, 4), (4, 5))
_INFO_TYPES = frozenset({"Integer", "Float", "Flag", "Character", "String"})
_FORMAT_TYPES = _INFO_TYPES - {"Flag"}
# Number values beyond integers: per ALT, per allele, per genotype, unknown,
# per GT allele (4.4+) and the local-allele forms of VCF 4.5.
_SPECIAL_NUMBERS = frozenset({"A", "R", "G", ".", "P", "LA", "LR", "LG"})
# Annotation INFO keys whose Description names '|'-separated subfields.
ANNOTATION_KEYS = frozenset({"CSQ", "ANN", "BCSQ"})
# VEP: "... Format: Allele|Consequence|..."; SnpEff: "...: 'Allele | Annotation | ...'".
_ANNOTATION_FORMAT = re.compile(r"([^:'\"]*\|[^'\"]*)")


class VcfFileError(Exception):
    """The file cannot be ingested at all; `code` says why in a machine-readable way."""

    def __init__(self, message: str, code: str = "WRONG_FORMAT", line: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.line = line


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem found in a file: where (1-based line, column name) and what."""

    line: int
    column: str
    code: str
    message: str

    def as_dict(self) -> dict[str, object]:
        return {"line": self.line, "column": self.column, "code": self.code, "message": self.message}

    @property
    def is_warning(self) -> bool:
        return self.code in WARNING_CODES


@dataclass(frozen=True, slots=True)
class FieldDef:
    """An INFO or FORMAT definition: Number is kept as text (A, R, G, ., P, LA.. or digits)."""

    id: str
    number: str
    type: str


@dataclass(slots=True)
class VcfHeader:
    """What the records are checked and typed against."""

    version: tuple[int, int] = (4, 2)
    info: dict[str, FieldDef] = field(default_factory=dict)
    format: dict[str, FieldDef] = field(default_factory=dict)
    filters: set[str] = field(default_factory=lambda: {"PASS"})
    alts: set[str] = field(default_factory=set)
    contigs: set[str] = field(default_factory=set)
    samples: list[str] = field(default_factory=list)
    # Subfield names of CSQ/ANN/BCSQ, from their Description.
    annotations: dict[str, list[str]] = field(default_factory=dict)

    @property
    def percent_encoded(self) -> bool:
        """VCF 4.3 made percent-encoding of special characters part of the format."""
        return self.version >= (4, 3)


def parse_structured(text: str) -> dict[str, str] | None:
    """`<ID=x,Number=1,Description="a, b">` to a dict; None when the syntax is broken."""
    if not (text.startswith("<") and text.endswith(">")):
        return None
    body = text[1:-1]
    result: dict[str, str] = {}
    i, n = 0, len(body)
    while i < n:
        eq = body.find("=", i)
        if eq < 0:
            return None
        key = body[i:eq].strip()
        if not key or key in result:
            return None
        i = eq + 1
        if i < n and body[i] == '"':
            j = i + 1
            chars: list[str] = []
            while j < n and body[j] != '"':
                if body[j] == "\\" and j + 1 < n:
                    j += 1
                chars.append(body[j])
                j += 1
            if j >= n:
                return None
            result[key] = "".join(chars)
            i = j + 1
        else:
            j = body.find(",", i)
            j = n if j < 0 else j
            result[key] = body[i:j].strip()
            i = j
        if i < n:
            if body[i] != ",":
                return None
            i += 1
    return result


def _field_def(
    kind: str, attrs: dict[str, str], line: int, version: tuple[int, int], issues: list[Issue]
) -> FieldDef | None:
    missing = [k for k in ("ID", "Number", "Type", "Description") if k not in attrs]
    if missing:
        issues.append(
            Issue(line, kind, "META_MISSING_KEY", f"the {kind} definition lacks {', '.join(missing)}")
        )
        if "ID" not in attrs or "Type" not in attrs:
            return None
    number = attrs.get("Number", ".")
    type_ = attrs["Type"]
    allowed = _INFO_TYPES if kind == "INFO" else _FORMAT_TYPES
    if type_ not in allowed:
        issues.append(
            Issue(
                line,
                kind,
                "META_INVALID_TYPE",
                f"{kind} {attrs['ID']} has Type={type_}; allowed: {', '.join(sorted(allowed))}",
            )
        )
        type_ = "String"
    if not (number.isdigit() or number in _SPECIAL_NUMBERS):
        issues.append(
            Issue(
                line,
                kind,
                "META_INVALID_NUMBER",
                f"{kind} {attrs['ID']} has Number={number}; use an integer, A, R, G or .",
            )
        )
        number = "."
    if type_ == "Flag" and number != "0":
        issues.append(
            Issue(line, kind, "META_INVALID_NUMBER", f"INFO {attrs['ID']} is a Flag, so its Number must be 0")
        )
        number = "0"
    if number in ("LA", "LR", "LG") and version < (4, 5):
        issues.append(Issue(line, kind, "META_INVALID_NUMBER", f"Number={number} needs VCF 4.5 or later"))
    return FieldDef(attrs["ID"], number, type_)


def _annotation_fields(description: str) -> list[str]:
    match = _ANNOTATION_FORMAT.search(description)
    if match is None:
        return []
    return [name.strip() for name in match.group(1).split("|")]


def parse_header(lines: list[str]) -> tuple[VcfHeader, list[Issue]]:
    """Header lines (without line endings, `#CHROM` last) to a VcfHeader and its problems.

    Raises VcfFileError for problems that make the records uninterpretable.
    """
    header = VcfHeader()
    issues: list[Issue] = []
    if not lines or not lines[0].startswith("##fileformat="):
        raise VcfFileError(
            "the file does not start with a ##fileformat=VCFv4.x line, so it is not a VCF",
            "FILEFORMAT_MISSING",
            1,
        )
    version_text = lines[0].removeprefix("##fileformat=").strip()
    match = re.fullmatch(r"VCFv(\d+)\.(\d+)", version_text)
    version = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if version not in SUPPORTED_VERSIONS:
        raise VcfFileError(
            f"##fileformat={version_text} is not a VCF version this service reads (VCFv4.0 to VCFv4.5)",
            "FILEFORMAT_UNSUPPORTED",
            1,
        )
    if version == (4, 0):
        issues.append(
            Issue(1, "HEADER", "OLD_VERSION", "VCFv4.0 predates the checked versions; VCF 4.1 rules apply")
        )
    header.version = version
    last = lines[-1]
    if not last.startswith("#CHROM"):
        raise VcfFileError(
            "the header has no #CHROM line before the first record",
            "HEADER_LINE_MISSING",
            len(lines),
        )
    for number, line in enumerate(lines[1:-1], start=2):
        _meta_line(line, number, header, issues)
    _header_line(last, len(lines), header, issues)
    return header, issues


def _meta_line(line: str, number: int, header: VcfHeader, issues: list[Issue]) -> None:
    if not line.startswith("##"):
        issues.append(Issue(number, "HEADER", "META_SYNTAX", "a header line must start with ##"))
        return
    key, eq, value = line[2:].partition("=")
    if not eq or not key:
        issues.append(Issue(number, "HEADER", "META_SYNTAX", "a meta line must be ##key=value"))
        return
    if key not in ("INFO", "FORMAT", "FILTER", "ALT", "contig"):
        return
    attrs = parse_structured(value)
    if attrs is None:
        issues.append(
            Issue(number, key, "META_SYNTAX", f"the ##{key} line is not of the form <ID=...,key=value,...>")
        )
        return
    if "ID" not in attrs:
        issues.append(Issue(number, key, "META_MISSING_KEY", f"the ##{key} line has no ID"))
        return
    ident = attrs["ID"]
    if key in ("INFO", "FORMAT"):
        definition = _field_def(key, attrs, number, header.version, issues)
        if definition is None:
            return
        table = header.info if key == "INFO" else header.format
        if ident in table:
            issues.append(Issue(number, key, "META_DUPLICATE_ID", f"{key} {ident} is defined twice"))
        table[ident] = definition
        if key == "INFO" and ident in ANNOTATION_KEYS:
            names = _annotation_fields(attrs.get("Description", ""))
            if names:
                header.annotations[ident] = names
    elif key == "FILTER":
        if "Description" not in attrs:
            issues.append(Issue(number, key, "META_MISSING_KEY", f"FILTER {ident} has no Description"))
        header.filters.add(ident)
    elif key == "ALT":
        if "Description" not in attrs:
            issues.append(Issue(number, key, "META_MISSING_KEY", f"ALT {ident} has no Description"))
        header.alts.add(ident)
    else:
        if not ident or any(c in ident for c in " \t,<>[]*=") or ident.startswith("*"):
            issues.append(Issue(number, key, "META_SYNTAX", f"contig name {ident!r} is not allowed"))
        header.contigs.add(ident)


def _header_line(line: str, number: int, header: VcfHeader, issues: list[Issue]) -> None:
    columns = line.split("\t")
    if tuple(columns[:8]) != FIXED_COLUMNS:
        raise VcfFileError(
            "the #CHROM line must list CHROM POS ID REF ALT QUAL FILTER INFO separated by tabs"
            f" (found: {' | '.join(columns[:8])})",
            "HEADER_LINE_INVALID",
            number,
        )
    if len(columns) > 8:
        if columns[8] != "FORMAT":
            raise VcfFileError(
                f"column 9 of the #CHROM line must be FORMAT, found {columns[8]!r}",
                "HEADER_LINE_INVALID",
                number,
            )
        samples = columns[9:]
        if not samples:
            issues.append(
                Issue(number, "FORMAT", "FORMAT_WITHOUT_SAMPLES", "FORMAT is declared but no samples")
            )
        seen: set[str] = set()
        for name in samples:
            if name in seen:
                raise VcfFileError(
                    f"sample name {name!r} appears twice in the #CHROM line", "DUPLICATE_SAMPLE", number
                )
            if not name:
                raise VcfFileError("a sample name in the #CHROM line is empty", "HEADER_LINE_INVALID", number)
            seen.add(name)
        header.samples = samples
