"""The router's built-in, offline analysis provider.

Everything it reports is derived from the VariantMessage and the job's annotation context
(built from the job's own VCF header, see VariantBatch.annotation_context), plus an
optional gene file, deterministically, so it is always available, costs nothing, and is
fast enough to run on every variant of every job before any remote model is asked.

Quality — the record is "fail" when FILTER is anything but PASS or empty, else
high/medium/low by QUAL >= 50 / >= 20 / below, and "unknown" when QUAL is "."
(the file says nothing of it: structural-variant callers and annotated extracts
often leave it out). A call is "fail" on a failed FILTER or a no-call, else the
weaker of GQ (>= 30 high, >= 15 medium) and DP (>= 20 high, >= 10 medium), or the
record's tier when the call has neither.

Zygosity is relative to the message's ALT: het_alt carries it with another ALT
(1/2), other_alt carries only other ALTs (0/2 seen from ALT 1), haploid calls of
it are hemizygous, and a partly missing call that shows it (./1) counts as het.

Population frequency — only from population databases: the frequency fields of the
job's CSQ (AF, MAX_AF, gnomAD*/ExAC* AF fields, per-population AF/MAF) and the INFO
keys its header declares as population frequencies (gnomAD, ExAC, ESP, 1000 Genomes,
TOPMed...; see services/ingest/_annotation_context.py). Never the file's own AF/AC/AN:
a cohort of ten samples cannot show an allele rarer than 5%. The highest value over
the sources wins (ClinGen SVI: BA1 in any continental population) and the field it came
from is reported. Tiers: common > 5%, low_frequency 1-5%, rare 0.1-1%, ultra_rare
< 0.1%, absent (the file was annotated with population data and none lists the
allele), unknown (no population data in the file).

Classification — ACMG/AMP 2015 criteria the file's evidence supports (BA1, BS1,
PM2_Supporting; PVS1 assessed but not applied: see _acmg), combined by the guideline's
Table 5. not_classified when nothing could be assessed (no population data, no
consequence, no ClinVar) or the allele is no variant (`*`, `<*>`, `<NON_REF>`). Every
assessed criterion is stored with its value and source field (LocalAnnotation.acmg_criteria);
`criteria` lists the codes of those met. ClinVar's assertion (CLNSIG/CLNREVSTAT/CLNSIGCONF
from INFO, else CLIN_SIG from CSQ) is reported with its review status and source and
drives the priority, but is not ACMG evidence (PP5/BP6 retired by ClinGen SVI 2018); a
conflicting interpretation is reported as conflicting, never resolved. A failed FILTER
halves the confidence.

Priority — the lowest-numbered tier any rule reaches; its reasons are the rules
that reached it:
  P1: ClinVar pathogenic/likely_pathogenic; HIGH impact and rare/absent.
  P2: HIGH impact with unknown frequency; MODERATE impact and rare/absent;
      ClinVar uncertain or conflicting; a structural variant (symbolic or
      breakend) that overlaps a gene.
  P3: MODERATE impact with unknown frequency; LOW/MODIFIER impact and
      rare/absent; no consequence annotation but rare/unknown frequency
      inside a gene from the gene index.
  P4: everything else (common or low-frequency, ClinVar benign, no evidence).
  HIGH impact counts only in a protein-coding transcript (a splice_donor_variant in a
  pseudogene is not a null variant). ClinVar benign/likely_benign forces P4 unless ClinVar
  also says pathogenic; a failed FILTER demotes one tier.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from math import isnan
from typing import TYPE_CHECKING, NamedTuple, cast

from vcf_agent.compiled import compiled_module
from vcf_agent.schema import varint
from vcf_agent.v1 import analysis_pb2, variant_pb2
from vcf_agent.v1 import wire_numbers as wire

from ._acmg import (
    NOT_CLASSIFIED,
    UNCERTAIN,
    Criterion,
    combine,
    frequency_criteria,
    null_variant_criterion,
)
from ._annotation_fields import (
    DEFAULT_CONTEXT,
    AnnotationContext,
    AnnotationReading,
    ConsequenceCall,
    info_strings,
    read_annotations,
)
from ._answer_encoding import text_field
from ._gene_index import GeneLookup
from ._variant_fields import VariantFields, variant_fields

if TYPE_CHECKING:
    from ._variant_fields import Genotype, InfoValues

PROVIDER = "local"
MODEL = "local-annotator/2"

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
# Alleles that are no variant of their own: nothing to classify.
_NOT_VARIANTS = frozenset({"spanning_deletion", "no_alternate"})
_CLINVAR_SEPARATORS = str.maketrans({"/": " ", "|": " ", ",": " ", "&": " ", ";": " "})
# ClinVar's numeric CLNSIG of its VCFs before 2017.
_CLINVAR_CODES = {
    "0": "uncertain_significance",
    "2": "benign",
    "3": "likely_benign",
    "4": "likely_pathogenic",
    "5": "pathogenic",
}

_RARE = frozenset({"rare", "ultra_rare", "absent"})
_TIER_NAMES = ("fail", "low", "medium", "high", "unknown")
# The record's quality level when QUAL is missing: _TIER_NAMES' "unknown".
_UNKNOWN_QUALITY = 4
_TIERS = ("", "P1", "P2", "P3", "P4")
_ANNOTATION_TAGS = frozenset({"CSQ", "ANN", "BCSQ"})
_PASSING = ("PASS", ".")
_CONFIDENCE = {
    "pathogenic": 0.9,
    "likely_pathogenic": 0.7,
    UNCERTAIN: 0.3,
    "likely_benign": 0.7,
    "benign": 0.9,
    NOT_CLASSIFIED: 0.1,
}
_OK = analysis_pb2.AnalysisResult.STATUS_OK
# AnalysisResult's provider, model and status are the same in every answer, so they are encoded
# once, for the compiled encoder.
_PROVIDER_MODEL_STATUS = b"".join(
    (
        text_field(wire.ANALYSIS_RESULT_PROVIDER_TAG, PROVIDER),
        text_field(wire.ANALYSIS_RESULT_MODEL_TAG, MODEL),
        wire.ANALYSIS_RESULT_STATUS_TAG,
        varint(wire.ANALYSIS_RESULT_STATUS_OK),
    )
)
_COMPILED = compiled_module("vcf_agent.analysis._local_wire")
# The compiled answer encoder (see _local_wire.pyi), or None to build the answer through protobuf.
_encode_answer: Callable[..., bytes] | None = None if _COMPILED is None else _COMPILED.encode_answer


class _Answer(NamedTuple):
    """An answer's values: AnalysisResult's from `classification` on, then its LocalAnnotation's
    (encode_answer's order)."""

    classification: str
    confidence: float
    criteria: list[str]
    rationale: str
    variant_class: str
    substitution: str
    multi_allelic: bool
    allele_count: int
    quality_tier: str
    frequency_tier: str
    population_af: float
    consequence: str
    impact: str
    gene: str
    hgvs_c: str
    hgvs_p: str
    clinvar_significance: str
    overlapping_genes: list[str]
    priority_tier: str
    priority_reasons: list[str]
    # (sample, zygosity, allele_balance, call_quality) each, or, compiled, the LocalAnnotation
    # `samples` fields they encode to (_local_wire.encoded_findings).
    samples: list[tuple[str, str, float, str]] | bytes
    sv_type: str
    acmg_criteria: list[tuple[str, str, bool, str, str, str]]
    population_af_source: str
    clinvar_review_status: str
    clinvar_conflicts: str
    clinvar_source: str
    transcript: str
    biotype: str
    transcript_choice: str


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
    """Level 1..3: the weaker of GQ (>= 30, >= 15) and DP (>= 20, >= 10); else the record's (0..4)."""
    level = 4  # neither seen yet: above any level GQ or DP gives
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


def allele_value(value: InfoValues, alt_index: int, alt_count: int) -> float | None:
    """This ALT's number from an INFO value (Number=A, =R or =1): -1 when the value has none for
    it (`.`, in its place: variant.proto's IntList.RESERVED_MISSING, NaN or the text `.`), None when it
    cannot be read: a count that fits none of those Numbers, or text that is no number."""
    size = len(value)
    if size == alt_count:
        item = value[alt_index]
    elif size == alt_count + 1:
        item = value[alt_index + 1]
    elif size == 1:
        item = value[0]
    else:
        return None
    if isinstance(item, str):
        if item == ".":
            return -1.0
        try:
            number = float(item)
        except ValueError:
            return None
    else:
        number = float(item)
    return -1.0 if isnan(number) or number == wire.INT_LIST_RESERVED_MISSING else number


def sample_findings(
    genotypes: Sequence[Genotype], allele: int, failed: bool, record_level: int
) -> list[tuple[str, str, float, str]]:
    """(sample, zygosity, allele_balance, call_quality) of each call that is not hom-ref, for
    allele number `allele` of a record whose quality level is `record_level` (0..4); every call
    fails with the record's FILTER. The pure-Python twin of _local_wire.sample_findings.

    A hom-ref call gets no finding: it holds no evidence about the ALT (its GT is stored with
    the variant's genotypes), and in a cohort it is nearly every call. In the 2,504-sample
    preset (279 carriers per variant) every answer carried 2,504 findings through the router,
    the aggregator, the writer and the analyses table (65 kB stored per answer), and a query
    page of 100 such variants spent 1.9 s turning them into JSON.
    """
    findings = []
    for sample, alleles, depth, genotype_quality, depths in genotypes:
        zyg = zygosity(alleles, allele)
        if zyg == "hom_ref":
            continue
        level = 0 if failed or zyg == "no_call" else call_quality(genotype_quality, depth, record_level)
        balance = allele_balance(depths, allele) if depths else -1.0
        findings.append((sample, zyg, balance, _TIER_NAMES[level]))
    return findings


def frequency_tier(af: float, assessed: bool) -> str:
    """Tier of a population AF; `assessed` says the file carried population data at all."""
    if af < 0:
        return "absent" if assessed else "unknown"
    if af > 0.05:
        return "common"
    if af >= 0.01:
        return "low_frequency"
    if af >= 0.001:
        return "rare"
    return "ultra_rare"


def clinvar_class(significance: str, review_status: str = "") -> str:
    """pathogenic, likely_pathogenic, benign, likely_benign, uncertain_significance, conflicting,
    or "" if none applies (drug_response, risk_factor, not_provided...).

    Combined calls resolve to the weaker class (Pathogenic/Likely_pathogenic -> likely_pathogenic);
    pathogenic together with benign, ClinVar's "Conflicting interpretations/classifications of
    pathogenicity", or a review status saying the submissions conflict (CLNREVSTAT
    "criteria_provided,_conflicting_interpretations", or "conf" in ClinVar's VCFs before 2017,
    whose CLNSIG then often reads 255, "other") is conflicting: reported as such, never resolved.
    """
    if not significance:
        return ""
    tokens = _clinvar_tokens(significance)
    tokens = {_CLINVAR_CODES.get(token, token) for token in tokens}
    pathogenic = bool(tokens & {"pathogenic", "likely_pathogenic"})
    benign = bool(tokens & {"benign", "likely_benign"})
    conflicting_review = any(
        token == "conf" or token.startswith("conflicting") for token in _clinvar_tokens(review_status)
    )
    if (pathogenic and benign) or conflicting_review or any(t.startswith("conflicting") for t in tokens):
        return "conflicting"
    if pathogenic:
        return "likely_pathogenic" if "likely_pathogenic" in tokens else "pathogenic"
    if benign:
        return "likely_benign" if "likely_benign" in tokens else "benign"
    if "uncertain_significance" in tokens:
        return "uncertain_significance"
    return ""


def _clinvar_tokens(text: str) -> set[str]:
    """The terms of a CLNSIG or CLNREVSTAT value, split at ClinVar's separators (',' between
    alleles or terms, '|' between its pre-2017 per-condition records, '/' within combined terms)."""
    return {token.strip("_") for token in text.lower().translate(_CLINVAR_SEPARATORS).split()}


def _info_text(info: Mapping[str, InfoValues], key: str) -> str:
    value = info.get(key)
    return ",".join(info_strings(value)) if value is not None else ""


def _info_ints(info: Mapping[str, InfoValues], key: str) -> tuple[int, ...]:
    """The numbers of an Integer INFO value; () when absent or of another type."""
    value = info.get(key)
    # The items of a value share one type, so the first tells.
    return cast("tuple[int, ...]", value) if value and type(value[0]) is int else ()


# Each call's findings: compiled when built, and then already encoded, as no Python value of a
# cohort's calls or findings is needed (the same bytes as protobuf's for the twin's values,
# tests/router/test_sample_findings.py).
_sample_findings: Callable[
    [Sequence[Genotype], int, bool, int], list[tuple[str, str, float, str]] | bytes
] = sample_findings if _COMPILED is None else _COMPILED.encoded_findings


class LocalAnnotator:
    """Derives an AnalysisResult carrying a LocalAnnotation from a VariantMessage, offline.

    `context` is the layout used when a batch brings none; the optional gene index adds
    overlapping genes. `bs1_af` and `pm2_af` are the ACMG BS1 and PM2 thresholds (see _acmg).
    """

    provider = PROVIDER
    model = MODEL

    def __init__(
        self,
        context: AnnotationContext | None = None,
        gene_index: GeneLookup | None = None,
        *,
        bs1_af: float = 0.01,
        pm2_af: float = 0.0,
    ) -> None:
        self._context = context or DEFAULT_CONTEXT
        self._genes = gene_index
        self._bs1_af = bs1_af
        self._pm2_af = pm2_af

    def annotate(
        self, variant: variant_pb2.VariantMessage, context: AnnotationContext | None = None
    ) -> analysis_pb2.AnalysisResult:
        """The provider answer for one variant message, read and built through protobuf (`answer`
        is the batch path's, compiled when built; tests/router/test_variant_reader.py requires
        equal bytes)."""
        fields = variant_fields(variant)
        return _result(fields, self._evaluate(fields, context, None))

    def answer(
        self,
        variant: VariantFields,
        context: AnnotationContext | None = None,
        linked: Mapping[int, VariantFields] | None = None,
    ) -> bytes:
        """The serialized AnalysisResult: ids copied from the variant, the LocalAnnotation in
        `annotation`; no latency, requested providers or variant, which the caller appends.
        `linked` holds the batch's other records of the same chromosome by position, for
        bcftools csq '@' links."""
        values = self._evaluate(variant, context, linked)
        if _encode_answer is None:
            # The pure-Python twin of the compiled encoder: the same bytes, through protobuf.
            return _result(variant, values).SerializeToString()
        return _encode_answer(
            variant.correlation_id, variant.job_id, variant.tenant_id, _PROVIDER_MODEL_STATUS, *values
        )

    def _evaluate(
        self,
        variant: VariantFields,
        context: AnnotationContext | None,
        linked: Mapping[int, VariantFields] | None,
    ) -> _Answer:
        """Every value of the answer; one long function on purpose: it runs for every variant."""
        context = context or self._context
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
        failed = len(filters) > 1 or (bool(filters) and filters[0] not in _PASSING)
        if failed:
            record_level = 0
        elif variant.has_quality:
            record_level = _qual_level(variant.quality)
        else:
            record_level = _UNKNOWN_QUALITY

        reading = _NO_READING
        if not _ANNOTATION_TAGS.isdisjoint(info):
            reading = read_annotations(variant, context, linked)
        call = reading.call
        af, af_source = reading.max_af, reading.af_field
        assessed = reading.frequencies_assessed
        unreadable = reading.unreadable_field
        for key in context.population_keys:
            value = info.get(key)
            # A declared population key missing from a record: the database does not list it.
            assessed = True
            if value:
                number = allele_value(value, alt_index, alt_count)
                if number is None:
                    unreadable = unreadable or f"INFO:{key}"
                elif number > af:
                    af, af_source = number, f"INFO:{key}"
        clinvar = _info_text(info, "CLNSIG") if "CLNSIG" in info else ""
        clinvar_source = "INFO:CLNSIG" if clinvar else ""
        review_status = _info_text(info, "CLNREVSTAT") if clinvar else ""
        if not clinvar and reading.clin_sig:
            # Only VEP's CSQ has a CLIN_SIG field.
            clinvar, clinvar_source = reading.clin_sig, "CSQ:CLIN_SIG"
        clinvar_kind = clinvar_class(clinvar, review_status)
        freq_tier = frequency_tier(af, assessed)
        if unreadable and freq_tier in _RARE:
            # A source that cannot be read may hold a higher frequency: what was read is a lower
            # bound, enough for the common tiers, never for rarity or absence (frequency_criteria).
            freq_tier = "unknown"

        genes: list[str] = []
        if self._genes is not None:
            start = variant.position - 1
            genes = self._genes.overlapping(variant.chromosome, start, _span_end(variant, kind, start))

        tier, reasons = _priority(
            call, freq_tier, af, clinvar_kind, kind, sv_type, genes, filters if failed else ()
        )
        criteria: list[Criterion] = []
        if kind not in _NOT_VARIANTS and sv_type != "NON_REF":
            if assessed:
                criteria = frequency_criteria(
                    af, af_source or _sources(context), self._bs1_af, self._pm2_af, unreadable
                )
            if call is not None and call.null_in_coding:
                criteria.append(
                    null_variant_criterion(call.terms, call.biotype, f"{call.source}:Consequence")
                )
            nothing_assessed = not assessed and call is None and not clinvar
            classification = NOT_CLASSIFIED if nothing_assessed else combine(criteria)
        else:
            classification = NOT_CLASSIFIED
        confidence = _CONFIDENCE[classification]
        if failed:
            confidence = round(confidence * 0.5, 3)
        quality_tier = _TIER_NAMES[record_level]
        findings = _sample_findings(variant.genotypes, alt_index + 1, failed, record_level)
        return _Answer(
            classification,
            confidence,
            [c.code for c in criteria if c.met],
            _rationale(
                kind,
                call,
                genes,
                af,
                af_source,
                unreadable,
                freq_tier,
                clinvar,
                clinvar_kind,
                quality_tier,
                classification,
                criteria,
                tier,
                reasons,
                reading.compound_links,
                "CLNSIG" in context.clinvar_keys,
            ),
            kind,
            substitution,
            alt_count > 1,
            alt_count,
            quality_tier,
            freq_tier,
            af,
            call.consequence if call else "",
            call.impact if call else "",
            call.gene if call else "",
            call.hgvs_c if call else "",
            call.hgvs_p if call else "",
            clinvar,
            genes,
            tier,
            reasons,
            findings,
            sv_type,
            [(c.code, c.strength, c.met, c.value, c.source, c.rule) for c in criteria],
            af_source,
            review_status,
            _info_text(info, "CLNSIGCONF") if clinvar_source == "INFO:CLNSIG" else "",
            clinvar_source,
            call.transcript if call else "",
            call.biotype if call else "",
            call.choice if call else "",
        )


_NO_READING = AnnotationReading(None, -1.0, "", False, "", ())
# LocalAnnotation's singular fields, set by name.
_SCALARS = (
    "variant_class",
    "substitution",
    "multi_allelic",
    "allele_count",
    "quality_tier",
    "frequency_tier",
    "population_af",
    "consequence",
    "impact",
    "gene",
    "hgvs_c",
    "hgvs_p",
    "clinvar_significance",
    "priority_tier",
    "sv_type",
    "population_af_source",
    "clinvar_review_status",
    "clinvar_conflicts",
    "clinvar_source",
    "transcript",
    "biotype",
    "transcript_choice",
)


def _result(variant: VariantFields, values: _Answer) -> analysis_pb2.AnalysisResult:
    result = analysis_pb2.AnalysisResult(
        correlation_id=variant.correlation_id,
        job_id=variant.job_id,
        tenant_id=variant.tenant_id,
        provider=PROVIDER,
        model=MODEL,
        status=_OK,
        classification=values.classification,
        confidence=values.confidence,
        criteria=values.criteria,
        rationale=values.rationale,
    )
    annotation = result.annotation
    for name in _SCALARS:
        setattr(annotation, name, getattr(values, name))
    annotation.overlapping_genes.extend(values.overlapping_genes)
    annotation.priority_reasons.extend(values.priority_reasons)
    if isinstance(values.samples, bytes):
        # Encoded `samples` fields: merged, each appends its SampleFinding.
        annotation.MergeFromString(values.samples)
    else:
        for sample, zyg, balance, quality in values.samples:
            annotation.samples.add(sample=sample, zygosity=zyg, allele_balance=balance, call_quality=quality)
    for code, strength, met, value, source, rule in values.acmg_criteria:
        annotation.acmg_criteria.add(
            code=code, strength=strength, met=met, value=value, source=source, rule=rule
        )
    return result


@lru_cache(maxsize=64)
def _sources(context: AnnotationContext) -> str:
    """The population fields a variant absent from all of them was looked up in."""
    fields = [f"{layout.tag}:{layout.names[i]}" for layout in context.layouts for i in layout.frequencies]
    fields.extend(f"INFO:{key}" for key in context.population_keys)
    return ",".join(fields)


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


def _effective_impact(call: ConsequenceCall) -> str:
    """The call's impact, except that a null-variant term outside a protein-coding transcript
    (a splice_donor_variant in a pseudogene) is no HIGH-impact finding."""
    if call.impact == "HIGH" and not call.null_in_coding and call.biotype not in ("", "protein_coding"):
        return "MODIFIER"
    if call.impact == "HIGH" and not call.null_in_coding and "non_coding" in call.terms:
        return "MODIFIER"
    return call.impact


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
    frequency = "absent from population databases" if freq_tier == "absent" else f"{freq_tier} (AF {af:.4g})"
    if clinvar_kind in ("pathogenic", "likely_pathogenic"):
        hits.append((1, f"ClinVar {clinvar_kind}"))
    if call is not None:
        impact = _effective_impact(call)
        if impact == "HIGH":
            if rare:
                hits.append((1, f"HIGH impact {call.consequence} and {frequency}"))
            elif freq_tier == "unknown":
                hits.append((2, f"HIGH impact {call.consequence}, frequency unknown"))
        elif impact == "MODERATE":
            if rare:
                hits.append((2, f"MODERATE impact {call.consequence} and {frequency}"))
            elif freq_tier == "unknown":
                hits.append((3, f"MODERATE impact {call.consequence}, frequency unknown"))
        elif rare:
            hits.append((3, f"{impact} impact {call.consequence} but {frequency}"))
    if clinvar_kind == "uncertain_significance":
        hits.append((2, "ClinVar uncertain significance"))
    elif clinvar_kind == "conflicting":
        hits.append((2, "ClinVar conflicting interpretations of pathogenicity"))
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


def _rationale(
    kind: str,
    call: ConsequenceCall | None,
    genes: list[str],
    af: float,
    af_source: str,
    unreadable: str,
    freq_tier: str,
    clinvar: str,
    clinvar_kind: str,
    quality_tier: str,
    classification: str,
    criteria: list[Criterion],
    tier: str,
    reasons: list[str],
    compound_links: Sequence[int],
    clinvar_annotated: bool,
) -> str:
    if call is not None:
        what = f"{call.gene or ', '.join(genes) or 'no gene'}: {call.consequence} ({call.impact})"
        if call.transcript:
            what += f" on {call.transcript} [{call.choice}]"
    elif compound_links:
        what = f"compound change annotated at position {', '.join(map(str, compound_links))} (bcftools csq)"
    else:
        what = f"{', '.join(genes) or 'no gene'}: no consequence annotation"
    if af >= 0:
        frequency = f"population AF {af:.4g} from {af_source} ({freq_tier})"
    elif freq_tier == "absent":
        frequency = "absent from the population databases annotated"
    elif unreadable:
        frequency = "no population frequency read"
    else:
        frequency = "no population frequency in the file"
    if unreadable:
        frequency += f"; {unreadable} unreadable for this allele"
    if clinvar:
        clinvar_text = f"ClinVar {clinvar} ({clinvar_kind or 'other'})"
    else:
        # A ClinVar-annotated file without CLNSIG on this record: ClinVar does not list it.
        clinvar_text = "ClinVar: not listed" if clinvar_annotated else "ClinVar none"
    if classification == NOT_CLASSIFIED:
        verdict = f"{classification}: nothing to assess"
    else:
        met = [f"{c.code} ({c.source}={c.value})" for c in criteria if c.met]
        verdict = f"{classification} by ACMG/AMP 2015 Table 5 from {', '.join(met) or 'no criterion met'}"
    return (
        f"{kind} in {what}; {frequency}; {clinvar_text}; quality {quality_tier} -> {verdict};"
        f" {tier}: {'; '.join(reasons)}"
    )
