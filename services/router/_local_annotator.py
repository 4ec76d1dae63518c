"""The router's built-in, offline analysis provider.

Everything it reports is derived from the VariantMessage itself (plus an optional
gene file), deterministically, so it is always available, costs nothing, and is
fast enough to run on every variant of every job before any remote model is asked.

Quality — the record is "fail" when FILTER is anything but PASS or empty, else
high/medium/low by QUAL >= 50 / >= 20 / below (medium, the neutral tier, when
QUAL is "."). A call is "fail" on a failed FILTER or a no-call, else the weaker
of GQ (>= 30 high, >= 15 medium) and DP (>= 20 high, >= 10 medium), or the
record's tier when the call has neither.

Zygosity is relative to the message's ALT: het_alt carries it with another ALT
(1/2), other_alt carries only other ALTs (0/2 seen from ALT 1), haploid calls of
it are hemizygous, and a partly missing call that shows it (./1) counts as het.

Frequency tier — from the highest population AF found (gnomAD-style INFO keys,
AF_popmax/grpmax, ClinVar's AF_ESP/AF_EXAC/AF_TGP, and MAX_AF/gnomAD*_AF/AF inside
CSQ); the record's own INFO AF (this ALT's value) is used only when no population
source exists: common >= 5%, low_frequency 1-5%, rare 0.1-1%, ultra_rare < 0.1%,
unknown when no AF at all.

Classification — the first rule that applies:
  1. ClinVar (CLNSIG, else CSQ CLIN_SIG) pathogenic / likely_pathogenic / benign /
     likely_benign is taken as is, confidence from the review status; a ClinVar
     conflict stays "uncertain".
  2. AF >= 5% -> benign (ACMG BA1).
  3. AF 1-5% and LOW/MODIFIER (or no) predicted impact -> likely_benign (BS1-like).
  4. Otherwise "uncertain". A rare HIGH-impact loss-of-function call is listed as
     a PVS1 candidate in the criteria but not promoted: whether loss of function
     causes disease depends on the gene, which nothing offline knows.
  A failed FILTER halves the confidence.

Priority — the lowest-numbered tier any rule reaches; its reasons are the rules
that reached it:
  P1: ClinVar pathogenic/likely_pathogenic; HIGH impact and rare/ultra_rare.
  P2: HIGH impact with unknown frequency; MODERATE impact and rare/ultra_rare;
      ClinVar uncertain or conflicting; a structural variant (symbolic or
      breakend) that overlaps a gene.
  P3: MODERATE impact with unknown frequency; LOW/MODIFIER impact and
      rare/ultra_rare; no consequence annotation but rare/unknown frequency
      inside a gene from the gene index.
  P4: everything else (common or low-frequency, ClinVar benign, no evidence).
  ClinVar benign/likely_benign forces P4; a failed FILTER demotes one tier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from math import isnan
from typing import TYPE_CHECKING, cast

from vcf_agent.schema import varint
from vcf_agent.v1 import analysis_pb2, variant_pb2

from ._annotation_fields import (
    DEFAULT_CONTEXT,
    AnnotationContext,
    ConsequenceCall,
    info_strings,
    worst_consequence,
)
from ._answer_encoding import text_field
from ._gene_index import GeneLookup
from ._local_wire import VariantFields, encode_answer

if TYPE_CHECKING:
    # A type alias of the stub only.
    from ._local_wire import InfoValues

PROVIDER = "local"
MODEL = "local-annotator/1"

# Population databases, as VEP/vcfanno/gnomAD/ClinVar name them in INFO.
POPULATION_AF_KEYS: tuple[str, ...] = (
    "gnomAD_AF",
    "gnomADe_AF",
    "gnomADg_AF",
    "gnomad_AF",
    "gnomAD_exomes_AF",
    "gnomAD_genomes_AF",
    "gnomAD_AF_popmax",
    "AF_popmax",
    "AF_grpmax",
    "MAX_AF",
    "ExAC_AF",
    "AF_EXAC",
    "AF_ESP",
    "AF_TGP",
)

_TRANSITIONS = frozenset({"AG", "GA", "CT", "TC"})
# Upper-case REF+ALT base pairs; anything else (N, IUPAC codes, REF == ALT) has no substitution type.
_SUBSTITUTIONS = {
    ref + alt: "transition" if ref + alt in _TRANSITIONS else "transversion"
    for ref in "ACGT"
    for alt in "ACGT"
    if ref != alt
}
# One-character ALTs that are not a base: spanning deletion, no ALT, broken symbolic/breakend.
_SINGLE_NON_BASES = frozenset("*.<[]")
_SV_TYPES = frozenset({"DEL", "INS", "DUP", "INV", "CNV", "BND"})
_LOSS_OF_FUNCTION = frozenset(
    {
        "transcript_ablation",
        "exon_loss_variant",
        "splice_acceptor_variant",
        "splice_donor_variant",
        "stop_gained",
        "frameshift_variant",
        "start_lost",
    }
)
_CLINVAR_SEPARATORS = str.maketrans({"/": " ", "|": " ", ",": " ", "&": " ", ";": " "})

_RARE = frozenset({"rare", "ultra_rare"})
_TIER_NAMES = ("fail", "low", "medium", "high")
_TIERS = ("", "P1", "P2", "P3", "P4")
_ANNOTATION_TAGS = frozenset({"CSQ", "ANN", "BCSQ"})
_RELEVANT_INFO = frozenset({*POPULATION_AF_KEYS, *_ANNOTATION_TAGS, "AF", "CLNSIG"})
_NOTHING: frozenset[str] = frozenset()
_PASSING = ("PASS", ".")

# Wire tags (field number << 3 | wire type) of AnalysisResult's provider, model and status.
_TAG_PROVIDER = b"\x22"
_TAG_MODEL = b"\x2a"
_TAG_STATUS = b"\x30"
# Those three fields are the same in every answer, so they are encoded once.
_PROVIDER_MODEL_STATUS = b"".join(
    (
        text_field(_TAG_PROVIDER, PROVIDER),
        text_field(_TAG_MODEL, MODEL),
        _TAG_STATUS,
        varint(analysis_pb2.AnalysisResult.STATUS_OK),
    )
)
_NO_CONSEQUENCE = ("", "", "", "", "")


def variant_class(reference: str, alternate: str, svtype_info: str = "") -> tuple[str, str, str]:
    """(variant_class, substitution, sv_type) of one ALT against REF."""
    if len(alternate) == 1 and len(reference) == 1 and alternate not in _SINGLE_NON_BASES:
        # Most records are SNVs: settled before the symbolic and breakend checks.
        return "snv", _SUBSTITUTIONS.get((reference + alternate).upper(), ""), ""
    if alternate == "*":
        return "spanning_deletion", "", ""
    if not alternate or alternate == ".":
        return "no_alternate", "", ""
    first = alternate[0]
    if first == "<":
        kind = alternate[1:-1].split(":", 1)[0]
        if kind == "*":
            # gVCF's unobserved-allele placeholder, spelled <*> or <NON_REF>.
            kind = "NON_REF"
        return "symbolic", "", kind if kind in _SV_TYPES else (svtype_info or kind)
    if "[" in alternate or "]" in alternate or (len(alternate) > 1 and "." in (first, alternate[-1])):
        return "breakend", "", "BND"
    if "<" in alternate:
        # VCF 4.x contig insertion such as C<ctg1>.
        return "symbolic", "", "INS"
    ref_len, alt_len = len(reference), len(alternate)
    ref, alt = reference.upper(), alternate.upper()
    shortest = min(ref_len, alt_len)
    prefix = 0
    while prefix < shortest and ref[prefix] == alt[prefix]:
        prefix += 1
    suffix = 0
    while suffix < shortest - prefix and ref[ref_len - 1 - suffix] == alt[alt_len - 1 - suffix]:
        suffix += 1
    ref_core, alt_core = ref_len - prefix - suffix, alt_len - prefix - suffix
    if ref_core == 0 and alt_core == 0:
        return "no_alternate", "", ""
    if ref_core == 0:
        return "insertion", "", ""
    if alt_core == 0:
        return "deletion", "", ""
    if ref_core == alt_core:
        if ref_core == 1:
            return "snv", _SUBSTITUTIONS.get(ref[prefix] + alt[prefix], ""), ""
        return "mnv", "", ""
    return "complex", "", ""


def zygosity(alleles: Sequence[int], allele: int) -> str:
    """Zygosity of a call with respect to allele number `allele` (alt_index + 1).

    het_alt: this ALT plus another ALT (1/2); other_alt: carries only other ALTs;
    a partly missing call that shows this ALT (./1) counts as het, otherwise no_call.
    """
    count = len(alleles)
    if count == 2:
        first, second = alleles
        if first < 0 or second < 0:
            if first < 0 and second < 0:
                return "no_call"
            return "het" if allele in (first, second) else "no_call"
        if first == second:
            return "hom_ref" if first == 0 else ("hom_alt" if first == allele else "other_alt")
        if allele in (first, second):
            return "het" if 0 in (first, second) else "het_alt"
        return "other_alt"
    if count == 0:
        return "no_call"
    present = set(alleles)
    if -1 in present:
        return "het" if allele in present else "no_call"
    if count == 1:
        value = alleles[0]
        return "hemizygous" if value == allele else ("hom_ref" if value == 0 else "other_alt")
    if present == {0}:
        return "hom_ref"
    if allele not in present:
        return "other_alt"
    if len(present) == 1:
        return "hom_alt"
    return "het" if present == {0, allele} else "het_alt"


def _qual_level(quality: float) -> int:
    return 3 if quality >= 50 else 2 if quality >= 20 else 1


def call_quality(gq: int, dp: int, record_level: int) -> int:
    """Level 0..3: the weaker of GQ (>= 30, >= 15) and DP (>= 20, >= 10); the record's level if neither."""
    level = 4
    if gq >= 0:
        level = 3 if gq >= 30 else 2 if gq >= 15 else 1
    if dp >= 0:
        dp_level = 3 if dp >= 20 else 2 if dp >= 10 else 1
        if dp_level < level:
            level = dp_level
    return record_level if level == 4 else level


def allele_balance(depths: Sequence[int], allele: int) -> float:
    """Reads for this allele over all reads in AD; -1 when AD lacks the allele or has no reads."""
    if len(depths) <= allele:
        return -1.0
    alt = depths[allele]
    total = sum(depths)
    if total and min(depths) < 0:
        # Some producers write -1 for a missing depth; it must not shrink the total.
        total = sum(depth for depth in depths if depth > 0)
    if alt < 0 or total <= 0:
        return -1.0
    return alt / total


def allele_value(value: InfoValues, alt_index: int, alt_count: int) -> float:
    """This ALT's number from an INFO value (Number=A, =R or =1); -1 when absent or unparsable."""
    values = cast("Sequence[float]", value)
    strings = info_strings(value)
    if strings:
        parsed: list[float] = []
        for text in strings:
            try:
                parsed.append(float(text))
            except ValueError:
                parsed.append(-1.0)
        values = parsed
    size = len(values)
    if size == alt_count:
        number = values[alt_index]
    elif size == alt_count + 1:
        number = values[alt_index + 1]
    elif size == 1:
        number = values[0]
    else:
        return -1.0
    return -1.0 if isnan(number) else float(number)


def frequency_tier(af: float) -> str:
    if af < 0:
        return "unknown"
    if af >= 0.05:
        return "common"
    if af >= 0.01:
        return "low_frequency"
    if af >= 0.001:
        return "rare"
    return "ultra_rare"


def clinvar_class(significance: str) -> str:
    """pathogenic, likely_pathogenic, benign, likely_benign, uncertain, conflicting, or "" if none applies.

    Combined calls resolve to the weaker class (Pathogenic/Likely_pathogenic -> likely_pathogenic).
    """
    if not significance:
        return ""
    tokens = {token.strip("_") for token in significance.lower().translate(_CLINVAR_SEPARATORS).split()}
    pathogenic = bool(tokens & {"pathogenic", "likely_pathogenic"})
    benign = bool(tokens & {"benign", "likely_benign"})
    if (pathogenic and benign) or any(token.startswith("conflicting") for token in tokens):
        return "conflicting"
    if pathogenic:
        return "likely_pathogenic" if "likely_pathogenic" in tokens else "pathogenic"
    if benign:
        return "likely_benign" if "likely_benign" in tokens else "benign"
    if "uncertain_significance" in tokens:
        return "uncertain"
    return ""


def clinvar_confidence(review_status: str) -> float:
    """Confidence in a ClinVar assertion from its CLNREVSTAT (the star rating)."""
    status = review_status.lower()
    if "practice_guideline" in status or "expert_panel" in status:
        return 0.95
    if "multiple_submitters" in status:
        return 0.9
    if "no_assertion" in status or "no_classification" in status or "no_interpretation" in status:
        return 0.6
    return 0.8


def _info_text(info: Mapping[str, InfoValues], key: str) -> str:
    value = info.get(key)
    return ",".join(info_strings(value)) if value is not None else ""


def _info_ints(info: Mapping[str, InfoValues], key: str) -> tuple[int, ...]:
    """The numbers of an Integer INFO value; () when absent or of another type."""
    value = info.get(key)
    # The items of a value share one type, so the first tells.
    return cast("tuple[int, ...]", value) if value and type(value[0]) is int else ()


def variant_fields(variant: variant_pb2.VariantMessage) -> VariantFields:
    """What the compiled reader returns for a variant, read through protobuf: for single requests
    and for the payloads the reader leaves to upb."""
    return VariantFields(
        (
            variant.correlation_id,
            variant.job_id,
            variant.tenant_id,
            variant.chromosome,
            variant.position,
            variant.reference,
            variant.alternate,
            variant.alt_index,
            tuple(variant.all_alternates),
            variant.has_quality,
            variant.quality,
            tuple(variant.filters),
            {key: _info_values(value) for key, value in variant.info.items()},
            tuple(
                (c.sample, tuple(c.alleles), c.depth, c.genotype_quality, tuple(c.allele_depths))
                for c in variant.genotypes
            ),
        )
    )


def _info_values(value: variant_pb2.InfoValue) -> InfoValues:
    # One of the lists at most is set (a oneof); a flag has none.
    return tuple(value.strings.values) or tuple(value.ints.values) or tuple(value.floats.values)


class LocalAnnotator:
    """Derives an AnalysisResult carrying a LocalAnnotation from a VariantMessage, offline.

    `context` is the default header layout; pass a per-job one to `annotate` when
    files differ. The optional gene index adds overlapping genes.
    """

    provider = PROVIDER
    model = MODEL

    def __init__(
        self, context: AnnotationContext | None = None, gene_index: GeneLookup | None = None
    ) -> None:
        self._context = context or DEFAULT_CONTEXT
        self._genes = gene_index

    def annotate(
        self, variant: variant_pb2.VariantMessage, context: AnnotationContext | None = None
    ) -> analysis_pb2.AnalysisResult:
        """The provider answer for one variant message (`answer` is the batch path's)."""
        return analysis_pb2.AnalysisResult.FromString(self.answer(variant_fields(variant), context))

    def answer(self, variant: VariantFields, context: AnnotationContext | None = None) -> bytes:
        """The serialized AnalysisResult: ids copied from the variant, the LocalAnnotation in
        `annotation`; no latency, requested providers or variant, which the caller appends."""
        # One long function on purpose: this runs for every variant, and locals are far
        # cheaper than intermediate objects or messages.
        info = variant.info
        alt_index = variant.alt_index
        alt_count = len(variant.all_alternates) or 1
        alternate = variant.alternate
        kind, substitution, sv_type = variant_class(
            variant.reference,
            alternate,
            _info_text(info, "SVTYPE") if alternate[:1] == "<" and "SVTYPE" in info else "",
        )
        filters = variant.filters
        # FILTER is failed when it names anything but PASS (inline: hot path).
        failed = len(filters) > 1 or (bool(filters) and filters[0] not in _PASSING)
        if failed:
            record_level = 0
        elif variant.has_quality:
            record_level = _qual_level(variant.quality)
        else:
            record_level = 2

        # Which of the keys we read are present, in one C-level pass over the map.
        present = _RELEVANT_INFO.intersection(info) if info else _NOTHING
        call = None
        af = -1.0
        af_source = ""
        clinvar = ""
        if present:
            if not present.isdisjoint(_ANNOTATION_TAGS):
                call = worst_consequence(variant, context or self._context)
                if call is not None:
                    af, clinvar = call.max_af, call.clin_sig
                    if af >= 0:
                        af_source = call.source
            if not present.isdisjoint(POPULATION_AF_KEYS):
                for key in POPULATION_AF_KEYS:
                    if key in present:
                        number = allele_value(info[key], alt_index, alt_count)
                        if number > af:
                            af, af_source = number, key
            if af < 0 and "AF" in present:
                af = allele_value(info["AF"], alt_index, alt_count)
                af_source = "AF" if af >= 0 else ""
            if "CLNSIG" in present:
                clinvar = _info_text(info, "CLNSIG")
        freq_tier = frequency_tier(af)
        clinvar_kind = clinvar_class(clinvar)

        genes: list[str] = []
        if self._genes is not None:
            start = variant.position - 1
            genes = self._genes.overlapping(variant.chromosome, start, _span_end(variant, kind, start))

        tier, reasons = _priority(
            call, freq_tier, af, clinvar_kind, kind, sv_type, genes, filters if failed else ()
        )
        quality_tier = _TIER_NAMES[record_level]
        classification, confidence, criteria = _classify(
            call, freq_tier, af, af_source, clinvar, clinvar_kind, info, filters if failed else ()
        )
        rationale = _rationale(
            kind, call, genes, af, freq_tier, clinvar, quality_tier, classification, tier, reasons
        )
        consequence, impact, gene, hgvs_c, hgvs_p = call[1:6] if call is not None else _NO_CONSEQUENCE
        allele = alt_index + 1
        findings = []
        for sample, alleles, depth, genotype_quality, depths in variant.genotypes:
            zyg = zygosity(alleles, allele)
            level = 0 if failed or zyg == "no_call" else call_quality(genotype_quality, depth, record_level)
            balance = allele_balance(depths, allele) if depths else -1.0
            findings.append((sample, zyg, balance, _TIER_NAMES[level]))
        return encode_answer(
            variant.correlation_id,
            variant.job_id,
            variant.tenant_id,
            _PROVIDER_MODEL_STATUS,
            classification,
            confidence,
            criteria,
            rationale,
            kind,
            substitution,
            alt_count > 1,
            alt_count,
            quality_tier,
            freq_tier,
            af,
            consequence,
            impact,
            gene,
            hgvs_c,
            hgvs_p,
            clinvar,
            genes,
            tier,
            reasons,
            findings,
            sv_type,
        )


def _span_end(variant: VariantFields, kind: str, start: int) -> int:
    """0-based exclusive end of the reference bases a variant touches, for gene overlap."""
    if kind == "symbolic":
        end = _info_ints(variant.info, "END")
        if end and end[0] > start:
            return end[0]
        svlen = _info_ints(variant.info, "SVLEN")
        if svlen:
            return start + 1 + abs(svlen[0])
    return start + max(len(variant.reference), 1)


def _priority(
    call: ConsequenceCall | None,
    freq_tier: str,
    af: float,
    clinvar_kind: str,
    kind: str,
    sv_type: str,
    genes: list[str],
    failed_filters: Sequence[str],
) -> tuple[str, list[str]]:
    hits: list[tuple[int, str]] = []
    rare = freq_tier in _RARE
    if clinvar_kind in ("pathogenic", "likely_pathogenic"):
        hits.append((1, f"ClinVar {clinvar_kind}"))
    if call is not None:
        impact = call.impact
        if impact == "HIGH":
            if rare:
                hits.append((1, f"HIGH impact {call.consequence} and {freq_tier} (AF {af:.4g})"))
            elif freq_tier == "unknown":
                hits.append((2, f"HIGH impact {call.consequence}, frequency unknown"))
        elif impact == "MODERATE":
            if rare:
                hits.append((2, f"MODERATE impact {call.consequence} and {freq_tier} (AF {af:.4g})"))
            elif freq_tier == "unknown":
                hits.append((3, f"MODERATE impact {call.consequence}, frequency unknown"))
        elif rare:
            hits.append((3, f"{impact} impact {call.consequence} but {freq_tier} (AF {af:.4g})"))
    if clinvar_kind in ("uncertain", "conflicting"):
        hits.append((2, f"ClinVar {clinvar_kind}"))
    if genes and sv_type in _SV_TYPES:
        hits.append((2, f"structural variant {sv_type} overlaps {', '.join(genes)}"))
    elif genes and call is None and (rare or freq_tier == "unknown"):
        hits.append((3, f"inside {', '.join(genes)} without consequence annotation"))

    if clinvar_kind in ("benign", "likely_benign"):
        level, reasons = 4, [f"ClinVar {clinvar_kind}"]
    elif hits:
        level = min(hit[0] for hit in hits)
        reasons = [reason for hit_level, reason in hits if hit_level == level]
    elif freq_tier in ("common", "low_frequency"):
        level, reasons = 4, [f"{freq_tier} in the population (AF {af:.4g})"]
    else:
        level, reasons = 4, ["no impact, rarity or ClinVar evidence"]
    if failed_filters:
        if level < 4:
            reasons.append(f"FILTER {';'.join(failed_filters)}: demoted from P{level}")
            level += 1
        else:
            reasons.append(f"FILTER {';'.join(failed_filters)}")
    return _TIERS[level], reasons


def _classify(
    call: ConsequenceCall | None,
    freq_tier: str,
    af: float,
    af_source: str,
    clinvar: str,
    clinvar_kind: str,
    info: Mapping[str, InfoValues],
    failed_filters: Sequence[str],
) -> tuple[str, float, list[str]]:
    criteria: list[str] = []
    impact = call.impact if call is not None else ""
    if clinvar_kind in ("pathogenic", "likely_pathogenic", "benign", "likely_benign"):
        review = _info_text(info, "CLNREVSTAT")
        classification = clinvar_kind
        confidence = round(
            clinvar_confidence(review) - (0.1 if clinvar_kind.startswith("likely") else 0.0), 3
        )
        criteria.append(f"clinvar:{clinvar}")
        if review:
            criteria.append(f"clinvar_review:{review}")
    elif clinvar_kind == "conflicting":
        classification, confidence = "uncertain", 0.5
        criteria.append(f"clinvar:{clinvar}")
    elif freq_tier == "common":
        classification = "benign"
        # A cohort's own AF says less about the population than a database does.
        confidence = 0.6 if af_source == "AF" else 0.8
        criteria.append(f"BA1:{af_source}={af:.4g}")
    elif freq_tier == "low_frequency" and impact in ("", "LOW", "MODIFIER"):
        classification = "likely_benign"
        confidence = 0.5 if af_source == "AF" else 0.6
        criteria.append(f"BS1:{af_source}={af:.4g}")
        criteria.append(f"impact:{impact or 'none'}")
    else:
        classification = "uncertain"
        confidence = 0.4 if call is not None or freq_tier != "unknown" else 0.3
        if call is not None and call.consequence in _LOSS_OF_FUNCTION:
            criteria.append(f"PVS1_candidate:{call.consequence}")
        if freq_tier == "ultra_rare":
            criteria.append(f"PM2:{af_source}={af:.4g}")
        if impact:
            criteria.append(f"impact:{impact}")
    if failed_filters:
        confidence = round(confidence * 0.5, 3)
        criteria.append(f"quality:fail:{';'.join(failed_filters)}")
    # Rounded only where arithmetic made it necessary: the other confidences are literals.
    return classification, confidence, criteria


def _rationale(
    kind: str,
    call: ConsequenceCall | None,
    genes: list[str],
    af: float,
    freq_tier: str,
    clinvar: str,
    quality_tier: str,
    classification: str,
    tier: str,
    reasons: list[str],
) -> str:
    if call is not None:
        what = f"{call.gene or ', '.join(genes) or 'no gene'}: {call.consequence} ({call.impact})"
    else:
        what = f"{', '.join(genes) or 'no gene'}: no consequence annotation"
    frequency = f"AF {af:.4g} ({freq_tier})" if af >= 0 else "frequency unknown"
    return (
        f"{kind} in {what}; {frequency}; ClinVar {clinvar or 'none'}; quality {quality_tier}"
        f" -> {classification}, {tier}: {'; '.join(reasons)}"
    )
