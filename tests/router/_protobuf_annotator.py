"""The local annotator as it was before the compiled reader: it reads VariantMessages through
protobuf and builds the AnalysisResult message field by field.

Kept only as the oracle of the differential tests (test_variant_reader.py): the production
annotator must answer byte for byte as this one does. The rules shared by both (classes,
zygosity, tiers, texts) are imported; what is copied here is what read the protobuf objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from math import isnan

from vcf_agent.services.router._annotation_fields import (
    _UNKNOWN_RANK,
    DEFAULT_CONTEXT,
    SO_IMPACT,
    SO_RANK,
    AnnotationContext,
    ConsequenceCall,
    _Layout,
    _most_severe,
    _parse_float,
    vep_allele,
)
from vcf_agent.services.router._gene_index import GeneLookup
from vcf_agent.services.router._local_annotator import (
    _ANNOTATION_TAGS,
    _LOSS_OF_FUNCTION,
    _NOTHING,
    _PASSING,
    _RELEVANT_INFO,
    _TIER_NAMES,
    MODEL,
    POPULATION_AF_KEYS,
    PROVIDER,
    _priority,
    _qual_level,
    _rationale,
    allele_balance,
    clinvar_class,
    clinvar_confidence,
    frequency_tier,
    variant_class,
    zygosity,
)
from vcf_agent.v1 import analysis_pb2, variant_pb2

_OK = analysis_pb2.AnalysisResult.STATUS_OK
_AnalysisResult = analysis_pb2.AnalysisResult


def _entries_by_header(info: Mapping[str, variant_pb2.InfoValue], layout: _Layout) -> list[str]:
    """Entries rebuilt in this layout's field order from ingest's per-subfield lists (empty if none)."""
    prefix = layout.tag + "."
    columns = {
        key[len(prefix) :].lower(): value.strings.values
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


def _entries(value: variant_pb2.InfoValue) -> list[str]:
    """Annotation entries; tolerates producers that kept the comma-joined string unsplit."""
    values = value.strings.values[:]
    if len(values) == 1 and "," in values[0]:
        return values[0].split(",")
    return values


class _AlleleMatcher:
    """Decides which entries describe this ALT of a multi-allelic record."""

    __slots__ = ("alternate", "dna_change", "number", "vep_form")

    def __init__(self, variant: variant_pb2.VariantMessage) -> None:
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
    variant: variant_pb2.VariantMessage, context: AnnotationContext = DEFAULT_CONTEXT
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


def call_quality(call: variant_pb2.GenotypeCall, record_level: int) -> int:
    """Level 0..3: the weaker of GQ (>= 30, >= 15) and DP (>= 20, >= 10); the record's level if neither."""
    level = 4
    gq = call.genotype_quality
    if gq >= 0:
        level = 3 if gq >= 30 else 2 if gq >= 15 else 1
    dp = call.depth
    if dp >= 0:
        dp_level = 3 if dp >= 20 else 2 if dp >= 10 else 1
        if dp_level < level:
            level = dp_level
    return record_level if level == 4 else level


def allele_value(value: variant_pb2.InfoValue, alt_index: int, alt_count: int) -> float:
    """This ALT's number from an INFO value (Number=A, =R or =1); -1 when absent or unparsable."""
    values: Sequence[float] = value.floats.values or value.ints.values
    if not values and value.strings.values:
        parsed: list[float] = []
        for text in value.strings.values:
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


def _info_text(info: Mapping[str, variant_pb2.InfoValue], key: str) -> str:
    value = info.get(key)
    return ",".join(value.strings.values) if value is not None else ""


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
        self,
        variant: variant_pb2.VariantMessage,
        context: AnnotationContext | None = None,
        *,
        into: analysis_pb2.AnalysisResult | None = None,
    ) -> analysis_pb2.AnalysisResult:
        """The provider answer: ids copied from the variant, the LocalAnnotation in `.annotation`.

        `into` (an empty message, e.g. a fresh element of a batch) is filled in place, which
        spares copying the answer into its batch afterwards.
        """
        # One long function on purpose: this runs for every variant, and locals are far
        # cheaper than intermediate objects or reading fields back out of the message.
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
        result = _AnalysisResult() if into is None else into
        result.correlation_id = variant.correlation_id
        result.job_id = variant.job_id
        result.tenant_id = variant.tenant_id
        result.provider = PROVIDER
        result.model = MODEL
        result.status = _OK
        result.classification = classification
        result.confidence = confidence
        if criteria:
            result.criteria.extend(criteria)
        result.rationale = _rationale(
            kind, call, genes, af, freq_tier, clinvar, quality_tier, classification, tier, reasons
        )
        # Filled in place: building a LocalAnnotation and passing it in would copy it.
        annotation = result.annotation
        annotation.variant_class = kind
        if substitution:
            annotation.substitution = substitution
        if sv_type:
            annotation.sv_type = sv_type
        annotation.multi_allelic = alt_count > 1
        annotation.allele_count = alt_count
        annotation.quality_tier = quality_tier
        annotation.frequency_tier = freq_tier
        annotation.population_af = af
        if call is not None:
            annotation.consequence = call.consequence
            annotation.impact = call.impact
            annotation.gene = call.gene
            annotation.hgvs_c = call.hgvs_c
            annotation.hgvs_p = call.hgvs_p
        if clinvar:
            annotation.clinvar_significance = clinvar
        if genes:
            annotation.overlapping_genes.extend(genes)
        annotation.priority_tier = tier
        annotation.priority_reasons.extend(reasons)

        allele = alt_index + 1
        add_sample = annotation.samples.add
        for genotype in variant.genotypes:
            # Sliced to plain lists: iterating upb repeated fields costs several times more.
            zyg = zygosity(genotype.alleles[:], allele)
            depths = genotype.allele_depths[:]
            finding = add_sample()
            finding.sample = genotype.sample
            finding.zygosity = zyg
            finding.allele_balance = allele_balance(depths, allele) if depths else -1.0
            if failed or zyg == "no_call":
                finding.call_quality = "fail"
            else:
                finding.call_quality = _TIER_NAMES[call_quality(genotype, record_level)]
        return result


def _span_end(variant: variant_pb2.VariantMessage, kind: str, start: int) -> int:
    """0-based exclusive end of the reference bases a variant touches, for gene overlap."""
    if kind == "symbolic":
        end = variant.info.get("END")
        if end is not None and end.ints.values and end.ints.values[0] > start:
            return int(end.ints.values[0])
        svlen = variant.info.get("SVLEN")
        if svlen is not None and svlen.ints.values:
            return start + 1 + abs(int(svlen.ints.values[0]))
    return start + max(len(variant.reference), 1)


def _classify(
    call: ConsequenceCall | None,
    freq_tier: str,
    af: float,
    af_source: str,
    clinvar: str,
    clinvar_kind: str,
    info: Mapping[str, variant_pb2.InfoValue],
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
