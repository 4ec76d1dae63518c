"""The VCF header as the validator and the encoder need it, parsed from its text.

htslib rewrites headers (adding PASS, contigs, IDX) and accepts malformed
meta lines silently, so the header is parsed here from the file's own lines
and every problem is reported with its line number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ._spec_levels import cite, is_must, reserved

# Codes that describe something worth knowing but legal: they never fail a job.
# The undeclared-key, sorting, contig-line and no-records codes are SHOULDs of
# every version (see the messages for the sections); rules whose level depends
# on the version are raised with `warning=True` where they are SHOULD.
WARNING_CODES = frozenset(
    {
        "OLD_VERSION",
        "FORMAT_WITHOUT_SAMPLES",
        "ALT_UNDECLARED",
        "ALT_DUPLICATE",
        "BLANK_LINE",
        "MISSING_FINAL_NEWLINE",
        "INFO_UNDECLARED",
        "FORMAT_UNDECLARED",
        "FILTER_UNDECLARED",
        "CHROM_UNDECLARED",
        "POS_UNSORTED",
        "NO_RECORDS",
    }
)

FIXED_COLUMNS = ("#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO")
SUPPORTED_VERSIONS = ((4, 0), (4, 1), (4, 2), (4, 3), (4, 4), (4, 5))
_INFO_TYPES = frozenset({"Integer", "Float", "Flag", "Character", "String"})
_FORMAT_TYPES = _INFO_TYPES - {"Flag"}
# Number values beyond integers: per ALT, per allele, per genotype, unknown,
# per GT allele (4.4+) and the local-allele forms of VCF 4.5.
_SPECIAL_NUMBERS = frozenset({"A", "R", "G", ".", "P", "LA", "LR", "LG"})


# Messages quote the file's own text (a value, a key, a name). A hostile file's can be megabytes,
# and each message is logged, kept on the job's row and sent with GetJob, WatchJob and dead letters,
# so runs of text are cut, and then the message as a whole. A run is cut only past 256 characters,
# so a file's path is quoted whole in all but rare cases.
_LONG_RUN = re.compile(r"\S{257,}")
_MESSAGE_LIMIT = 2000


def bounded(message: str) -> str:
    """The message with each run of more than 256 non-space characters cut to its first 200 (saying
    how long it was), then, if still over 2,000 characters, its middle (the cited section is last)."""
    if len(message) <= 256:
        return message
    message = _LONG_RUN.sub(lambda run: f"{run.group()[:200]}...[{len(run.group())} characters]", message)
    if len(message) > _MESSAGE_LIMIT:
        cut = len(message) - _MESSAGE_LIMIT + 40
        message = f"{message[:1500]}...[{cut} characters]...{message[1500 + cut :]}"
    return message


class VcfFileError(Exception):
    """The file cannot be ingested at all; `code` says why in a machine-readable way."""

    def __init__(self, message: str, code: str = "WRONG_FORMAT", line: int = 0) -> None:
        super().__init__(bounded(message))
        self.code = code
        self.line = line


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem found in a file: where (1-based line, column name) and what."""

    line: int
    column: str
    code: str
    message: str
    # A SHOULD of the file's version for a rule that is MUST in others.
    warning: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", bounded(self.message))

    def as_dict(self) -> dict[str, object]:
        return {"line": self.line, "column": self.column, "code": self.code, "message": self.message}

    @property
    def is_warning(self) -> bool:
        return self.warning or self.code in WARNING_CODES


# Issues kept for a validation report or a job; a file with more is summarised by count.
ISSUE_LIMIT = 1000
# The header remembers undeclared INFO keys, FORMAT keys and FILTER names, each kind while fewer
# than this many of it are; later ones are typed at each use. A header may declare any number.
UNDECLARED_KEY_LIMIT = 10_000
# How htslib types a key the header does not declare (vcf.c, vcf_parse_info / vcf_parse_format).
_HTSLIB_TYPING = ("1", "String")


class IssueList(list[Issue]):
    """Issues as found, the first ISSUE_LIMIT kept and the rest counted: the 16 MiB a header may
    hold is room for ~4 million bad lines, and a file's records for any number, which kept would
    take gigabytes."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped_errors = 0
        self.dropped_warnings = 0

    def append(self, issue: Issue) -> None:
        if len(self) < ISSUE_LIMIT:
            super().append(issue)
        elif issue.is_warning:
            self.dropped_warnings += 1
        else:
            self.dropped_errors += 1

    @property
    def dropped(self) -> bool:
        return bool(self.dropped_errors or self.dropped_warnings)


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
    # INFO keys the records use without a ##INFO line, declared as htslib does.
    undeclared_info: set[str] = field(default_factory=set)
    # How many FORMAT keys and FILTER names the records added without a header line.
    undeclared_formats: int = 0
    undeclared_filters: int = 0

    def declare_info(self, key: str) -> FieldDef:
        """An INFO key the records use without a ##INFO line, typed from then on.

        A key the spec reserves takes its reserved Number and Type (the tables
        of VCF 4.3+, which wrote down what 4.1/4.2 reserve in prose). Any other
        key is typed as htslib types it (vcf.c, vcf_parse_info): it adds
        `##INFO=<ID=key,Number=1,Type=String,Description="Dummy">` and reads
        the record, a use without a value staying a flag (see info_entry).
        """
        spec = reserved("INFO", (4, 3)).get(key)
        if spec is None:
            if len(self.undeclared_info) >= UNDECLARED_KEY_LIMIT:
                # Typed the same, not remembered: a file of millions of distinct keys (one per
                # record) would otherwise grow the header by ~200 bytes a record.
                return FieldDef(key, *_HTSLIB_TYPING)
            self.undeclared_info.add(key)
            spec = _HTSLIB_TYPING
        definition = self.info[key] = FieldDef(key, *spec)
        return definition

    def is_undeclared_info(self, key: str) -> bool:
        """Whether an INFO key has no ##INFO line and no reserved meaning: typed as htslib does."""
        return key in self.undeclared_info or key not in self.info

    def format_def(self, key: str) -> FieldDef:
        """A FORMAT key's definition once `declare_format` has seen it (one past the limit is
        typed again, the same way, at each use)."""
        definition = self.format.get(key)
        return FieldDef(key, *_HTSLIB_TYPING) if definition is None else definition

    def declare_format(self, key: str) -> FieldDef:
        """A FORMAT key without a ##FORMAT line: reserved Number/Type, else htslib's Number=1,Type=String."""
        spec = reserved("FORMAT", max(self.version, (4, 3))).get(key)
        if spec is None:
            if self.undeclared_formats >= UNDECLARED_KEY_LIMIT:
                return self.format_def(key)  # typed the same, not remembered, as in declare_info
            self.undeclared_formats += 1
            spec = _HTSLIB_TYPING
        definition = self.format[key] = FieldDef(key, *spec)
        return definition

    def declare_filter(self, name: str) -> None:
        """A FILTER name without a ##FILTER line: htslib adds `##FILTER=<ID=name,Description="Dummy">`
        and reads on (vcf.c, vcf_parse_filter). Past the limit a name is not remembered, so a file
        of ever new names stays small (each use is checked again, the same way)."""
        if self.undeclared_filters < UNDECLARED_KEY_LIMIT:
            self.undeclared_filters += 1
            self.filters.add(name)

    @property
    def percent_encoded(self) -> bool:
        """VCF 4.3 made percent-encoding of special characters part of the format."""
        return self.version >= (4, 3)


@dataclass(frozen=True, slots=True)
class StructuredLine:
    """A `<key=value,...>` meta value: its fields in order, and which values were quoted."""

    fields: dict[str, str]
    quoted: frozenset[str]

    @property
    def keys(self) -> list[str]:
        return list(self.fields)


def parse_structured(text: str) -> dict[str, str] | None:
    """`<ID=x,Number=1,Description="a, b">` to a dict; None when the syntax is broken."""
    parsed = parse_structured_line(text)
    return None if parsed is None else parsed.fields


def parse_structured_line(text: str) -> StructuredLine | None:
    """A structured meta value; `[a, b]` (##META Values) is one value. None when broken."""
    if not (text.startswith("<") and text.endswith(">")):
        return None
    body = text[1:-1]
    result: dict[str, str] = {}
    quoted: set[str] = set()
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
            quoted.add(key)
            i = j + 1
        else:
            stop = "]" if i < n and body[i] == "[" else ","
            j = body.find(stop, i)
            if stop == "]":
                if j < 0:
                    return None
                j += 1
            j = n if j < 0 else j
            result[key] = body[i:j].strip()
            i = j
        if i < n:
            if body[i] != ",":
                return None
            i += 1
    return StructuredLine(result, frozenset(quoted))


def _field_def(
    kind: str, parsed: StructuredLine, line: int, version: tuple[int, int], issues: list[Issue]
) -> FieldDef | None:
    attrs = parsed.fields
    section = cite(version, kind.lower())
    missing = [k for k in ("ID", "Number", "Type", "Description") if k not in attrs]
    if missing:
        issues.append(
            Issue(
                line,
                kind,
                "META_MISSING_KEY",
                f"the {kind} definition lacks {', '.join(missing)} (required, {section})",
            )
        )
        if "ID" not in attrs or "Type" not in attrs:
            return None
    ident = attrs["ID"]
    _check_order(kind, parsed, ("ID", "Number", "Type", "Description"), line, version, issues)
    _check_quoted(kind, parsed, line, version, issues)
    number = attrs.get("Number", ".")
    type_ = attrs["Type"]
    allowed = _INFO_TYPES if kind == "INFO" else _FORMAT_TYPES
    if type_ not in allowed:
        issues.append(
            Issue(
                line,
                kind,
                "META_INVALID_TYPE",
                f"{kind} {ident} has Type={type_}; allowed: {', '.join(sorted(allowed))} ({section})",
            )
        )
        type_ = "String"
    if not (number.isdigit() or number in _SPECIAL_NUMBERS):
        issues.append(
            Issue(
                line,
                kind,
                "META_INVALID_NUMBER",
                f"{kind} {ident} has Number={number}; use an integer, A, R, G or . ({section})",
            )
        )
        number = "."
    if type_ == "Flag" and number != "0":
        must = is_must("FLAG_NUMBER", version)
        issues.append(
            Issue(
                line,
                kind,
                "META_INVALID_NUMBER",
                f"INFO {ident} is a Flag, so its Number {'must' if must else 'should'} be 0 ({section});"
                " it is read as a flag",
                warning=not must,
            )
        )
        number = "0"
    if number in ("LA", "LR", "LG") and version < (4, 5):
        issues.append(Issue(line, kind, "META_INVALID_NUMBER", f"Number={number} needs VCF 4.5 or later"))
    expected = reserved(kind, version).get(ident)
    if expected is not None and expected != (attrs.get("Number", number), attrs["Type"]):
        table = "Reserved INFO keys" if kind == "INFO" else "Reserved genotype keys"
        issues.append(
            Issue(
                line,
                kind,
                "META_RESERVED_KEY",
                f"{kind} {ident} is reserved as Number={expected[0]}, Type={expected[1]}"
                f" (table '{table}', {cite(version, 'fixed' if kind == 'INFO' else 'genotype')});"
                f" this header declares Number={attrs.get('Number', '?')}, Type={attrs['Type']}",
            )
        )
    return FieldDef(ident, number, type_)


def _check_order(
    kind: str,
    parsed: StructuredLine,
    order: tuple[str, ...],
    line: int,
    version: tuple[int, int],
    issues: list[Issue],
) -> None:
    """The spec's own fields come first and in its order (extra fields may follow)."""
    present = [key for key in parsed.keys if key in order]
    wanted = [key for key in order if key in parsed.fields]
    if present == wanted and parsed.keys[: len(wanted)] == wanted:
        return
    must = is_must("META_FIELD_ORDER", version)
    issues.append(
        Issue(
            line,
            kind,
            "META_FIELD_ORDER",
            f"the ##{kind} line {'must' if must else 'should'} list {', '.join(order)} first and in that"
            f" order ({cite(version, 'meta')}); found {', '.join(parsed.keys)}",
            warning=not must,
        )
    )


def _check_quoted(
    kind: str, parsed: StructuredLine, line: int, version: tuple[int, int], issues: list[Issue]
) -> None:
    if "Description" in parsed.fields and "Description" not in parsed.quoted:
        topic = kind.lower() if kind in ("INFO", "FORMAT", "FILTER", "ALT") else "meta"
        issues.append(
            Issue(
                line,
                kind,
                "META_UNQUOTED",
                f"the Description of a ##{kind} line must be surrounded by double quotes"
                f" ({cite(version, topic if topic != 'filter' and topic != 'alt' else 'info')})",
            )
        )


def parse_header(lines: list[str]) -> tuple[VcfHeader, IssueList]:
    """Header lines (without line endings, `#CHROM` last) to a VcfHeader and its problems.

    Raises VcfFileError for problems that make the records uninterpretable.
    """
    header = VcfHeader()
    issues = IssueList()
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


# Unstructured meta lines this specification defines; their value is not `<...>`.
_UNSTRUCTURED = frozenset(
    {"fileformat", "fileDate", "source", "reference", "assembly", "pedigreeDB", "phasing"}
)
# Structured lines the spec defines beyond INFO/FORMAT/FILTER/ALT/contig.
_OTHER_STRUCTURED = {"SAMPLE": "sample", "PEDIGREE": "pedigree", "META": "sample"}
# INFO and FORMAT keys from VCF 4.3 on (§1.6.1, §1.6.2); "1000G" is INFO's legacy exception.
_KEY_NAME = re.compile(r"[A-Za-z_][0-9A-Za-z_.]*")


def key_name_allowed(column: str, key: str, version: tuple[int, int]) -> bool:
    """Whether an INFO or FORMAT key's name is one its VCF version allows."""
    if version >= (4, 3):
        return bool(_KEY_NAME.fullmatch(key)) or (column == "INFO" and key == "1000G")
    return bool(key) and not any(c.isspace() for c in key)


def key_name_rule(version: tuple[int, int]) -> str:
    """What key_name_allowed asks of a name, as an issue's message says it."""
    if version >= (4, 3):
        return "must match ^([A-Za-z_][0-9A-Za-z_.]*|1000G)$ (1000G for INFO only)"
    return "must not contain whitespace"


# Contig names as SAM reference names (VCF 4.3+ §1.4.7).
_CONTIG_NAME = re.compile(r"[0-9A-Za-z!#$%&+./:;?@^_|~-][0-9A-Za-z!#$%&*+./:;=?@^_|~-]*")


def _meta_line(line: str, number: int, header: VcfHeader, issues: list[Issue]) -> None:
    version = header.version
    if not line.startswith("##"):
        issues.append(Issue(number, "HEADER", "META_SYNTAX", "a header line must start with ##"))
        return
    key, eq, value = line[2:].partition("=")
    if not eq or not key:
        issues.append(
            Issue(
                number, "HEADER", "META_SYNTAX", f"a meta line must be ##key=value ({cite(version, 'meta')})"
            )
        )
        return
    if not value:
        # 4.1/4.2 §1.2: "must be key=value pairs"; 4.3+ §1.4: the value "may not be empty".
        issues.append(
            Issue(number, key, "META_EMPTY_VALUE", f"##{key}= has no value ({cite(version, 'meta')})")
        )
        return
    if key in _UNSTRUCTURED:
        if value.startswith("<") and version >= (4, 3):
            issues.append(
                Issue(
                    number,
                    key,
                    "META_SYNTAX",
                    f"##{key} is an unstructured line, its value must not start with '<'"
                    f" ({cite(version, 'meta')})",
                )
            )
        return
    if key not in ("INFO", "FORMAT", "FILTER", "ALT", "contig") and key not in _OTHER_STRUCTURED:
        # 4.3+ §1.4: a value starting with '<' is a structured line and must be well-formed;
        # 4.1/4.2 give lines they do not define no syntax beyond ##key=value.
        if value.startswith("<") and version >= (4, 3) and parse_structured_line(value) is None:
            issues.append(
                Issue(
                    number,
                    key,
                    "META_SYNTAX",
                    f"the ##{key} line is not of the form <key=value,...> ({cite(version, 'meta')})",
                )
            )
        return
    parsed = parse_structured_line(value)
    if parsed is None:
        issues.append(
            Issue(
                number,
                key,
                "META_SYNTAX",
                f"the ##{key} line is not of the form <ID=...,key=value,...> ({cite(version, 'meta')})",
            )
        )
        return
    attrs = parsed.fields
    if key in _OTHER_STRUCTURED:
        _other_structured(key, parsed, number, version, issues)
        return
    if "ID" not in attrs:
        issues.append(Issue(number, key, "META_MISSING_KEY", f"the ##{key} line has no ID"))
        return
    ident = attrs["ID"]
    if key in ("INFO", "FORMAT"):
        definition = _field_def(key, parsed, number, version, issues)
        if definition is None:
            return
        table = header.info if key == "INFO" else header.format
        if not key_name_allowed(key, ident, version):
            issues.append(
                Issue(
                    number,
                    key,
                    "META_INVALID_ID",
                    f"{key} ID {ident[:60]!r} {key_name_rule(version)} ({cite(version, key.lower())});"
                    " its values are read as declared",
                )
            )
        if ident in table:
            issues.append(Issue(number, key, "META_DUPLICATE_ID", f"{key} {ident} is defined twice"))
        table[ident] = definition
    elif key in ("FILTER", "ALT"):
        section = cite(version, key.lower())
        if "Description" not in attrs:
            issues.append(
                Issue(number, key, "META_MISSING_KEY", f"{key} {ident} has no Description ({section})")
            )
        _check_order(key, parsed, ("ID", "Description"), number, version, issues)
        _check_quoted(key, parsed, number, version, issues)
        if key == "FILTER":
            header.filters.add(ident)
        else:
            if not ident or any(c in ident for c in " \t,<>"):
                issues.append(
                    Issue(
                        number,
                        key,
                        "META_SYNTAX",
                        f"ALT ID {ident!r} must not contain whitespace, commas or angle brackets ({section})",
                    )
                )
            header.alts.add(ident)
    else:
        _contig(ident, attrs, number, header, issues)


def _contig(ident: str, attrs: dict[str, str], number: int, header: VcfHeader, issues: list[Issue]) -> None:
    version = header.version
    section = cite(version, "contig")
    if version >= (4, 3):
        allowed = bool(_CONTIG_NAME.fullmatch(ident))
    else:
        # 4.1/4.2 name no character set; whitespace and commas break the line itself.
        allowed = bool(ident) and not any(c in ident for c in " \t,")
    if not allowed:
        issues.append(
            Issue(number, "contig", "META_SYNTAX", f"contig name {ident!r} is not allowed ({section})")
        )
    length = attrs.get("length")
    if length is not None and not (length.isascii() and length.isdigit()):
        issues.append(
            Issue(
                number,
                "contig",
                "META_SYNTAX",
                f"contig {ident} has length={length!r}, not an integer ({section})",
            )
        )
    header.contigs.add(ident)


def _other_structured(
    key: str, parsed: StructuredLine, number: int, version: tuple[int, int], issues: list[Issue]
) -> None:
    """##SAMPLE, ##PEDIGREE and ##META: from 4.3 every structured line needs an ID, given first."""
    if version < (4, 3):
        return
    section = cite(version, _OTHER_STRUCTURED[key])
    if "ID" not in parsed.fields:
        issues.append(
            Issue(
                number,
                key,
                "META_MISSING_KEY",
                f"the ##{key} line has no ID; all structured lines require one ({cite(version, 'meta')})",
            )
        )
        return
    _check_order(key, parsed, ("ID",), number, version, issues)
    _check_quoted(key, parsed, number, version, issues)
    if key == "META":
        values = parsed.fields.get("Values")
        if values is not None and not (values.startswith("[") and values.endswith("]")):
            issues.append(
                Issue(
                    number, key, "META_SYNTAX", f"##META Values must be a list in square brackets ({section})"
                )
            )


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
