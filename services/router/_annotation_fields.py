"""Structured values out of VEP CSQ, SnpEff ANN and bcftools BCSQ annotation strings.

Each tool packs one transcript-level prediction per comma-separated entry and one
field per `|`; which field sits where is only stated in the header's INFO
Description, so the layout is resolved once per header (`AnnotationContext`) and
the per-variant code indexes into split entries without any name lookups.

Of the entries that belong to the message's ALT allele, the one with the most
severe Sequence Ontology term wins (Ensembl's ranking, extended with the SnpEff
and bcftools-csq vocabularies); a canonical-transcript flag breaks ties.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    # Types of the stub only: this module is handed the reader's values, never calls it.
    from ._local_wire import InfoValues, VariantFields

# Most severe first. Ensembl VEP's consequence table with SnpEff-only terms slotted in
# next to their VEP equivalents; the impact is the one both tools report for the term.
_SO_SEVERITY: tuple[tuple[str, str], ...] = (
    ("chromosome_number_variation", "HIGH"),
    ("transcript_ablation", "HIGH"),
    ("exon_loss_variant", "HIGH"),
    ("exon_loss", "HIGH"),
    ("splice_acceptor_variant", "HIGH"),
    ("splice_donor_variant", "HIGH"),
    ("stop_gained", "HIGH"),
    ("frameshift_variant", "HIGH"),
    ("stop_lost", "HIGH"),
    ("start_lost", "HIGH"),
    ("transcript_amplification", "HIGH"),
    ("gene_fusion", "HIGH"),
    ("bidirectional_gene_fusion", "HIGH"),
    ("feature_ablation", "HIGH"),
    ("rare_amino_acid_variant", "HIGH"),
    ("protein_protein_contact", "HIGH"),
    ("structural_interaction_variant", "HIGH"),
    ("inframe_insertion", "MODERATE"),
    ("disruptive_inframe_insertion", "MODERATE"),
    ("conservative_inframe_insertion", "MODERATE"),
    ("inframe_deletion", "MODERATE"),
    ("disruptive_inframe_deletion", "MODERATE"),
    ("conservative_inframe_deletion", "MODERATE"),
    ("missense_variant", "MODERATE"),
    ("protein_altering_variant", "MODERATE"),
    ("regulatory_region_ablation", "MODERATE"),
    ("duplication", "MODERATE"),
    ("inversion", "MODERATE"),
    ("splice_donor_5th_base_variant", "LOW"),
    ("splice_region_variant", "LOW"),
    ("splice_donor_region_variant", "LOW"),
    ("splice_polypyrimidine_tract_variant", "LOW"),
    ("incomplete_terminal_codon_variant", "LOW"),
    ("initiator_codon_variant", "LOW"),
    ("5_prime_UTR_premature_start_codon_gain_variant", "LOW"),
    ("start_retained_variant", "LOW"),
    ("stop_retained_variant", "LOW"),
    ("synonymous_variant", "LOW"),
    ("sequence_feature", "LOW"),
    ("coding_sequence_variant", "MODIFIER"),
    ("mature_miRNA_variant", "MODIFIER"),
    ("5_prime_UTR_variant", "MODIFIER"),
    ("3_prime_UTR_variant", "MODIFIER"),
    ("non_coding_transcript_exon_variant", "MODIFIER"),
    ("non_coding_exon_variant", "MODIFIER"),
    ("exon_variant", "MODIFIER"),
    ("intron_variant", "MODIFIER"),
    ("conserved_intron_variant", "MODIFIER"),
    ("NMD_transcript_variant", "MODIFIER"),
    ("non_coding_transcript_variant", "MODIFIER"),
    ("nc_transcript_variant", "MODIFIER"),
    ("coding_transcript_variant", "MODIFIER"),
    ("upstream_gene_variant", "MODIFIER"),
    ("downstream_gene_variant", "MODIFIER"),
    ("TFBS_ablation", "MODIFIER"),
    ("TFBS_amplification", "MODIFIER"),
    ("TF_binding_site_variant", "MODIFIER"),
    ("regulatory_region_amplification", "MODIFIER"),
    ("feature_elongation", "MODIFIER"),
    ("regulatory_region_variant", "MODIFIER"),
    ("feature_truncation", "MODIFIER"),
    ("gene_variant", "MODIFIER"),
    ("transcript_variant", "MODIFIER"),
    ("intragenic_variant", "MODIFIER"),
    ("conserved_intergenic_variant", "MODIFIER"),
    ("intergenic_variant", "MODIFIER"),
    ("intergenic_region", "MODIFIER"),
    ("sequence_variant", "MODIFIER"),
)

SO_RANK: dict[str, int] = {term: rank for rank, (term, _) in enumerate(_SO_SEVERITY)}
SO_IMPACT: dict[str, str] = dict(_SO_SEVERITY)
# Terms outside the table (new tool releases) sort after every known one.
_UNKNOWN_RANK = len(_SO_SEVERITY)

# bcftools csq abbreviates SO terms; these are the ones that do not just drop "_variant".
_BCSQ_TERMS: dict[str, str] = {
    "5_prime_utr": "5_prime_UTR_variant",
    "3_prime_utr": "3_prime_UTR_variant",
    "non_coding": "non_coding_transcript_variant",
    "inframe_altering": "protein_altering_variant",
    "coding_sequence": "coding_sequence_variant",
    "intron": "intron_variant",
    "intergenic": "intergenic_variant",
}


def parse_format_description(description: str) -> tuple[str, ...]:
    """Field names from an INFO Description ("... Format: A|B|C" or SnpEff's "...: 'A | B'")."""
    marker = description.rfind("Format:")
    start = marker + len("Format:") if marker >= 0 else description.rfind(":") + 1
    text = description[start:].strip().strip("'\"").strip()
    if "|" not in text:
        return ()
    return tuple(name.strip() for name in text.split("|"))


# Header Description text each tool ships when the header says nothing usable.
DEFAULT_CSQ_FIELDS: tuple[str, ...] = parse_format_description(
    "Format: Allele|Consequence|IMPACT|SYMBOL|Gene|Feature_type|Feature|BIOTYPE|EXON|INTRON|HGVSc|HGVSp"
    "|cDNA_position|CDS_position|Protein_position|Amino_acids|Codons|Existing_variation|DISTANCE"
    "|STRAND|FLAGS|SYMBOL_SOURCE|HGNC_ID"
)
DEFAULT_ANN_FIELDS: tuple[str, ...] = (
    "Allele",
    "Annotation",
    "Annotation_Impact",
    "Gene_Name",
    "Gene_ID",
    "Feature_Type",
    "Feature_ID",
    "Transcript_BioType",
    "Rank",
    "HGVS.c",
    "HGVS.p",
    "cDNA.pos / cDNA.length",
    "CDS.pos / CDS.length",
    "AA.pos / AA.length",
    "Distance",
    "ERRORS / WARNINGS / INFO",
)
DEFAULT_BCSQ_FIELDS: tuple[str, ...] = (
    "Consequence",
    "gene",
    "transcript",
    "biotype",
    "strand",
    "amino_acid_change",
    "dna_change",
)

_MISSING = -1


def _index_of(names: Sequence[str], *candidates: str) -> int:
    """Position of the first candidate present (case-insensitive); the candidates are in preference order."""
    lowered = [name.lower() for name in names]
    for candidate in candidates:
        if candidate in lowered:
            return lowered.index(candidate)
    return _MISSING


def _is_frequency_field(name: str) -> bool:
    lowered = name.lower()
    return lowered in ("af", "max_af") or (lowered.startswith("gnomad") and lowered.endswith("_af"))


@dataclass(frozen=True, slots=True)
class _Layout:
    """Field positions of one annotation tag; -1 marks a field the header does not declare."""

    tag: str
    allele: int
    allele_num: int
    consequence: int
    impact: int
    gene: int
    gene_id: int
    hgvs_c: int
    hgvs_p: int
    canonical: int
    clin_sig: int
    dna_change: int
    frequencies: tuple[int, ...]
    # Split only as far as the last field read: long VEP entries carry dozens we ignore.
    max_split: int
    bcftools: bool
    # Lower-cased field names in layout order, to line up ingest's per-subfield lists.
    names: tuple[str, ...] = ()

    @classmethod
    def resolve(cls, tag: str, names: Sequence[str]) -> _Layout:
        positions = {
            "allele": _index_of(names, "allele"),
            "allele_num": _index_of(names, "allele_num"),
            "consequence": _index_of(names, "consequence", "annotation"),
            "impact": _index_of(names, "impact", "annotation_impact"),
            "gene": _index_of(names, "symbol", "gene_name", "gene"),
            "gene_id": _index_of(names, "gene_id", "gene"),
            "hgvs_c": _index_of(names, "hgvsc", "hgvs.c"),
            "hgvs_p": _index_of(names, "hgvsp", "hgvs.p"),
            "canonical": _index_of(names, "canonical"),
            "clin_sig": _index_of(names, "clin_sig"),
            "dna_change": _index_of(names, "dna_change"),
        }
        frequencies = tuple(i for i, name in enumerate(names) if _is_frequency_field(name))
        return cls(
            tag=tag,
            frequencies=frequencies,
            max_split=max([*positions.values(), *frequencies, 0]) + 1,
            bcftools=tag == "BCSQ",
            names=tuple(name.lower() for name in names),
            **positions,
        )


@dataclass(frozen=True, slots=True)
class AnnotationContext:
    """Header-derived field lists of the CSQ/ANN/BCSQ tags; build once per VCF header.

    Empty tuples fall back to each tool's default layout, so a message is still
    readable when the router never saw the header.
    """

    csq_fields: tuple[str, ...] = ()
    ann_fields: tuple[str, ...] = ()
    bcsq_fields: tuple[str, ...] = ()
    layouts: tuple[_Layout, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        layouts = (
            _Layout.resolve("CSQ", self.csq_fields or DEFAULT_CSQ_FIELDS),
            _Layout.resolve("ANN", self.ann_fields or DEFAULT_ANN_FIELDS),
            _Layout.resolve("BCSQ", self.bcsq_fields or DEFAULT_BCSQ_FIELDS),
        )
        object.__setattr__(self, "layouts", layouts)

    @classmethod
    def from_info_descriptions(cls, descriptions: Mapping[str, str]) -> AnnotationContext:
        """From INFO ID -> Description (e.g. `{k: v.description for k, v in pysam_header.info.items()}`)."""

        def fields(tag: str) -> tuple[str, ...]:
            return parse_format_description(descriptions.get(tag) or "")

        return cls(csq_fields=fields("CSQ"), ann_fields=fields("ANN"), bcsq_fields=fields("BCSQ"))

    @classmethod
    def from_header_lines(cls, lines: Iterable[str]) -> AnnotationContext:
        """From raw `##INFO=<...>` meta lines; other lines are ignored."""
        descriptions: dict[str, str] = {}
        for line in lines:
            if not line.startswith("##INFO=<ID="):
                continue
            tag = line[len("##INFO=<ID=") :].split(",", 1)[0]
            start = line.find('Description="')
            if start < 0:
                continue
            start += len('Description="')
            end = line.find('"', start)
            # SnpEff quotes its field list with ' inside the "..." so a plain find is enough.
            descriptions[tag] = line[start:end] if end >= 0 else line[start:]
        return cls.from_info_descriptions(descriptions)


DEFAULT_CONTEXT = AnnotationContext()


class ConsequenceCall(NamedTuple):
    """The most severe prediction for one ALT allele, plus population AF and ClinVar from any tag."""

    source: str
    consequence: str
    impact: str
    gene: str
    hgvs_c: str
    hgvs_p: str
    # Highest population AF found in this allele's entries; -1 when none.
    max_af: float
    clin_sig: str


def vep_allele(reference: str, alternate: str, all_alternates: Sequence[str]) -> str:
    """The allele string VEP writes: the shared first base is dropped when every allele has it."""
    first = reference[:1]
    if not first or alternate.startswith("<") or len(reference) == len(alternate) == 1:
        return alternate
    for alt in all_alternates or (alternate,):
        if alt[:1] != first:
            return alternate
    return alternate[1:] or "-"


def normalise_term(term: str, bcftools: bool) -> str:
    """SO term as ranked; bcftools csq marks terms downstream of a stop with '*' and abbreviates them."""
    if not bcftools:
        return term
    term = term.lstrip("*")
    mapped = _BCSQ_TERMS.get(term)
    if mapped is not None:
        return mapped
    if term in SO_RANK:
        return term
    return f"{term}_variant"


def info_strings(value: InfoValues) -> tuple[str, ...]:
    """The strings of a String INFO value; () for any other type."""
    # The items of a value share one type, so the first tells.
    return value if value and isinstance(value[0], str) else ()


def _entries_by_header(info: Mapping[str, InfoValues], layout: _Layout) -> list[str]:
    """Entries rebuilt in this layout's field order from ingest's per-subfield lists (empty if none)."""
    prefix = layout.tag + "."
    columns = {
        key[len(prefix) :].lower(): info_strings(value)
        for key, value in info.items()
        if key.startswith(prefix)
    }
    if not columns:
        return []
    rows = max(len(values) for values in columns.values())
    ordered = [columns.get(name) for name in layout.names[: layout.max_split]]
    return [
        "|".join(values[i] if values is not None and i < len(values) else "" for values in ordered)
        for i in range(rows)
    ]


def _entries(value: InfoValues) -> Sequence[str]:
    """Annotation entries; tolerates producers that kept the comma-joined string unsplit."""
    values = info_strings(value)
    if len(values) == 1 and "," in values[0]:
        return values[0].split(",")
    return values


def _parse_float(text: str) -> float:
    """Largest of '&'-joined numbers (VEP joins one per co-located known variant); -1 when none parse."""
    best = -1.0
    for part in text.split("&"):
        if not part or part == ".":
            continue
        try:
            number = float(part)
        except ValueError:
            continue
        if number > best:
            best = number
    return best


class _AlleleMatcher:
    """Decides which entries describe this ALT of a multi-allelic record."""

    __slots__ = ("alternate", "dna_change", "number", "vep_form")

    def __init__(self, variant: VariantFields) -> None:
        self.alternate = variant.alternate
        self.vep_form = vep_allele(variant.reference, variant.alternate, variant.all_alternates)
        self.number = str(variant.alt_index + 1)
        self.dna_change = f"{variant.position}{variant.reference}"

    def matches(self, parts: list[str], layout: _Layout) -> bool:
        if layout.allele_num >= 0 and parts[layout.allele_num]:
            return parts[layout.allele_num] == self.number
        if layout.allele >= 0:
            allele = parts[layout.allele]
            if allele in (self.alternate, self.vep_form):
                return True
            # SnpEff writes "ALT-REF" for cancer (somatic vs germline) comparisons.
            return allele.partition("-")[0] == self.alternate
        if layout.dna_change >= 0:
            # bcftools has no allele column; "<pos><ref>><alt>" names the allele of local changes.
            head, sep, alt = parts[layout.dna_change].partition(">")
            if sep and head == self.dna_change:
                return alt == self.alternate
        return True


def worst_consequence(
    variant: VariantFields, context: AnnotationContext = DEFAULT_CONTEXT
) -> ConsequenceCall | None:
    """Most severe entry for this ALT across CSQ, ANN and BCSQ (earlier tag wins ties); None if unannotated.

    Population AF and ClinVar significance are gathered from every tag, not only the winner's.
    """
    info = variant.info
    # Entries of a single-ALT record all describe that ALT, whatever allele spelling the tool chose
    # (VEP writes SV alleles as e.g. "deletion"), so matching is only needed for multi-allelic records.
    matcher = _AlleleMatcher(variant) if len(variant.all_alternates) > 1 else None
    chosen: list[str] | None = None
    chosen_layout: _Layout | None = None
    chosen_term = ""
    # rank * 2 + (0 if canonical else 1): one int compare orders by severity, then canonical first.
    chosen_key = (_UNKNOWN_RANK + 1) * 2
    max_af = -1.0
    clin_sig = ""
    for layout in context.layouts:
        value = info.get(layout.tag)
        if value is None:
            continue
        # Ingest splits each annotation by the file's own header into `TAG.Subfield` lists; when
        # present they, not a guessed default field order, say which value is which.
        for entry in _entries_by_header(info, layout) or _entries(value):
            if layout.bcftools and entry.startswith("@"):
                # Compound change annotated at another record's position.
                continue
            parts = entry.split("|", layout.max_split)
            if len(parts) < layout.max_split:
                parts.extend([""] * (layout.max_split - len(parts)))
            if matcher is not None and not matcher.matches(parts, layout):
                continue
            for index in layout.frequencies:
                af = _parse_float(parts[index])
                if af > max_af:
                    max_af = af
            if layout.clin_sig >= 0 and not clin_sig:
                clin_sig = parts[layout.clin_sig]
            term = parts[layout.consequence]
            if layout.bcftools or "&" in term:
                term, rank = _most_severe(term, layout.bcftools)
            else:
                rank = SO_RANK.get(term, _UNKNOWN_RANK)
            key = rank * 2 + (0 if layout.canonical >= 0 and parts[layout.canonical] == "YES" else 1)
            if key < chosen_key:
                chosen, chosen_layout, chosen_term, chosen_key = parts, layout, term, key
    if chosen is None or chosen_layout is None:
        return None
    layout = chosen_layout
    impact = chosen[layout.impact].upper() if layout.impact >= 0 else ""
    gene = chosen[layout.gene] if layout.gene >= 0 else ""
    if not gene and layout.gene_id >= 0:
        gene = chosen[layout.gene_id]
    return ConsequenceCall(
        layout.tag,
        chosen_term,
        impact or SO_IMPACT.get(chosen_term, "MODIFIER"),
        gene,
        chosen[layout.hgvs_c] if layout.hgvs_c >= 0 else "",
        # VEP URL-escapes '=' in synonymous protein changes (p.Ser60%3D).
        chosen[layout.hgvs_p].replace("%3D", "=") if layout.hgvs_p >= 0 else "",
        max_af,
        clin_sig,
    )


def _most_severe(consequence: str, bcftools: bool) -> tuple[str, int]:
    best_term = ""
    best_rank = _UNKNOWN_RANK
    for raw in consequence.split("&"):
        term = normalise_term(raw, bcftools)
        rank = SO_RANK.get(term, _UNKNOWN_RANK)
        if rank < best_rank or not best_term:
            best_term, best_rank = term, rank
    return best_term, best_rank
