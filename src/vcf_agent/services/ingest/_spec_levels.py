"""Where each VCF rule is written, per specification version, and how strongly.

Section numbers are those of the hts-specs LaTeX sources (VCFv4.1.tex ..
VCFv4.5.tex): 4.1 and 4.2 number the meta lines 1.2.x and data lines 1.4.x;
4.3 added sections on character encoding and data types, so from 4.3 on they
are 1.4.x and 1.6.x. A rule's level is the word the section uses: MUST (an
error: the record is dead-lettered, a strict job fails) or SHOULD
(a warning: the record flows). Several rules were SHOULD in 4.1/4.2 and
became MUST in 4.3; `must_from` says where.
"""

from __future__ import annotations

_OLD_SECTIONS = {
    "meta": "1.2",
    "fileformat": "1.2.1",
    "info": "1.2.2",
    "filter": "1.2.3",
    "format": "1.2.4",
    "alt": "1.2.5",
    "assembly": "1.2.6",
    "contig": "1.2.7",
    "sample": "1.2.8",
    "pedigree": "1.2.9",
    "header": "1.3",
    "data": "1.4",
    "fixed": "1.4.1",
    "genotype": "1.4.2",
}
_NEW_SECTIONS = {
    "meta": "1.4",
    "fileformat": "1.4.1",
    "info": "1.4.2",
    "filter": "1.4.3",
    "format": "1.4.4",
    "alt": "1.4.5",
    "assembly": "1.4.6",
    "contig": "1.4.7",
    "sample": "1.4.8",
    "pedigree": "1.4.9",
    "header": "1.5",
    "data": "1.6",
    "fixed": "1.6.1",
    "genotype": "1.6.2",
    "gvcf": "5.5",
}

# Rules that are SHOULD in VCF 4.1/4.2 and MUST from the version given:
# - a Flag's Number: "should be 0" (4.2 §1.2.2), "must be 0" (4.3 §1.4.2);
# - the order of ID, Number, Type, Description: 4.2 "should be described as
#   follows", 4.3 "are described as follows" and meta lines "must be
#   completely well-formed" (§1.4);
# - one contiguous block per CHROM: "should form" (4.2 §1.4.1), "must form" (4.3 §1.6.1);
# - the reserved FILTER `0`: "should not be used" (4.2 §1.4.1), "must not be used" (4.3 §1.6.1).
MUST_FROM = {
    "FLAG_NUMBER": (4, 3),
    "META_FIELD_ORDER": (4, 3),
    "CHROM_NOT_CONTIGUOUS": (4, 3),
    "FILTER_RESERVED": (4, 3),
}


def effective(version: tuple[int, int]) -> tuple[int, int]:
    """VCF 4.0 files are checked by the 4.1 rules, the oldest written down here."""
    return max(version, (4, 1))


def cite(version: tuple[int, int], topic: str) -> str:
    """`VCF 4.3 §1.6.1` for the section of `topic` in that version of the specification."""
    major, minor = effective(version)
    sections = _NEW_SECTIONS if (major, minor) >= (4, 3) else _OLD_SECTIONS
    return f"VCF {major}.{minor} §{sections[topic]}"


def is_must(rule: str, version: tuple[int, int]) -> bool:
    return effective(version) >= MUST_FROM[rule]


# Reserved INFO and FORMAT keys with their Number and Type, from the tables
# "Reserved INFO keys" (§1.6.1) and "Reserved genotype keys" (§1.6.2) of VCF
# 4.3, 4.4 and 4.5. VCF 4.1/4.2 list reserved keys in prose without a Number,
# so they are not checked there. (4.5's methylation keys, Number=M, are left
# out: this reader does not know that Number. So are LGL and LGP, which
# 4.5's table types Integer although the GL and GP they encode are Float.)
_INFO_43 = {
    "AA": ("1", "String"),
    "AC": ("A", "Integer"),
    "AD": ("R", "Integer"),
    "ADF": ("R", "Integer"),
    "ADR": ("R", "Integer"),
    "AF": ("A", "Float"),
    "AN": ("1", "Integer"),
    "BQ": ("1", "Float"),
    "CIGAR": ("A", "String"),
    "DB": ("0", "Flag"),
    "DP": ("1", "Integer"),
    "END": ("1", "Integer"),
    "H2": ("0", "Flag"),
    "H3": ("0", "Flag"),
    "MQ": ("1", "Float"),
    "MQ0": ("1", "Integer"),
    "NS": ("1", "Integer"),
    "SB": ("4", "Integer"),
    "SOMATIC": ("0", "Flag"),
    "VALIDATED": ("0", "Flag"),
    "1000G": ("0", "Flag"),
}
_FORMAT_43 = {
    "AD": ("R", "Integer"),
    "ADF": ("R", "Integer"),
    "ADR": ("R", "Integer"),
    "DP": ("1", "Integer"),
    "EC": ("A", "Integer"),
    "FT": ("1", "String"),
    "GL": ("G", "Float"),
    "GP": ("G", "Float"),
    "GQ": ("1", "Integer"),
    "GT": ("1", "String"),
    "HQ": ("2", "Integer"),
    "MQ": ("1", "Integer"),
    "PL": ("G", "Integer"),
    "PP": ("G", "Integer"),
    "PQ": ("1", "Integer"),
    "PS": ("1", "Integer"),
}
_FORMAT_44 = _FORMAT_43 | {"PSL": ("P", "String"), "PSO": ("P", "Integer"), "PSQ": ("P", "Integer")}
_FORMAT_45 = _FORMAT_44 | {
    "LEN": ("1", "Integer"),
    "LA": (".", "Integer"),
    "LAA": (".", "Integer"),
    "LAD": ("LR", "Integer"),
    "LADF": ("LR", "Integer"),
    "LADR": ("LR", "Integer"),
    "LEC": ("LA", "Integer"),
    "LPL": ("LG", "Integer"),
    "LPP": ("LG", "Integer"),
}


def reserved(kind: str, version: tuple[int, int]) -> dict[str, tuple[str, str]]:
    """The reserved (Number, Type) per key of an INFO or FORMAT table; empty before 4.3."""
    version = effective(version)
    if version < (4, 3):
        return {}
    if kind == "INFO":
        return _INFO_43
    return _FORMAT_45 if version >= (4, 5) else _FORMAT_44 if version >= (4, 4) else _FORMAT_43
