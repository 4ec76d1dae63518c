"""Per-record VCF checks, run only on cache misses of the encoder.

The reader caches the encoding of every field value it has seen (per value
and, where the Number depends on it, per ALT count); a value enters a cache
only after passing the checks here. So on real files almost every field is a
cache hit and validation costs a dict lookup, while every new value is checked
against the header's Type and Number. A failed check raises RecordError with
a code, the column and a message written for a lab technician.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from urllib.parse import unquote

from ._spec_levels import cite, is_must
from ._vcf_header import FieldDef, VcfHeader, bounded, key_name_allowed, key_name_rule

INT_MAX = 2**31 - 1
# Integers from -2**31 to -2**31+7 are reserved by BCF (missing, end-of-vector..).
INT_MIN = -(2**31) + 8

_BASES = re.compile(r"[ACGTNacgtn]+")
_ALLELE = re.compile(
    r"[ACGTNacgtn]+"  # bases
    r"|\*"  # spanning deletion
    r"|<[^<>,\s]+>"  # symbolic, incl. <*> and <NON_REF>
    r"|[ACGTNacgtn]+\[<?[^\[\]\s:]+>?:\d+\["  # t[p[
    r"|[ACGTNacgtn]+\]<?[^\[\]\s:]+>?:\d+\]"  # t]p]
    r"|\]<?[^\[\]\s:]+>?:\d+\][ACGTNacgtn]+"  # ]p]t
    r"|\[<?[^\[\]\s:]+>?:\d+\[[ACGTNacgtn]+"  # [p[t
    r"|\.[ACGTNacgtn]+|[ACGTNacgtn]+\."  # single breakends
)
_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:inf|infinity|nan)", re.IGNORECASE)
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_GT_SPLIT = re.compile(r"[/|]")
# CHROM as a contig name (VCF 4.3+ §1.4.7) or an angle-bracketed ID of the ##assembly file (every version).
_CHROM_NAME = re.compile(r"[0-9A-Za-z!#$%&+./:;?@^_|~-][0-9A-Za-z!#$%&*+./:;=?@^_|~-]*|<[^<>,\s]+>")
_RESERVED_SYMBOLIC = frozenset(
    {"DEL", "INS", "DUP", "INV", "CNV", "BND", "*", "NON_REF", "CNV:TR", "DUP:TANDEM"}
)


class RecordError(ValueError):
    """A record breaks the spec; it is dead-lettered (lenient) or fails the job (strict), unless
    only an INFO or FORMAT value does (VALUE_CODES)."""

    def __init__(self, code: str, column: str, message: str) -> None:
        message = bounded(message)
        super().__init__(message)
        self.code = code
        self.column = column
        self.message = message


# MUSTs broken by one INFO or FORMAT value alone (its Type, Number, 32-bit range or percent
# encoding; VCF 4.3 §1.4.2, §1.6.1-2): still errors of the file (strict jobs fail, `validate` says
# invalid), but in a lenient job the record flows without trusting that value: an INFO value is
# kept as the text it is, a FORMAT value is left out (missing, for the DP, GQ and AD stored per
# sample). Dead-lettering the record would lose a variant whose position, alleles and genotypes
# are sound for a mis-declared annotation: ExAC's sites VCF declares DP_HIST Number=A and writes
# two values, so all of its records went, and so did 387 of the 680 of scout's MIP demo, whose
# CADD scores are declared Integer.
VALUE_CODES = frozenset(
    {
        "INFO_TYPE",
        "INFO_NUMBER",
        "FORMAT_TYPE",
        "FORMAT_NUMBER",
        "INTEGER_OUT_OF_RANGE",
        "PERCENT_ENCODING",
    }
)


@dataclass(frozen=True, slots=True)
class TypedValues:
    """A field value split and converted per its Type; `count` is the number of values.

    `values` are those not missing (`.`); `missing` the places of the missing ones among the
    `count`, when some are and some are not: in a Number=A list `.,0.3` the 0.3 is the second
    ALT's, and a reader that dropped the `.` would give it to the first.
    """

    kind: str
    values: list[int] | list[float] | list[str]
    count: int
    missing: tuple[int, ...] = ()


def genotype_count(alleles: int, ploidy: int) -> int:
    """Number=G: how many genotypes `ploidy` copies of `alleles` alleles can form."""
    return math.comb(alleles + ploidy - 1, ploidy)


def expected_count(definition: FieldDef, alt_count: int, ploidy: int = 2) -> int | None:
    """How many values the Number asks for here; None when any count is legal."""
    number = definition.number
    if number.isdigit():
        return int(number)
    if number == "A":
        return alt_count
    if number == "R":
        return alt_count + 1
    if number == "G":
        return genotype_count(alt_count + 1, ploidy)
    if number == "P":
        return ploidy
    return None


class RecordRules:
    """The spec's per-record rules, bound to one file's header.

    A MUST broken by the record raises RecordError; a SHOULD not followed is
    appended to `pending` as (column, code, message, is_warning) and the record
    flows. So is a MUST about the file as a whole (one block per CHROM): which
    record breaks it is a matter of viewpoint, so none is rejected for it, but
    it is an error of the file (strict jobs fail, `validate` says invalid). Each SHOULD is
    reported once per key or contig, so a file's warnings stay few.
    """

    def __init__(self, header: VcfHeader) -> None:
        self.header = header
        self.pending: list[tuple[str, str, str, bool]] = []
        self._seen_contigs: set[str] = set()
        self._unsorted_contigs: set[str] = set()
        self._undeclared_contigs: set[str] = set()
        self._fixed = cite(header.version, "fixed")
        self._genotype = cite(header.version, "genotype")
        self._values_not_trusted: set[tuple[str, str]] = set()
        # Codes of the issues reported once per file (_once).
        self._reported: set[str] = set()
        self._local_alleles = header.version >= (4, 5)
        self._commas_delimit = header.version >= (4, 3)

    def contig(self, chrom: str, previous: str) -> None:
        """Called when CHROM changes: a legal name, declared, and not a second block of the same contig."""
        if not chrom or not (_CHROM_NAME.fullmatch(chrom) or self._old_chrom(chrom)):
            raise RecordError(
                "CHROM_INVALID",
                "CHROM",
                f"chromosome name {chrom!r} is empty or has forbidden characters ({self._fixed})",
            )
        if self.header.contigs and chrom not in self.header.contigs and chrom not in self._undeclared_contigs:
            self._undeclared_contigs.add(chrom)
            self.pending.append(
                (
                    "CHROM",
                    "CHROM_UNDECLARED",
                    f"chromosome {chrom} is not among the header's ##contig lines, which are"
                    f" recommended, not required ({cite(self.header.version, 'contig')})",
                    True,
                )
            )
        if previous:
            self._seen_contigs.add(previous)
        if chrom in self._seen_contigs:
            must = is_must("CHROM_NOT_CONTIGUOUS", self.header.version)
            message = (
                f"records of chromosome {chrom} appear again after {previous}; all records of a CHROM"
                f" {'must' if must else 'should'} form one contiguous block ({self._fixed})"
            )
            self.pending.append(("CHROM", "CHROM_NOT_CONTIGUOUS", message, not must))

    def _old_chrom(self, chrom: str) -> bool:
        """VCF 4.1/4.2 give CHROM no character set beyond "no whitespace permitted" (§1.4.1)."""
        return self.header.version < (4, 3) and not any(c.isspace() for c in chrom)

    def value_not_trusted(self, key: str, error: RecordError, kept: str) -> None:
        """An INFO or FORMAT value broke a MUST (VALUE_CODES) and the record flows with it `kept`
        as said: an error of the file, reported once per key, as a SHOULD is."""
        if (error.column, key) in self._values_not_trusted:
            return
        self._values_not_trusted.add((error.column, key))
        self.pending.append(
            (
                error.column,
                error.code,
                f"{self.cited(error)}; the record is kept with {kept}, and later values of"
                f" {error.column} {key} that break its header are not reported again",
                False,
            )
        )

    def _once(self, column: str, code: str, message: str, warning: bool) -> None:
        """An issue the record flows past, reported at the first record of the file that has it."""
        if code not in self._reported:
            self._reported.add(code)
            self.pending.append((column, code, message, warning))

    def cited(self, error: RecordError) -> str:
        """The error's message naming the section it breaks: the one on genotype fields for FORMAT,
        else the one on the record's fixed fields, unless the message names one already."""
        if "§" in error.message:
            return error.message
        return f"{error.message} ({self._genotype if error.column == 'FORMAT' else self._fixed})"

    @staticmethod
    def position(text: str) -> int:
        if not (text.isascii() and text.isdigit()):
            raise RecordError("POS_INVALID", "POS", f"position {text!r} is not a whole number of 0 or more")
        value = int(text)
        if value > INT_MAX:
            raise RecordError("POS_INVALID", "POS", f"position {text} is larger than 2^31-1")
        return value

    def unsorted(self, chrom: str, pos: int, previous: int) -> None:
        """POS going back within a CHROM: the spec describes positions as sorted but does not
        require it with a MUST or SHOULD (§1.6.1 of 4.3+, §1.4.1 of 4.1/4.2), so a warning."""
        if chrom in self._unsorted_contigs:
            return
        self._unsorted_contigs.add(chrom)
        self.pending.append(
            (
                "POS",
                "POS_UNSORTED",
                f"position {chrom}:{pos} comes after {chrom}:{previous}; positions are described as sorted"
                f" ({self._fixed}); later unsorted records of {chrom} are not reported again",
                True,
            )
        )

    def identifier(self, text: str) -> None:
        """ID: a `;`-separated list of identifiers, none empty or spaced ("no whitespace or
        semicolons permitted" in each), none twice: 4.3+ §1.6.1 "duplicate values not allowed";
        4.1/4.2 ask for "unique identifiers", which may mean across records, so there a warning."""
        if any(c in text for c in " \t") or not text:
            raise RecordError("ID_INVALID", "ID", f"ID {text[:60]!r} is empty or contains whitespace")
        if ";" in text:
            names = text.split(";")
            if "" in names:
                raise RecordError("ID_INVALID", "ID", f"ID {text[:60]!r} lists an empty identifier")
            if len(set(names)) != len(names):
                repeated = f"ID lists the identifier {_first_repeated(names)[:60]!r} more than once"
                if self.header.version >= (4, 3):
                    raise RecordError("ID_INVALID", "ID", repeated)
                self._once(
                    "ID",
                    "ID_INVALID",
                    f"{repeated} ({self._fixed}); later records doing so are not reported again",
                    True,
                )

    @staticmethod
    def reference(text: str) -> None:
        if not _BASES.fullmatch(text):
            raise RecordError(
                "REF_INVALID", "REF", f"REF {text[:50]!r} must be one or more of the bases A, C, G, T, N"
            )

    def alternates(self, text: str) -> list[str]:
        """The ALT alleles of an ALT column ([] for `.`), each checked for syntax."""
        if text == ".":
            return []
        alleles = text.split(",")
        for allele in alleles:
            if not _ALLELE.fullmatch(allele):
                raise RecordError(
                    "ALT_INVALID",
                    "ALT",
                    f"ALT allele {allele[:60]!r} is not bases, *, a <SYMBOLIC> allele or a breakend",
                )
        if len(set(alleles)) != len(alleles):
            # No version of the spec forbids it (4.3+ forbid repeated IDs, FILTER names and keys), and
            # each copy is its own allele index for the genotypes: bcftools' many.alleles.vcf has
            # such records, which htslib reads. Each ALT is a variant of its own, as always.
            self._once(
                "ALT",
                "ALT_DUPLICATE",
                f"ALT lists the allele {_first_repeated(alleles)[:60]!r} more than once; each is read as"
                " an allele of its own, and later records doing so are not reported again",
                True,
            )
        return alleles

    def symbolic_warnings(self, alleles: list[str]) -> list[str]:
        """Symbolic ALTs that are neither reserved nor declared with ##ALT (a warning, not an error)."""
        found = []
        for allele in alleles:
            if allele.startswith("<"):
                name = allele[1:-1]
                if name not in self.header.alts and name.split(":")[0] not in _RESERVED_SYMBOLIC:
                    found.append(name)
        return found

    @staticmethod
    def quality(text: str) -> float | None:
        if text == ".":
            return None
        if not _FLOAT.fullmatch(text):
            raise RecordError("QUAL_INVALID", "QUAL", f"QUAL {text!r} is neither a number nor '.'")
        return float(text)

    def filters(self, text: str) -> list[str]:
        """FILTER: `.`, PASS, or the names of the filters failed. `0` is reserved (4.1/4.2: "should
        not be used", 4.3+ §1.6.1: "must not"); 4.3+ allow no name twice; `.` means no filter was
        applied, so it cannot stand beside a name."""
        if text == ".":
            return []
        names = text.split(";")
        if len(names) > 1 and "." in names:
            raise RecordError(
                "FILTER_INVALID",
                "FILTER",
                f"FILTER {text[:60]!r} lists the MISSING value '.' beside filter names",
            )
        if "0" in names:
            if is_must("FILTER_RESERVED", self.header.version):
                raise RecordError("FILTER_RESERVED", "FILTER", "FILTER '0' is reserved and must not be used")
            self._once(
                "FILTER",
                "FILTER_RESERVED",
                f"FILTER '0' is reserved and should not be used ({self._fixed}); later records"
                " using it are not reported again",
                True,
            )
        if self.header.version >= (4, 3) and len(set(names)) != len(names):
            raise RecordError(
                "FILTER_INVALID", "FILTER", f"FILTER lists {_first_repeated(names)[:60]!r} more than once"
            )
        for name in names:
            if name not in self.header.filters:
                if not name or any(c in name for c in " \t"):
                    raise RecordError(
                        "FILTER_INVALID", "FILTER", f"FILTER {text!r} has an empty or spaced name"
                    )
                self.header.declare_filter(name)
                self.pending.append(
                    (
                        "FILTER",
                        "FILTER_UNDECLARED",
                        f"filter {name} is not declared with a ##FILTER header line, which it should be"
                        f" ({cite(self.header.version, 'meta')})",
                        True,
                    )
                )
        if "PASS" in names and len(names) > 1:
            raise RecordError("FILTER_INVALID", "FILTER", "PASS cannot be combined with failed filters")
        return names

    def info_keys(self, entries: list[str]) -> list[str]:
        """The INFO entries to read, given no key twice in a record: 4.3+ §1.6.1 "Duplicate keys are
        not allowed" (the record's value would be ambiguous); 4.1/4.2 say nothing, so there it is a
        warning and the first value is the one kept, as htslib keeps it."""
        seen: set[str] = set()
        first: list[str] = []
        repeated = ""
        for entry in entries:
            key = entry.partition("=")[0]
            if entry and key in seen:
                repeated = repeated or key
                continue
            if entry:
                seen.add(key)
            first.append(entry)
        if not repeated:
            return entries
        if self.header.version >= (4, 3):
            raise RecordError(
                "INFO_DUPLICATE_KEY", "INFO", f"INFO lists the key {repeated[:60]!r} more than once"
            )
        self._once(
            "INFO",
            "INFO_DUPLICATE_KEY",
            f"INFO lists the key {repeated[:60]!r} more than once; the first value is kept, as htslib"
            f" keeps it, and later records doing so are not reported again ({self._fixed})",
            True,
        )
        return first

    def empty_info_entry(self) -> None:
        """An empty INFO entry (`A=1;;B=2`, or a `;` ending the column, as in bcftools' own test
        inputs): an error of the file (VCF 4.5 §1: zero length fields are not allowed), but it holds
        nothing, so the record flows without it, as htslib reads it."""
        self._once(
            "INFO",
            "INFO_EMPTY_ENTRY",
            f"the INFO column has an empty entry (';;' or a ';' at an end) ({self._fixed}); the record is"
            " kept with the empty entry skipped, and later empty entries are not reported again",
            False,
        )

    def info_entry(self, entry: str, alt_count: int) -> tuple[FieldDef, str, TypedValues | None]:
        """One `key=value` (or flag) INFO entry, checked; TypedValues None for a flag."""
        key, has_value, raw = entry.partition("=")
        definition = self.header.info.get(key)
        if definition is None:
            if not key:
                raise RecordError("INFO_INVALID", "INFO", f"INFO entry {entry[:40]!r} has no key")
            self._key_name("INFO", key)
            definition = self.header.declare_info(key)
            typed_as = "as htslib does" if self.header.is_undeclared_info(key) else "as the spec reserves it"
            self.pending.append(
                (
                    "INFO",
                    "INFO_UNDECLARED",
                    f"INFO key {key} is not declared with a ##INFO header line, which it should be"
                    f" ({self._fixed}); read as Number={definition.number}, Type={definition.type},"
                    f" {typed_as}",
                    True,
                )
            )
        if not has_value and self.header.is_undeclared_info(key):
            # htslib stores a value-less undeclared key as a flag.
            return definition, key, None
        if definition.type == "Flag":
            if has_value:
                raise RecordError("INFO_TYPE", "INFO", f"INFO {key} is a Flag and must not have a value")
            return definition, key, None
        if not has_value:
            raise RecordError("INFO_TYPE", "INFO", f"INFO {key} needs a value ({definition.type})")
        typed = self.typed(definition, raw, "INFO")
        self.check_count(definition, typed, alt_count, "INFO", 2)
        return definition, key, typed

    def _key_name(self, column: str, key: str) -> None:
        """An undeclared key's name, checked once (it is declared next): 4.3+ give INFO and FORMAT
        keys a pattern (§1.6.1, §1.6.2: "must match"), 4.1/4.2 forbid whitespace in them. An error of
        the file whose record flows: the key and its value are kept as they are."""
        if not key_name_allowed(column, key, self.header.version):
            self.pending.append(
                (
                    column,
                    f"{column}_KEY_INVALID",
                    f"{column} key {key[:60]!r} {key_name_rule(self.header.version)}"
                    f" ({self._fixed if column == 'INFO' else self._genotype}); it is kept as it is",
                    False,
                )
            )

    def typed(self, definition: FieldDef, raw: str, column: str) -> TypedValues:
        """Split (unless a single String) and convert per Type; `.` items are dropped."""
        kind = definition.type
        if (
            not raw
            and column == "FORMAT"
            and self._local_alleles
            and (definition.number == "LA" or (definition.id == "LAA" and definition.number == "."))
        ):
            # VCF 4.5 §1.6.2: a sample with no local ALT allele has a zero-length LAA (its own
            # example writes `0/0::30:0`), and so every Number=LA value of that sample.
            return TypedValues(kind, [], 0, ())
        items = [raw] if kind == "String" and definition.number == "1" else raw.split(",")
        # 4.3+ §1.6.1: "literal commas are permitted only as delimiters for lists of values", so a
        # declared (or reserved) Number=1 String with a comma holds two. An undeclared key is one
        # String, as htslib types it.
        if (
            len(items) == 1
            and self._commas_delimit
            and column == "INFO"
            and "," in raw
            and not self.header.is_undeclared_info(definition.id)
        ):
            items = raw.split(",")
        count = len(items) if raw != "." else 0
        present = [item for item in items if item != "."]
        missing: tuple[int, ...] = ()
        if 0 < len(present) < count:
            missing = tuple(i for i, item in enumerate(items) if item == ".")
        where = f"{column} {definition.id}"
        if kind == "Integer":
            ints: list[int] = []
            for item in present:
                if not _is_int(item):
                    raise RecordError(f"{column}_TYPE", column, f"{where} value {item!r} is not an integer")
                value = int(item)
                if not INT_MIN <= value <= INT_MAX:
                    raise RecordError(
                        "INTEGER_OUT_OF_RANGE",
                        column,
                        f"{where} value {item} is outside the 32-bit range VCF allows"
                        " (-2147483640 to 2147483647)",
                    )
                ints.append(value)
            return TypedValues(kind, ints, count, missing)
        if kind == "Float":
            floats: list[float] = []
            for item in present:
                if not _FLOAT.fullmatch(item):
                    raise RecordError(f"{column}_TYPE", column, f"{where} value {item!r} is not a number")
                floats.append(float(item))
            return TypedValues(kind, floats, count, missing)
        if kind == "Character":
            for item in present:
                if len(item) != 1:
                    raise RecordError(
                        f"{column}_TYPE", column, f"{where} value {item!r} is not a single character"
                    )
        if self.header.percent_encoded and "%" in raw:
            if _BAD_PERCENT.search(raw):
                raise RecordError(
                    "PERCENT_ENCODING",
                    column,
                    f"{where} has a '%' not followed by two hex digits (VCF 4.3+ percent-encoding)",
                )
            present = [unquote(item) for item in present]
        return TypedValues(kind, present, count, missing)

    @staticmethod
    def check_count(
        definition: FieldDef, typed: TypedValues, alt_count: int, column: str, ploidy: int
    ) -> None:
        if typed.count == 0:
            return
        expected = expected_count(definition, alt_count, ploidy)
        if expected is not None and typed.count != expected and not (typed.count == 1 and not typed.values):
            raise RecordError(
                f"{column}_NUMBER",
                column,
                f"{column} {definition.id} has {typed.count} value(s) but Number={definition.number}"
                f" means {expected} here",
            )

    def format_keys(self, text: str) -> list[str]:
        keys = text.split(":")
        for key in keys:
            if key not in self.header.format:
                if not key or key == ".":
                    raise RecordError(
                        "FORMAT_INVALID",
                        "FORMAT",
                        f"FORMAT {text!r} has an empty or '.' key ({self._genotype})",
                    )
                self._key_name("FORMAT", key)
                definition = self.header.declare_format(key)
                self.pending.append(
                    (
                        "FORMAT",
                        "FORMAT_UNDECLARED",
                        f"FORMAT key {key} is not declared with a ##FORMAT header line, which it should be"
                        f" ({cite(self.header.version, 'meta')}); read as Number={definition.number},"
                        f" Type={definition.type}",
                        True,
                    )
                )
        if len(set(keys)) != len(keys):
            raise RecordError("FORMAT_INVALID", "FORMAT", f"FORMAT {text} lists a key twice")
        if "GT" in keys and keys[0] != "GT":
            raise RecordError("FORMAT_GT_NOT_FIRST", "FORMAT", "GT must be the first FORMAT key when present")
        return keys

    @staticmethod
    def genotype(text: str, alt_count: int, sample: str) -> tuple[list[int], bool]:
        """GT text to allele indexes (-1 missing) and phasing; 4.4+ allows a leading phase mark."""
        body = text
        if body[:1] in ("/", "|"):
            body = body[1:]
        alleles = _GT_SPLIT.split(body)
        indexes: list[int] = []
        for allele in alleles:
            if allele == ".":
                indexes.append(-1)
                continue
            if not (allele.isascii() and allele.isdigit()):
                raise RecordError(
                    "GT_INVALID", "FORMAT", f"sample {sample}: the genotype is not like 0/1 or 0|1"
                )
            index = int(allele)
            if index > alt_count:
                raise RecordError(
                    "GT_ALLELE_RANGE",
                    "FORMAT",
                    f"sample {sample}: the genotype uses allele {index}"
                    f" but the record has {alt_count} ALT(s)",
                )
            indexes.append(index)
        phased = "|" in text and "/" not in text[1:]
        return indexes, phased

    @staticmethod
    def too_many_values(sample: str, count: int, width: int) -> RecordError:
        return RecordError(
            "SAMPLE_TOO_MANY_VALUES",
            "FORMAT",
            f"sample {sample} has {count} values but FORMAT lists {width} keys",
        )

    def trailing_tab(self, columns: int) -> None:
        """A line ending in a tab: an empty column past the header's; an error of the file (fields are
        tab-separated and none may be empty: VCF 4.5 §1 says so outright), reported once, whose
        record flows without it."""
        self._once(
            "CHROM",
            "TRAILING_TAB",
            f"the line ends with a tab, an empty column past the header's {columns} ({self._fixed});"
            " the record is read without it, and later lines doing so are not reported again",
            False,
        )

    @staticmethod
    def column_count(found: int, expected: int) -> RecordError:
        if found == 1:
            return RecordError(
                "COLUMN_COUNT", "CHROM", "the line has no tabs: columns must be separated by tabs"
            )
        return RecordError(
            "COLUMN_COUNT", "CHROM", f"the line has {found} columns; the header defines {expected}"
        )


def _first_repeated(items: list[str]) -> str:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return ""


def _is_int(text: str) -> bool:
    body = text[1:] if text[:1] in "+-" else text
    return body.isascii() and body.isdigit()
