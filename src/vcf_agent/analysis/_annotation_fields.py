"""Structured values out of VEP CSQ, SnpEff ANN and bcftools BCSQ annotation strings.

Each tool packs one transcript-level prediction per comma-separated entry and one
field per `|`; which field sits where is only stated in the header's INFO
Description. Ingest reads each job's header into an AnnotationContext message that
rides on every batch of the job (VariantBatch.annotation_context); its layout is
resolved once per distinct context and the per-variant code indexes into split
entries without any name lookups.

Of the entries that belong to the message's ALT allele (VEP: by ALLELE_NUM, else by
VEP's allele notation, which drops a first base shared by all alleles and writes
'-' for a deletion), the transcript is chosen as clinical reporting does: VEP's
PICK flag, else the MANE Select transcript, else the canonical one, else any; among
equals the most severe Sequence Ontology term wins (Ensembl's ranking, extended
with the SnpEff and bcftools-csq vocabularies).

Population frequencies are read from every entry of the allele (they describe the
allele, not the transcript), ClinVar's CLIN_SIG likewise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from vcf_agent.v1 import variant_pb2

if TYPE_CHECKING:
    from ._variant_fields import InfoValues, VariantFields

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
# Sequence Ontology terms of a predicted null (loss-of-function) variant, ACMG/AMP 2015 PVS1.
LOSS_OF_FUNCTION = frozenset(
    {
        "transcript_ablation",
        "exon_loss_variant",
        "exon_loss",
        "splice_acceptor_variant",
        "splice_donor_variant",
        "stop_gained",
        "frameshift_variant",
        "start_lost",
    }
)
# Terms that put a prediction outside a protein-coding transcript whatever its biotype field says.
_NON_CODING_TERMS = frozenset(
    {
        "non_coding_transcript_variant",
        "non_coding_transcript_exon_variant",
        "nc_transcript_variant",
        "non_coding_exon_variant",
        "NMD_transcript_variant",
    }
)
# Transcript preference, best first: VEP's PICK flag, the MANE Select transcript, the canonical one.
_CHOICES = ("PICK", "MANE_SELECT", "CANONICAL", "most_severe")


def _index_of(names: Sequence[str], *candidates: str) -> int:
    """Position of the first candidate present (case-insensitive); the candidates are in preference order."""
    lowered = [name.lower() for name in names]
    for candidate in candidates:
        if candidate in lowered:
            return lowered.index(candidate)
    return _MISSING


# 1000 Genomes and ESP population prefixes VEP writes (AFR_AF, EUR_MAF, AA_AF, EA_AF...).
_POPULATION_PREFIXES = frozenset({"afr", "amr", "eas", "eur", "sas", "asn", "aa", "ea"})


def is_frequency_field(name: str) -> bool:
    """Whether an annotation subfield holds a population allele frequency: VEP's AF (1000 Genomes),
    MAX_AF, gnomAD*/ExAC* AF fields and per-population AF/MAF fields (old VEP: GMAF, EUR_MAF...)."""
    lowered = name.lower()
    if lowered in ("af", "max_af", "gmaf", "minor_allele_freq"):
        return True
    parts = lowered.split("_")
    if lowered.startswith(("gnomad", "exac")):
        return "af" in parts[1:] or lowered.endswith("af")
    return len(parts) == 2 and parts[0] in _POPULATION_PREFIXES and parts[1] in ("af", "maf")


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
    feature: int
    biotype: int
    hgvs_c: int
    hgvs_p: int
    pick: int
    mane_select: int
    canonical: int
    clin_sig: int
    dna_change: int
    frequencies: tuple[int, ...]
    # Split only as far as the last field read: long VEP entries carry dozens we ignore.
    max_split: int
    bcftools: bool
    # Field names as the header spells them, in layout order.
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
            "feature": _index_of(names, "feature", "feature_id", "transcript"),
            "biotype": _index_of(names, "biotype", "transcript_biotype"),
            "hgvs_c": _index_of(names, "hgvsc", "hgvs.c"),
            "hgvs_p": _index_of(names, "hgvsp", "hgvs.p"),
            "pick": _index_of(names, "pick"),
            "mane_select": _index_of(names, "mane_select"),
            "canonical": _index_of(names, "canonical"),
            "clin_sig": _index_of(names, "clin_sig"),
            "dna_change": _index_of(names, "dna_change"),
        }
        frequencies = tuple(i for i, name in enumerate(names) if is_frequency_field(name))
        return cls(
            tag=tag,
            frequencies=frequencies,
            max_split=max([*positions.values(), *frequencies, 0]) + 1,
            bcftools=tag == "BCSQ",
            names=tuple(names),
            **positions,
        )


@dataclass(frozen=True, slots=True)
class AnnotationContext:
    """A job's header-derived annotation layout (see VariantBatch.annotation_context).

    Empty field lists fall back to each tool's default layout, so a message is still
    readable when no header travelled with it; `population_keys` are the INFO keys the
    header declares as population frequencies, `clinvar_keys` the ClinVar keys it declares.
    """

    csq_fields: tuple[str, ...] = ()
    ann_fields: tuple[str, ...] = ()
    bcsq_fields: tuple[str, ...] = ()
    population_keys: tuple[str, ...] = ()
    clinvar_keys: tuple[str, ...] = ()
    layouts: tuple[_Layout, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        layouts = (
            _Layout.resolve("CSQ", self.csq_fields or DEFAULT_CSQ_FIELDS),
            _Layout.resolve("ANN", self.ann_fields or DEFAULT_ANN_FIELDS),
            _Layout.resolve("BCSQ", self.bcsq_fields or DEFAULT_BCSQ_FIELDS),
        )
        object.__setattr__(self, "layouts", layouts)

    @classmethod
    def from_message(cls, message: variant_pb2.AnnotationContext) -> AnnotationContext:
        return cls(
            csq_fields=tuple(message.csq_fields),
            ann_fields=tuple(message.ann_fields),
            bcsq_fields=tuple(message.bcsq_fields),
            population_keys=tuple(message.population_keys),
            clinvar_keys=tuple(message.clinvar_keys),
        )

    @classmethod
    def from_info_descriptions(cls, descriptions: Mapping[str, str]) -> AnnotationContext:
        """From INFO ID -> Description, annotation layouts only (e.g. from a pysam header)."""

        def fields(tag: str) -> tuple[str, ...]:
            return parse_format_description(descriptions.get(tag) or "")

        return cls(csq_fields=fields("CSQ"), ann_fields=fields("ANN"), bcsq_fields=fields("BCSQ"))


DEFAULT_CONTEXT = AnnotationContext()
_CONTEXTS: dict[bytes, AnnotationContext] = {}


def context_of(message: variant_pb2.AnnotationContext) -> AnnotationContext:
    """The resolved context of a batch's message; a job's batches share one, resolved once."""
    key = message.SerializeToString(deterministic=True)
    if not key:
        return DEFAULT_CONTEXT
    context = _CONTEXTS.get(key)
    if context is None:
        if len(_CONTEXTS) >= 256:
            _CONTEXTS.clear()
        context = _CONTEXTS[key] = AnnotationContext.from_message(message)
    return context


class ConsequenceCall(NamedTuple):
    """The chosen transcript-level prediction for one ALT allele."""

    source: str
    consequence: str
    impact: str
    gene: str
    hgvs_c: str
    hgvs_p: str
    transcript: str
    biotype: str
    # PICK, MANE_SELECT, CANONICAL or most_severe: why this transcript.
    choice: str
    # A predicted null variant in a protein-coding transcript (ACMG PVS1's first condition).
    null_in_coding: bool
    # The whole '&'-joined term list of the entry, as written.
    terms: str


class AnnotationReading(NamedTuple):
    """What one ALT's annotation entries say: the chosen call and the allele-level evidence."""

    call: ConsequenceCall | None
    # Highest population AF over the allele's entries and the field it came from; -1, "" if none.
    max_af: float
    af_field: str
    # Whether any entry of this allele came from a layout that has population fields: then a
    # missing value means "absent from those databases", not "unknown".
    frequencies_assessed: bool
    clin_sig: str
    # bcftools csq compound links ("@POS") found instead of a consequence of this record's own.
    compound_links: tuple[int, ...]
    # The first population field whose value for the allele was text, not a number ("" if none):
    # it may hold a higher frequency, so max_af is then a lower bound only.
    unreadable_field: str = ""


_NOTHING_READ = AnnotationReading(None, -1.0, "", False, "", ())


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


def _entries(value: InfoValues) -> Sequence[str]:
    """Annotation entries; tolerates producers that kept the comma-joined string unsplit."""
    values = info_strings(value)
    if len(values) == 1 and "," in values[0]:
        return values[0].split(",")
    return values


def parse_frequency(text: str, allele: str) -> tuple[float, bool]:
    """Largest of '&'-joined frequencies (VEP joins one per co-located known variant), -1 when
    none is listed; and whether a value for this allele was text no number could be read from.
    Old VEP writes "ALLELE:FREQ" (GMAF=A:0.348): only this allele's value counts, as the named
    allele may be another one (the minor allele can be the reference)."""
    best = -1.0
    unreadable = False
    for part in text.split("&"):
        if not part or part == ".":
            continue
        named, colon, number_text = part.rpartition(":")
        if colon and named != allele:
            continue
        try:
            number = float(number_text)
        except ValueError:
            unreadable = True
            continue
        if number > best:
            best = number
    return best, unreadable


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


def _compound_links(entry: str) -> list[int]:
    """Positions an '@POS' BCSQ entry points at (bcftools csq: "@123" says that the consequence
    of the compound change this record takes part in is annotated at position 123)."""
    links = []
    for text in entry.split("@")[1:]:
        digits = text.split(",", 1)[0].strip()
        if digits.isdigit():
            links.append(int(digits))
    return links


def read_annotations(
    variant: VariantFields,
    context: AnnotationContext = DEFAULT_CONTEXT,
    linked: Mapping[int, VariantFields] | None = None,
) -> AnnotationReading:
    """The chosen prediction for this ALT across CSQ, ANN and BCSQ (earlier tag wins ties), with
    population AF and ClinVar significance gathered from every entry of the allele.

    `linked` maps positions of the same chromosome to other records of the same batch, so a
    bcftools csq compound link ('@POS') is followed to the record that carries the haplotype's
    consequence; the entries taken from there are those whose dna_change names this record's
    own change (bcftools joins the compound's changes with '+').
    """
    info = variant.info
    # Entries of a single-ALT record all describe that ALT, whatever allele spelling the tool chose
    # (VEP writes SV alleles as e.g. "deletion"), so matching is only needed for multi-allelic records.
    matcher = _AlleleMatcher(variant) if len(variant.all_alternates) > 1 else None
    chosen: list[str] | None = None
    chosen_layout: _Layout | None = None
    chosen_term = ""
    chosen_choice = ""
    # choice * (ranks + 1) + rank: one int compare orders by transcript preference, then severity.
    width = _UNKNOWN_RANK + 1
    chosen_key = len(_CHOICES) * width
    max_af = -1.0
    af_field = ""
    unreadable_field = ""
    assessed = False
    clin_sig = ""
    links: list[int] = []
    for layout in context.layouts:
        value = info.get(layout.tag)
        if value is None:
            continue
        entries: Iterable[str] = _entries(value)
        if layout.bcftools:
            entries, links = _bcsq_entries(variant, entries, layout, linked)
        for entry in entries:
            parts = entry.split("|", layout.max_split)
            if len(parts) < layout.max_split:
                parts.extend([""] * (layout.max_split - len(parts)))
            if matcher is not None and not matcher.matches(parts, layout):
                continue
            if layout.frequencies:
                assessed = True
                allele = parts[layout.allele] if layout.allele >= 0 else ""
                for index in layout.frequencies:
                    af, unreadable = parse_frequency(parts[index], allele)
                    if af > max_af:
                        max_af, af_field = af, f"{layout.tag}:{layout.names[index]}"
                    if unreadable and not unreadable_field:
                        unreadable_field = f"{layout.tag}:{layout.names[index]}"
            if layout.clin_sig >= 0 and not clin_sig:
                clin_sig = parts[layout.clin_sig]
            term = parts[layout.consequence]
            if layout.bcftools or "&" in term:
                term, rank = _most_severe(term, layout.bcftools)
            else:
                rank = SO_RANK.get(term, _UNKNOWN_RANK)
            choice = _choice(parts, layout)
            key = choice * width + rank
            if key < chosen_key:
                chosen, chosen_layout, chosen_term, chosen_key = parts, layout, term, key
                chosen_choice = _CHOICES[choice]
    if chosen is None or chosen_layout is None:
        if not (assessed or clin_sig or links):
            return _NOTHING_READ
        return AnnotationReading(None, max_af, af_field, assessed, clin_sig, tuple(links), unreadable_field)
    return AnnotationReading(
        _call(chosen, chosen_layout, chosen_term, chosen_choice),
        max_af,
        af_field,
        assessed,
        clin_sig,
        tuple(links),
        unreadable_field,
    )


def _bcsq_entries(
    variant: VariantFields,
    entries: Iterable[str],
    layout: _Layout,
    linked: Mapping[int, VariantFields] | None,
) -> tuple[list[str], list[int]]:
    """This record's own BCSQ entries plus, for each '@POS' link, the linked record's entries that
    describe this record's change; and the links that could not be followed within the batch."""
    own: list[str] = []
    unresolved: list[int] = []
    for entry in entries:
        if not entry.startswith("@"):
            own.append(entry)
            continue
        for position in _compound_links(entry):
            target = linked.get(position) if linked else None
            value = target.info.get("BCSQ") if target is not None else None
            if value is None:
                unresolved.append(position)
                continue
            mine = f"{variant.position}{variant.reference}>{variant.alternate}"
            for candidate in _entries(value):
                if candidate.startswith("@"):
                    continue
                change = candidate.split("|", layout.max_split)
                if layout.dna_change < 0 or (
                    layout.dna_change < len(change) and mine in change[layout.dna_change].split("+")
                ):
                    own.append(candidate)
    return own, unresolved


def _choice(parts: list[str], layout: _Layout) -> int:
    if layout.pick >= 0 and parts[layout.pick] == "1":
        return 0
    if layout.mane_select >= 0 and parts[layout.mane_select]:
        return 1
    if layout.canonical >= 0 and parts[layout.canonical] == "YES":
        return 2
    return 3


def _call(parts: list[str], layout: _Layout, term: str, choice: str) -> ConsequenceCall:
    impact = parts[layout.impact].upper() if layout.impact >= 0 else ""
    gene = parts[layout.gene] if layout.gene >= 0 else ""
    if not gene and layout.gene_id >= 0:
        gene = parts[layout.gene_id]
    biotype = parts[layout.biotype] if layout.biotype >= 0 else ""
    raw_terms = parts[layout.consequence]
    terms = {normalise_term(t, layout.bcftools) for t in raw_terms.split("&")}
    # Only a protein-coding transcript can carry a null variant in ACMG's sense; bcftools csq
    # and SnpEff name the biotype "protein_coding" as VEP does.
    coding = (not biotype or biotype == "protein_coding") and terms.isdisjoint(_NON_CODING_TERMS)
    return ConsequenceCall(
        layout.tag,
        term,
        impact or SO_IMPACT.get(term, "MODIFIER"),
        gene,
        parts[layout.hgvs_c] if layout.hgvs_c >= 0 else "",
        # VEP URL-escapes '=' in synonymous protein changes (p.Ser60%3D).
        parts[layout.hgvs_p].replace("%3D", "=") if layout.hgvs_p >= 0 else "",
        parts[layout.feature] if layout.feature >= 0 else "",
        biotype,
        choice,
        coding and not terms.isdisjoint(LOSS_OF_FUNCTION),
        raw_terms,
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
