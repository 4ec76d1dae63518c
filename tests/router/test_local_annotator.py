"""The local annotator on real caller output, real annotation strings and real gene models.

Real inputs: pyvcf3's bundled VCFs (caller output, SVs, breakends, mixed ploidy),
annotation strings copied from geneimpacts 0.3.8's test data (VEP CSQ, SnpEff ANN,
bcftools BCSQ), and gene rows from pyranges 0.1.7's Ensembl GTF (tests/router/data).
"""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pysam
import pytest
import vcf  # pyvcf3: only its bundled test files are used

from vcf_agent.analysis._annotation_fields import (
    AnnotationContext,
    parse_format_description,
    read_annotations,
)
from vcf_agent.analysis._gene_index import GeneIndex, TabixGeneIndex, detect_format
from vcf_agent.analysis._local_annotator import (
    MODEL,
    PROVIDER,
    LocalAnnotator,
    zygosity,
)
from vcf_agent.analysis._variant_fields import variant_fields
from vcf_agent.schema import GenotypeCall, genotype_columns
from vcf_agent.services.ingest._annotation_context import annotation_context
from vcf_agent.v1 import analysis_pb2, variant_pb2

from ._file_analysis import info_value, messages_from_vcf

PYVCF_FILES = Path(vcf.__file__).parent / "test"
DATA = Path(__file__).parent / "data"

# Real header lines as SnpEff 4.x, Ensembl VEP and bcftools csq write them.
SNPEFF_HEADER = (
    "##INFO=<ID=ANN,Number=.,Type=String,Description=\"Functional annotations: 'Allele | Annotation "
    "| Annotation_Impact | Gene_Name | Gene_ID | Feature_Type | Feature_ID | Transcript_BioType | Rank "
    "| HGVS.c | HGVS.p | cDNA.pos / cDNA.length | CDS.pos / CDS.length | AA.pos / AA.length | Distance "
    "| ERRORS / WARNINGS / INFO' \">"
)
# The CSQ layout geneimpacts' test strings were produced with (VEP 75, no Allele column).
OLD_VEP_HEADER = (
    '##INFO=<ID=CSQ,Number=.,Type=String,Description="Consequence type as predicted by VEP. '
    'Format: Consequence|Codons|Amino_acids|Gene|SYMBOL|Feature|EXON|PolyPhen|SIFT|Protein_position|BIOTYPE">'
)
BCSQ_HEADER = (
    '##INFO=<ID=BCSQ,Number=.,Type=String,Description="Haplotype-aware consequence annotation from '
    "BCFtools/csq, see http://samtools.github.io/bcftools/howtos/csq-calling.html for details. "
    'Format: Consequence|gene|transcript|biotype|strand|amino_acid_change|dna_change">'
)

# From geneimpacts-0.3.8/geneimpacts/tests/snpeff-anns.txt.gz.
ANN_SYNONYMOUS = (
    "G|synonymous_variant|LOW|OR4F5|ENSG00000186092|transcript|ENST00000335137|protein_coding|1/1"
    "|c.180A>G|p.Ser60Ser|180/918|180/918|60/305||"
)
ANN_SEQUENCE_FEATURE = (
    "G|sequence_feature|LOW|OR4F5|ENSG00000186092|transmembrane_region:Transmembrane_region"
    "|ENST00000335137|protein_coding||c.180A>G||||||"
)
ANN_STOP_GAINED = (
    "A|stop_gained|HIGH|OR4F5|ENSG00000186092|transcript|ENST00000335137|protein_coding|1/1"
    "|c.759G>A|p.Trp253*|759/918|759/918|253/305||"
)
ANN_MISSENSE = (
    "G|missense_variant|MODERATE|OR4F5|ENSG00000186092|transcript|ENST00000335137|protein_coding|1/1"
    "|c.338T>G|p.Phe113Cys|338/918|338/918|113/305||"
)
ANN_SPLICE_DONOR = (
    "C|frameshift_variant&splice_donor_variant&splice_region_variant&splice_region_variant&intron_variant"
    "|HIGH|SAMD11|ENSG00000187634|transcript|ENST00000342066|protein_coding|7/14|c.706_706+48delGGTGAGGAC"
    "|||||||"
)
ANN_UPSTREAM = (
    "C|upstream_gene_variant|MODIFIER|DDX11L1|ENSG00000223972|transcript|ENST00000456328"
    "|processed_transcript||n.-1_-1delCCTAA|||||1696|"
)
# From geneimpacts-0.3.8/geneimpacts/tests/vep-csqs.txt.gz (layout OLD_VEP_HEADER).
CSQ_OLD = [
    "upstream_gene_variant|||ENSG00000223972|DDX11L1|ENST00000456328|||||processed_transcript",
    "missense_variant|tTt/tGt|F/C|ENSG00000186092|OR4F5|ENST00000335137|1/1|possibly_damaging(0.568)"
    "|deleterious(0)|113/305|protein_coding",
    "splice_region_variant&non_coding_exon_variant&nc_transcript_variant|||ENSG00000223972|DDX11L1"
    "|ENST00000456328|2/3||||processed_transcript",
]
# From geneimpacts-0.3.8/geneimpacts/tests/bcfts.txt.gz.
BCSQ_MISSENSE = "missense|OR4F5|ENST00000335137|protein_coding|+|113F>113C|69428T>G"
BCSQ_COMPOUND = "@874816"
BCSQ_SPLICE_UTR = "splice_region&5_prime_utr|SAMD11|ENST00000342066|protein_coding|+"

ALLOWED = {
    "variant_class": {
        "snv",
        "mnv",
        "insertion",
        "deletion",
        "complex",
        "symbolic",
        "breakend",
        "spanning_deletion",
        "no_alternate",
    },
    "quality": {"high", "medium", "low", "fail", "unknown"},
    "frequency": {"common", "low_frequency", "rare", "ultra_rare", "absent", "unknown"},
    "zygosity": {"hom_ref", "het", "hom_alt", "hemizygous", "no_call", "het_alt", "other_alt"},
    "classification": {
        "pathogenic",
        "likely_pathogenic",
        "uncertain_significance",
        "likely_benign",
        "benign",
        "not_classified",
    },
    "priority": {"P1", "P2", "P3", "P4"},
}


# A job whose header declares gnomAD frequencies in INFO (as vcfanno or VEP --custom add them).
GNOMAD = AnnotationContext(population_keys=("gnomAD_AF", "gnomADe_AF", "gnomADg_AF"))


def context_from_header(lines: Iterable[str]) -> AnnotationContext:
    """The router's context of a header, built as ingest builds it for a job."""
    return AnnotationContext.from_message(annotation_context(lines))


# --- building VariantMessages -------------------------------------------------------------


def msg(
    ref: str = "C",
    alt: str = "G",
    *,
    alts: Sequence[str] | None = None,
    alt_index: int = 0,
    info: Mapping[str, Any] | None = None,
    genotypes: Iterable[GenotypeCall] = (),
    filters: Sequence[str] = ("PASS",),
    qual: float | None = 60.0,
    chrom: str = "1",
    pos: int = 1000,
) -> variant_pb2.VariantMessage:
    message = variant_pb2.VariantMessage(
        correlation_id="corr-1",
        job_id="job-1",
        tenant_id="tenant-1",
        chromosome=chrom,
        position=pos,
        reference=ref,
        alternate=alt,
        alt_index=alt_index,
        all_alternates=list(alts) if alts is not None else [alt],
        has_quality=qual is not None,
        quality=qual or 0.0,
        filters=list(filters),
    )
    calls = list(genotypes)
    if calls:
        message.genotypes.CopyFrom(genotype_columns(calls))
    for key, value in (info or {}).items():
        message.info[key].CopyFrom(info_value(value))
    return message


def call(
    alleles: Sequence[int], *, dp: int = -1, gq: int = -1, ad: Sequence[int] = (), sample: str = "S1"
) -> GenotypeCall:
    return GenotypeCall(sample, tuple(alleles), depth=dp, genotype_quality=gq, allele_depths=tuple(ad))


def find(messages: list[variant_pb2.VariantMessage], pos: int, alt: str) -> variant_pb2.VariantMessage:
    return next(m for m in messages if m.position == pos and m.alternate == alt)


def annotate(
    message: variant_pb2.VariantMessage,
    context: AnnotationContext | None = None,
    genes: GeneIndex | None = None,
) -> analysis_pb2.AnalysisResult:
    return LocalAnnotator(context, genes).annotate(message)


def samples(result: analysis_pb2.AnalysisResult) -> dict[str, analysis_pb2.SampleFinding]:
    return {finding.sample: finding for finding in result.annotation.samples}


@pytest.fixture(scope="module")
def example40() -> list[variant_pb2.VariantMessage]:
    return messages_from_vcf(PYVCF_FILES / "example-4.0.vcf")


@pytest.fixture(scope="module")
def gene_index() -> GeneIndex:
    index = GeneIndex.from_file(DATA / "ensembl_excerpt.gtf")
    assert isinstance(index, GeneIndex)
    return index


# --- variant class, substitution, sv_type, alleles -----------------------------------------


@pytest.mark.parametrize(
    ("ref", "alt", "kind", "substitution"),
    [
        ("A", "G", "snv", "transition"),
        ("C", "T", "snv", "transition"),
        ("A", "C", "snv", "transversion"),
        ("G", "T", "snv", "transversion"),
        ("a", "g", "snv", "transition"),
        ("N", "A", "snv", ""),
        # Padded SNV: only the middle base differs.
        ("ATG", "ACG", "snv", "transition"),
        ("AT", "GC", "mnv", ""),
        ("A", "AT", "insertion", ""),
        ("AT", "A", "deletion", ""),
        ("ATG", "CC", "complex", ""),
    ],
)
def test_sequence_alleles_are_classed_with_substitution(
    ref: str, alt: str, kind: str, substitution: str
) -> None:
    annotation = annotate(msg(ref, alt)).annotation
    assert (annotation.variant_class, annotation.substitution, annotation.sv_type) == (kind, substitution, "")


def test_real_structural_variants_get_symbolic_class_and_sv_type() -> None:
    messages = messages_from_vcf(PYVCF_FILES / "example-4.1-sv.vcf")
    got = [
        (m.alternate[:12], annotate(m).annotation.variant_class, annotate(m).annotation.sv_type)
        for m in messages
    ]
    assert got == [
        ("C", "deletion", ""),
        ("<DEL>", "symbolic", "DEL"),
        ("<DEL:ME:ALU>", "symbolic", "DEL"),
        ("<INS:ME:L1>", "symbolic", "INS"),
        ("<DUP>", "symbolic", "DUP"),
        ("<DUP:TANDEM>", "symbolic", "DUP"),
    ]


def test_sv_type_falls_back_to_info_svtype_for_non_standard_symbols() -> None:
    assert annotate(msg("A", "<CN0>", info={"SVTYPE": "CNV"})).annotation.sv_type == "CNV"
    assert annotate(msg("A", "<CN0>")).annotation.sv_type == "CN0"


@pytest.mark.parametrize("alt", ["<*>", "<NON_REF>"])
def test_gvcf_placeholder_is_symbolic_but_not_a_structural_variant(alt: str, gene_index: GeneIndex) -> None:
    annotation = annotate(msg("A", alt, pos=66000), genes=gene_index).annotation
    assert (annotation.variant_class, annotation.sv_type) == ("symbolic", "NON_REF")
    assert not any(reason.startswith("structural variant") for reason in annotation.priority_reasons)


def test_every_breakend_form_is_a_breakend() -> None:
    # The real file does not parse with htslib (its ##SAMPLE lines), so read its ALT column directly.
    lines = (PYVCF_FILES / "example-4.1-bnd.vcf").read_text().splitlines()
    real = [
        line.split()[4] for line in lines if line and not line.startswith("#") and "bnd" in line.split()[2]
    ]
    assert {"T[2:3[", "]2:2]A"} <= set(real)
    for alt in [*real, "A]2:5]", "[2:5[A", ".A", "A."]:
        annotation = annotate(msg("A", alt, info={"SVTYPE": "BND"})).annotation
        assert (annotation.variant_class, annotation.sv_type) == ("breakend", "BND"), alt


def test_spanning_deletion_and_multi_allelic_counts() -> None:
    annotation = annotate(msg("C", "*", alts=["T", "*"], alt_index=1)).annotation
    assert annotation.variant_class == "spanning_deletion"
    assert (annotation.multi_allelic, annotation.allele_count) == (True, 2)


def test_allele_count_from_real_records(example40: list[variant_pb2.VariantMessage]) -> None:
    for alt in ("G", "T"):
        annotation = annotate(find(example40, 1110696, alt)).annotation
        assert (annotation.multi_allelic, annotation.allele_count) == (True, 2)
    single = annotate(find(example40, 14370, "A")).annotation
    assert (single.multi_allelic, single.allele_count) == (False, 1)


# --- samples: zygosity, allele balance, call quality ---------------------------------------


def test_zygosity_on_real_diploid_calls(example40: list[variant_pb2.VariantMessage]) -> None:
    # NA00001 is 0|0 here: a hom-ref call gets no finding (next test).
    assert {k: f.zygosity for k, f in samples(annotate(find(example40, 14370, "A"))).items()} == {
        "NA00002": "het",
        "NA00003": "hom_alt",
    }
    # 1|2, 2|1, 2/2 seen from each ALT in turn.
    assert [f.zygosity for f in annotate(find(example40, 1110696, "G")).annotation.samples] == [
        "het_alt",
        "het_alt",
        "other_alt",
    ]
    assert [f.zygosity for f in annotate(find(example40, 1110696, "T")).annotation.samples] == [
        "het_alt",
        "het_alt",
        "hom_alt",
    ]
    # ./., 0/2, 1/1 at the microsatellite.
    assert [f.zygosity for f in annotate(find(example40, 1234567, "G")).annotation.samples] == [
        "no_call",
        "other_alt",
        "hom_alt",
    ]
    assert [f.zygosity for f in annotate(find(example40, 1234567, "GTACT")).annotation.samples] == [
        "no_call",
        "het",
        "other_alt",
    ]


def test_zygosity_on_real_mixed_ploidy() -> None:
    messages = messages_from_vcf(PYVCF_FILES / "example-4.1-ploidy.vcf")
    # X:60034 has haploid 0, diploid 1|0 and triploid 1/1/1; X:60378 haploid 1 and 0.
    assert samples(annotate(messages[0])).keys() == {"NA00002", "NA00003"}
    assert [f.zygosity for f in annotate(messages[0]).annotation.samples] == ["het", "hom_alt"]
    assert [f.zygosity for f in annotate(messages[1]).annotation.samples] == ["hemizygous"]


def test_a_hom_ref_call_gets_no_finding_and_keeps_its_genotype(
    example40: list[variant_pb2.VariantMessage],
) -> None:
    """The VCF 4.0 specification's example, 20:14370 G>A: NA00001 0|0, NA00002 1|0, NA00003 1/1.
    Findings name the two callers that are not hom-ref, in sample order; NA00001's call is still
    in the variant's genotypes, which the writer stores."""
    variant = find(example40, 14370, "A")
    assert [f.sample for f in annotate(variant).annotation.samples] == ["NA00002", "NA00003"]
    assert list(variant.genotypes.samples) == ["NA00001", "NA00002", "NA00003"]
    # Every call hom-ref: no findings at all.
    assert not annotate(
        msg(genotypes=[call([0, 0]), call([0], sample="S2"), call([0, 0, 0], sample="S3")])
    ).annotation.samples


@pytest.mark.parametrize(
    ("alleles", "expected"),
    [
        ((), "no_call"),
        ((-1,), "no_call"),
        ((-1, -1), "no_call"),
        ((-1, 1), "het"),
        ((0, -1), "no_call"),
        ((2,), "other_alt"),
        ((0, 0, 1), "het"),
        ((0, 1, 2), "het_alt"),
        ((1, 1, 1, 1), "hom_alt"),
        ((0, 0, 0, 0), "hom_ref"),
        ((2, 2, 0), "other_alt"),
        ((1, -1, 1), "het"),
    ],
)
def test_zygosity_rules(alleles: tuple[int, ...], expected: str) -> None:
    assert zygosity(list(alleles), 1) == expected


def test_allele_balance_from_real_ad() -> None:
    messages = messages_from_vcf(PYVCF_FILES / "gatk.vcf")
    findings = samples(annotate(find(messages, 42522392, "A")))
    assert findings["NA12878"].allele_balance == pytest.approx(107 / 245)  # AD 138,107
    assert findings["NA12891"].allele_balance == pytest.approx(77 / 246)  # AD 169,77
    assert "BLANK" not in findings  # 0/0 (AD 6,0): hom-ref, no finding
    # freebayes reports RO/AO, not AD: no balance.
    freebayes = messages_from_vcf(PYVCF_FILES / "freebayes.vcf")
    assert {f.allele_balance for f in annotate(freebayes[0]).annotation.samples} == {-1.0}


def test_allele_balance_uses_this_alt_index() -> None:
    genotypes = [call([1, 2], ad=[10, 5, 15])]
    first = annotate(msg("C", "G", alts=["G", "T"], alt_index=0, genotypes=genotypes))
    second = annotate(msg("C", "T", alts=["G", "T"], alt_index=1, genotypes=genotypes))
    assert first.annotation.samples[0].allele_balance == pytest.approx(5 / 30)
    assert second.annotation.samples[0].allele_balance == pytest.approx(15 / 30)
    assert annotate(msg(genotypes=[call([0, 1], ad=[0, 0])])).annotation.samples[0].allele_balance == -1.0
    assert annotate(msg(genotypes=[call([0, 1], ad=[7])])).annotation.samples[0].allele_balance == -1.0
    # A missing depth (-1) does not shrink the total.
    assert annotate(msg(genotypes=[call([0, 1], ad=[-1, 4, 4])])).annotation.samples[0].allele_balance == 0.5


def test_call_quality_from_real_gq_dp_and_filter(example40: list[variant_pb2.VariantMessage]) -> None:
    # GQ 48 and 43 but DP 8 and 5 (NA00001, 0|0 at DP 1, gets no finding): depth limits both.
    assert [f.call_quality for f in annotate(find(example40, 14370, "A")).annotation.samples] == [
        "low",
        "low",
    ]
    # FILTER q10 fails every call.
    assert {f.call_quality for f in annotate(find(example40, 17330, "A")).annotation.samples} == {"fail"}
    # ./. is a failed call.
    assert annotate(find(example40, 1234567, "G")).annotation.samples[0].call_quality == "fail"
    gatk = samples(annotate(find(messages_from_vcf(PYVCF_FILES / "gatk.vcf"), 42522392, "A")))
    assert gatk["NA12878"].call_quality == "high"  # GQ 99, DP 250
    assert gatk["NA12891"].call_quality == "high"  # GQ 99, DP 250
    assert gatk.keys() == {"NA12878", "NA12891"}  # the other five are 0/0


@pytest.mark.parametrize(
    ("gq", "dp", "qual", "expected"),
    [
        (30, 20, 60.0, "high"),
        (20, 15, 60.0, "medium"),
        (40, -1, 60.0, "high"),
        (10, -1, 60.0, "low"),
        (-1, -1, 60.0, "high"),  # no per-call evidence: the record's QUAL decides
        (-1, -1, 25.0, "medium"),
        # Neither the call nor the record says: the file holds no quality to tier.
        (-1, -1, None, "unknown"),
        (20, -1, None, "medium"),
    ],
)
def test_call_quality_tiers(gq: int, dp: int, qual: float | None, expected: str) -> None:
    result = annotate(msg(qual=qual, genotypes=[call([0, 1], gq=gq, dp=dp)]))
    assert result.annotation.samples[0].call_quality == expected


# --- record quality and frequency --------------------------------------------------------


def test_record_quality_tier_on_real_records(example40: list[variant_pb2.VariantMessage]) -> None:
    assert annotate(find(example40, 14370, "A")).annotation.quality_tier == "medium"  # QUAL 29
    assert annotate(find(example40, 17330, "A")).annotation.quality_tier == "fail"  # FILTER q10
    assert annotate(find(example40, 1110696, "G")).annotation.quality_tier == "high"  # QUAL 1000
    # `20 1234567 microsat1 GTCT G,GTACT . PASS ...` (the VCF 4.0 spec's example, line 24): QUAL is
    # missing, so the file says nothing of it: not the neutral "medium" it was read as before.
    assert annotate(find(example40, 1234567, "G")).annotation.quality_tier == "unknown"
    gatk = messages_from_vcf(PYVCF_FILES / "gatk.vcf")
    assert annotate(gatk[0]).annotation.quality_tier == "high"  # FILTER . with QUAL 2951
    assert annotate(msg(qual=10.0)).annotation.quality_tier == "low"


@pytest.mark.parametrize(
    ("af", "tier"),
    [
        (0.2, "common"),
        # BA1 is AF > 0.05 (ACMG/AMP 2015 Table 4; ClinGen SVI 2018): 5% itself is not common.
        (0.05, "low_frequency"),
        (0.03, "low_frequency"),
        (0.01, "low_frequency"),
        (0.005, "rare"),
        (0.001, "rare"),
        (0.0005, "ultra_rare"),
        (0.0, "ultra_rare"),
    ],
)
def test_frequency_tier_thresholds(af: float, tier: str) -> None:
    annotation = annotate(msg(info={"gnomAD_AF": af}), GNOMAD).annotation
    assert annotation.frequency_tier == tier
    assert annotation.population_af == pytest.approx(af)


def test_frequency_unknown_without_any_af() -> None:
    annotation = annotate(msg(info={"DP": 10})).annotation
    assert (annotation.frequency_tier, annotation.population_af) == ("unknown", -1.0)


def test_declared_population_key_missing_from_a_record_means_absent() -> None:
    annotation = annotate(msg(info={"DP": 10}), GNOMAD).annotation
    assert (annotation.frequency_tier, annotation.population_af) == ("absent", -1.0)


def test_acmg_ba1_never_from_the_files_own_cohort_af(example40: list[variant_pb2.VariantMessage]) -> None:
    # example-4.0.vcf: 1 110696 A G,T AF=0.333,0.667 from its 3 samples; no population source.
    for alt in ("G", "T"):
        result = annotate(find(example40, 1110696, alt))
        assert (result.annotation.frequency_tier, result.annotation.population_af) == ("unknown", -1.0)
        assert result.classification == "not_classified"
        assert list(result.criteria) == []


def test_population_database_beats_cohort_af_and_takes_the_highest() -> None:
    message = msg(
        alts=["G", "T"],
        info={"AF": [0.5, 0.5], "gnomADe_AF": [0.0002, 0.3], "gnomADg_AF": [0.0004, 0.2]},
    )
    annotation = annotate(message, GNOMAD).annotation
    assert annotation.population_af == pytest.approx(0.0004)
    assert annotation.population_af_source == "INFO:gnomADg_AF"
    assert annotation.frequency_tier == "ultra_rare"


def test_max_af_inside_csq_counts_as_population_frequency() -> None:
    context = AnnotationContext(csq_fields=("Allele", "Consequence", "IMPACT", "SYMBOL", "MAX_AF"))
    message = msg(info={"CSQ": ["G|missense_variant|MODERATE|OR4F5|0.0123&0.02"]})
    annotation = annotate(message, context).annotation
    assert annotation.population_af == pytest.approx(0.02)
    assert annotation.population_af_source == "CSQ:MAX_AF"
    assert annotation.frequency_tier == "low_frequency"


# --- consequence, impact, gene, HGVS ------------------------------------------------------


def test_snpeff_ann_picks_this_alleles_worst_entry() -> None:
    # Real ANN entries for two different ALTs, assembled into one multi-allelic record.
    info = {"ANN": [ANN_SEQUENCE_FEATURE, ANN_SYNONYMOUS, ANN_STOP_GAINED]}
    context = context_from_header([SNPEFF_HEADER])
    g = annotate(msg("C", "G", alts=["G", "A"], alt_index=0, info=info), context).annotation
    assert (g.consequence, g.impact, g.gene, g.hgvs_c, g.hgvs_p) == (
        "synonymous_variant",
        "LOW",
        "OR4F5",
        "c.180A>G",
        "p.Ser60Ser",
    )
    a = annotate(msg("C", "A", alts=["G", "A"], alt_index=1, info=info), context).annotation
    assert (a.consequence, a.impact, a.hgvs_c, a.hgvs_p) == ("stop_gained", "HIGH", "c.759G>A", "p.Trp253*")


def test_worst_term_of_ampersand_joined_consequences() -> None:
    # Ensembl ranks splice_donor_variant above frameshift_variant, though SnpEff lists it second.
    annotation = annotate(msg("CG", "C", info={"ANN": [ANN_UPSTREAM, ANN_SPLICE_DONOR]})).annotation
    assert (annotation.consequence, annotation.impact, annotation.gene) == (
        "splice_donor_variant",
        "HIGH",
        "SAMD11",
    )


def test_old_vep_csq_layout_comes_from_the_header() -> None:
    context = context_from_header([OLD_VEP_HEADER])
    annotation = annotate(msg("T", "G", info={"CSQ": CSQ_OLD}), context).annotation
    # No IMPACT column: derived from the SO term. SYMBOL is preferred to the Ensembl gene id.
    assert (annotation.consequence, annotation.impact, annotation.gene) == (
        "missense_variant",
        "MODERATE",
        "OR4F5",
    )
    assert (annotation.hgvs_c, annotation.hgvs_p) == ("", "")


def test_vep_csq_allele_matching_canonical_tie_break_and_clin_sig() -> None:
    # Generated entries in modern VEP layout. VEP drops the shared first base: GT>G is "-", GT>GTT is "TT".
    context = AnnotationContext(
        csq_fields=(
            *("Allele", "Consequence", "IMPACT", "SYMBOL", "Gene", "HGVSc", "HGVSp"),
            *("CANONICAL", "MAX_AF", "CLIN_SIG"),
        )
    )
    csq = [
        "-|frameshift_variant|HIGH|BRCA2|ENSG00000139618|ENST00000680887.1:c.9del|ENSP1:p.Lys3fs||0.0001|",
        "-|frameshift_variant|HIGH|BRCA2|ENSG00000139618|ENST00000380152.8:c.9del|ENSP2:p.Lys3fs|YES|0.0001|"
        "pathogenic",
        "TT|synonymous_variant|LOW|BRCA2|ENSG00000139618|ENST00000380152.8:c.9dup|ENSP2:p.Lys3%3D|YES|0.02|"
        "benign&likely_benign",
    ]
    alts = ["G", "GTT"]
    deletion = annotate(msg("GT", "G", alts=alts, info={"CSQ": csq}), context)
    d = deletion.annotation
    assert (d.consequence, d.hgvs_c, d.hgvs_p) == (
        "frameshift_variant",
        "ENST00000380152.8:c.9del",
        "ENSP2:p.Lys3fs",
    )
    assert d.population_af == pytest.approx(0.0001)
    assert (d.clinvar_significance, d.clinvar_source, d.priority_tier) == ("pathogenic", "CSQ:CLIN_SIG", "P1")
    assert d.transcript_choice == "CANONICAL"
    # ClinVar is reported, not ACMG evidence (PP5 retired, ClinGen SVI 2018); 0.0001 > PM2's 0.
    assert deletion.classification == "uncertain_significance"
    insertion = annotate(msg("GT", "GTT", alts=alts, alt_index=1, info={"CSQ": csq}), context)
    i = insertion.annotation
    assert (i.consequence, i.hgvs_p, i.frequency_tier) == (
        "synonymous_variant",
        "ENSP2:p.Lys3=",
        "low_frequency",
    )
    # BS1 alone (AF 0.02 > 0.01) is not likely benign (ACMG/AMP 2015 Table 5 needs BS + BP).
    assert (insertion.classification, list(insertion.criteria), i.priority_tier) == (
        "uncertain_significance",
        ["BS1"],
        "P4",
    )


def test_bcftools_bcsq_real_strings() -> None:
    context = context_from_header([BCSQ_HEADER])
    annotation = annotate(msg("T", "G", pos=69428, info={"BCSQ": [BCSQ_MISSENSE]}), context).annotation
    assert (annotation.consequence, annotation.impact, annotation.gene) == (
        "missense_variant",
        "MODERATE",
        "OR4F5",
    )
    # A compound change annotated at a record outside the batch: reported as the link.
    linked = annotate(msg("C", "T", info={"BCSQ": [BCSQ_COMPOUND]}), context)
    assert linked.annotation.consequence == ""
    assert "compound change annotated at position 874816" in linked.rationale
    spliced = annotate(msg(info={"BCSQ": [BCSQ_SPLICE_UTR]}), context).annotation
    assert (spliced.consequence, spliced.impact) == ("splice_region_variant", "LOW")
    # '*' marks a consequence downstream of a stop; the term itself still counts.
    starred = annotate(msg(info={"BCSQ": ["*missense|OR4F5|ENST00000335137|protein_coding|+"]}), context)
    assert starred.annotation.consequence == "missense_variant"


def test_bcsq_dna_change_selects_the_allele_of_multi_allelic_records() -> None:
    # The first entry is real (geneimpacts bcfts.txt.gz); the second is its generated sibling for ALT A.
    bcsq = [
        "missense|SAMD11|ENST00000437963|protein_coding|+|78H>78Y|865694C>T",
        "synonymous|SAMD11|ENST00000437963|protein_coding|+|78H|865694C>A",
    ]
    alts = ["T", "A"]
    t = annotate(msg("C", "T", alts=alts, pos=865694, info={"BCSQ": bcsq})).annotation
    a = annotate(msg("C", "A", alts=alts, alt_index=1, pos=865694, info={"BCSQ": bcsq})).annotation
    assert (t.consequence, a.consequence) == ("missense_variant", "synonymous_variant")


def test_header_descriptions_parse_for_all_three_tools() -> None:
    ann = parse_format_description(SNPEFF_HEADER.split('Description="', 1)[1].removesuffix('">'))
    assert len(ann) == 16 and ann[:3] == ("Allele", "Annotation", "Annotation_Impact") and "HGVS.p" in ann
    context = context_from_header(["##fileformat=VCFv4.2", SNPEFF_HEADER, OLD_VEP_HEADER, BCSQ_HEADER])
    assert context.csq_fields[0] == "Consequence" and context.csq_fields[-1] == "BIOTYPE"
    assert context.bcsq_fields[-1] == "dna_change"
    assert context.ann_fields == ann
    assert AnnotationContext.from_info_descriptions({"DP": "Total depth"}) == AnnotationContext()
    assert context_from_header(['##INFO=<ID=DP,Number=1,Type=Integer,Description="Depth">']) == (
        AnnotationContext()
    )


def test_unannotated_record_has_no_consequence() -> None:
    assert read_annotations(variant_fields(msg(info={"DP": 3}))).call is None
    annotation = annotate(msg()).annotation
    assert (annotation.consequence, annotation.impact, annotation.gene) == ("", "", "")


# --- ClinVar and classification -----------------------------------------------------------


@pytest.mark.parametrize(
    ("clnsig", "kind", "tier"),
    [
        ("Pathogenic", "pathogenic", "P1"),
        ("Pathogenic/Likely_pathogenic", "likely_pathogenic", "P1"),
        ("Likely_benign", "likely_benign", "P4"),
        ("Benign", "benign", "P4"),
        ("Conflicting_interpretations_of_pathogenicity", "conflicting", "P2"),
        ("Uncertain_significance", "uncertain_significance", "P2"),
        # ClinVar VCFs before 2017 coded CLNSIG as numbers: 5 pathogenic, 2 benign.
        ("5", "pathogenic", "P1"),
    ],
)
def test_clinvar_assertion_is_carried_with_review_status_and_sets_the_priority(
    clnsig: str, kind: str, tier: str
) -> None:
    # ClinVar's own VCF splits CLNREVSTAT on its commas (Number=.).
    info = {
        "CLNSIG": [clnsig],
        "CLNREVSTAT": ["criteria_provided", "_multiple_submitters", "_no_conflicts"],
        "ANN": [ANN_MISSENSE],
    }
    result = annotate(msg("T", "G", info=info))
    annotation = result.annotation
    assert (annotation.clinvar_significance, annotation.clinvar_source) == (clnsig, "INFO:CLNSIG")
    assert annotation.clinvar_review_status == "criteria_provided,_multiple_submitters,_no_conflicts"
    assert annotation.priority_tier == tier
    assert f"ClinVar {clnsig} ({kind})" in result.rationale
    # Not ACMG evidence (PP5/BP6 retired, ClinGen SVI 2018): no frequency data, no criterion met.
    assert (result.classification, list(result.criteria)) == ("uncertain_significance", [])


def test_clinvar_conflicting_interpretations_are_reported_never_resolved() -> None:
    info = {
        "CLNSIG": ["Conflicting_interpretations_of_pathogenicity"],
        "CLNSIGCONF": ["Pathogenic(1)", "Uncertain_significance(2)"],
        "CLNREVSTAT": ["criteria_provided", "_conflicting_interpretations"],
    }
    result = annotate(msg(info=info))
    assert result.annotation.clinvar_conflicts == "Pathogenic(1),Uncertain_significance(2)"
    assert result.annotation.priority_reasons[0] == "ClinVar conflicting interpretations of pathogenicity"
    assert result.classification == "uncertain_significance"


def test_clinvar_from_csq_when_clnsig_is_absent() -> None:
    context = AnnotationContext(csq_fields=("Allele", "Consequence", "CLIN_SIG"))
    result = annotate(msg(info={"CSQ": ["G|intron_variant|likely_pathogenic"]}), context)
    annotation = result.annotation
    assert (annotation.clinvar_significance, annotation.clinvar_source, annotation.priority_tier) == (
        "likely_pathogenic",
        "CSQ:CLIN_SIG",
        "P1",
    )


def test_acmg_criteria_from_population_frequency_and_null_variants() -> None:
    common = annotate(msg(info={"gnomAD_AF": 0.12}), GNOMAD)
    assert (common.classification, common.confidence, list(common.criteria)) == ("benign", 0.9, ["BA1"])
    (ba1,) = common.annotation.acmg_criteria
    assert (ba1.code, ba1.strength, ba1.met, ba1.value, ba1.source) == (
        "BA1",
        "stand_alone",
        True,
        "0.12",
        "INFO:gnomAD_AF",
    )
    # The file's own AF is never population evidence.
    cohort = annotate(msg(info={"AF": 0.3}))
    assert (cohort.classification, list(cohort.criteria)) == ("not_classified", [])
    low = annotate(msg("C", "G", info={"gnomAD_AF": 0.02, "ANN": [ANN_SYNONYMOUS]}), GNOMAD)
    assert (low.classification, list(low.criteria)) == ("uncertain_significance", ["BS1"])
    absent = annotate(msg("G", "A", info={"ANN": [ANN_STOP_GAINED]}), GNOMAD)
    assert list(absent.criteria) == ["PM2_Supporting"]
    codes = [(c.code, c.met) for c in absent.annotation.acmg_criteria]
    assert codes == [("PM2_Supporting", True), ("PVS1", False)]
    assert absent.classification == "uncertain_significance"
    failed = annotate(msg("G", "A", filters=["LowQual"], info={"ANN": [ANN_STOP_GAINED]}), GNOMAD)
    assert failed.confidence == pytest.approx(absent.confidence / 2)
    assert annotate(msg()).classification == "not_classified"


# --- priority --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ann", "af", "filters", "tier", "reason"),
    [
        (ANN_STOP_GAINED, 0.0001, ["PASS"], "P1", "HIGH impact stop_gained and ultra_rare (AF 0.0001)"),
        (ANN_STOP_GAINED, -1, ["PASS"], "P1", "HIGH impact stop_gained and absent from population databases"),
        (ANN_STOP_GAINED, None, ["PASS"], "P2", "HIGH impact stop_gained, frequency unknown"),
        (ANN_MISSENSE, 0.005, ["PASS"], "P2", "MODERATE impact missense_variant and rare (AF 0.005)"),
        (ANN_MISSENSE, None, ["PASS"], "P3", "MODERATE impact missense_variant, frequency unknown"),
        (ANN_SYNONYMOUS, 0.0001, ["PASS"], "P3", "LOW impact synonymous_variant but ultra_rare (AF 0.0001)"),
        (ANN_MISSENSE, 0.2, ["PASS"], "P4", "common in the population (AF 0.2)"),
        (None, None, ["PASS"], "P4", "no impact, rarity or ClinVar evidence"),
        (ANN_STOP_GAINED, 0.0001, ["LowQual"], "P2", "FILTER LowQual: demoted from P1"),
    ],
)
def test_priority_tiers_and_reasons(
    ann: str | None, af: float | None, filters: list[str], tier: str, reason: str
) -> None:
    info: dict[str, Any] = {}
    if ann is not None:
        info["ANN"] = [ann]
    if af is not None and af >= 0:
        info["gnomAD_AF"] = af
    annotation = annotate(
        msg("T", ann.split("|", 1)[0] if ann else "G", info=info, filters=filters),
        GNOMAD if af is not None else None,
    ).annotation
    assert annotation.priority_tier == tier
    assert annotation.priority_reasons[-1] == reason


# --- gene index ----------------------------------------------------------------------------


POINTS = [
    (11868, []),
    (11869, ["DDX11L1"]),
    (14403, ["DDX11L1"]),
    (14404, ["DDX11L1", "WASH7P"]),
    (14409, ["DDX11L1", "WASH7P"]),
    (14410, ["WASH7P"]),
    (17400, ["WASH7P", "MIR6859-1"]),
    (30400, ["MIR1302-2HG", "MIR1302-2"]),
    (71585, ["OR4F5"]),
    (71586, []),
    (200000, []),
]


@pytest.mark.parametrize("name", ["ensembl_excerpt.gtf", "ensembl_excerpt.gff3", "ensembl_excerpt.bed"])
def test_gtf_gff3_and_bed_give_the_same_overlaps(name: str) -> None:
    index = GeneIndex.from_file(DATA / name)
    assert isinstance(index, GeneIndex) and index.gene_count == 10  # transcript and exon rows skipped
    for position, genes in POINTS:
        assert index.overlapping("1", position - 1, position) == genes, position


def test_chromosome_aliases_and_unknown_contigs(gene_index: GeneIndex) -> None:
    assert gene_index.overlapping("chr1", 11868, 11869) == ["DDX11L1"]
    assert gene_index.overlapping("2", 11868, 11869) == []


@pytest.mark.parametrize(("name", "preset"), [("ensembl_excerpt.gtf", "gff"), ("ensembl_excerpt.bed", "bed")])
def test_tabix_indexed_files_are_queried_in_place(
    tmp_path: Path, name: str, preset: Literal["gff", "bed"]
) -> None:
    plain = tmp_path / name
    # tabix treats only '#' lines as comments, so drop the BED track line.
    plain.write_text("".join(line for line in (DATA / name).open() if not line.startswith("track")))
    compressed = pysam.tabix_index(str(plain), preset=preset, force=True)
    index = GeneIndex.from_file(compressed)
    assert isinstance(index, TabixGeneIndex)
    with index:
        for position, genes in POINTS:
            assert index.overlapping("1", position - 1, position) == genes, position
        assert index.overlapping("chr1", 14402, 14410) == ["DDX11L1", "WASH7P"]


def test_unknown_gene_file_extension_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"expected \.gtf"):
        detect_format(tmp_path / "genes.txt")
    assert detect_format("x.gff.gz") == "gff3"


def test_gzipped_plain_file_loads_into_memory(tmp_path: Path) -> None:
    target = tmp_path / "genes.bed.gz"
    with (DATA / "ensembl_excerpt.bed").open("rb") as src, gzip.open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    index = GeneIndex.from_file(target)
    assert isinstance(index, GeneIndex) and index.overlapping("1", 65418, 65419) == ["OR4F5"]


def test_annotator_reports_overlapping_genes_over_the_variant_span(gene_index: GeneIndex) -> None:
    # A deletion whose REF runs from DDX11L1 into WASH7P.
    deletion = annotate(msg("ACGTAC", "A", pos=14400), genes=gene_index).annotation
    assert list(deletion.overlapping_genes) == ["DDX11L1", "WASH7P"]
    # A symbolic deletion reaches to INFO END.
    sv = annotate(msg("A", "<DEL>", pos=11000, info={"SVTYPE": "DEL", "END": 17400}), genes=gene_index)
    assert list(sv.annotation.overlapping_genes) == ["DDX11L1", "WASH7P", "MIR6859-1"]
    assert sv.annotation.priority_tier == "P2"
    assert sv.annotation.priority_reasons[0] == "structural variant DEL overlaps DDX11L1, WASH7P, MIR6859-1"
    # Or SVLEN when END is missing.
    by_len = annotate(msg("A", "<DEL>", pos=52000, info={"SVLEN": -1000}), genes=gene_index).annotation
    assert list(by_len.overlapping_genes) == ["OR4G4P"]
    # An unannotated SNV in a gene, frequency unknown.
    snv = annotate(msg(pos=66000), genes=gene_index).annotation
    assert (list(snv.overlapping_genes), snv.priority_tier) == (["OR4F5"], "P3")
    assert snv.priority_reasons[0] == "inside OR4F5 without consequence annotation"
    assert list(annotate(msg(pos=66000)).annotation.overlapping_genes) == []


# --- the whole result ------------------------------------------------------------------------


def test_analysis_result_envelope_and_determinism() -> None:
    message = msg("G", "A", info={"ANN": [ANN_STOP_GAINED], "gnomAD_AF": 0.0001}, genotypes=[call([0, 1])])
    result = annotate(message, GNOMAD)
    assert (result.provider, result.model, result.status) == (
        PROVIDER,
        MODEL,
        analysis_pb2.AnalysisResult.STATUS_OK,
    )
    assert (result.provider, result.model) == ("local", "local-annotator/2")
    assert (result.correlation_id, result.job_id, result.tenant_id) == ("corr-1", "job-1", "tenant-1")
    assert result.rationale == (
        "snv in OR4F5: stop_gained (HIGH) on ENST00000335137 [most_severe]; population AF 0.0001 from"
        " INFO:gnomAD_AF (ultra_rare); ClinVar none; quality high -> uncertain_significance by ACMG/AMP"
        " 2015 Table 5 from no criterion met; P1: HIGH impact stop_gained and ultra_rare (AF 0.0001)"
    )
    assert annotate(message, GNOMAD).SerializeToString(deterministic=True) == result.SerializeToString(
        deterministic=True
    )


@pytest.mark.parametrize(
    "name",
    [
        "example-4.0.vcf",
        "example-4.1-sv.vcf",
        "example-4.1-ploidy.vcf",
        "gatk.vcf",
        "freebayes.vcf",
        "1kg.sites.vcf",
    ],
)
def test_every_real_record_annotates_within_the_vocabularies(name: str) -> None:
    messages = messages_from_vcf(PYVCF_FILES / name)
    assert messages
    for message in messages:
        result = annotate(message)
        annotation = result.annotation
        assert annotation.variant_class in ALLOWED["variant_class"]
        assert annotation.quality_tier in ALLOWED["quality"]
        assert annotation.frequency_tier in ALLOWED["frequency"]
        assert annotation.priority_tier in ALLOWED["priority"] and annotation.priority_reasons
        assert result.classification in ALLOWED["classification"]
        assert 0 < result.confidence <= 1
        # None of these files carries population data: nothing may be called benign (ACMG BA1/BS1).
        assert result.classification not in ("benign", "likely_benign")
        for finding in annotation.samples:
            assert finding.zygosity in ALLOWED["zygosity"]
            assert finding.call_quality in ALLOWED["quality"]
            assert finding.allele_balance == -1 or 0 <= finding.allele_balance <= 1


# --- transcript choice, VEP alleles, the job's context -----------------------------------------

VEP_FIELDS = ("Allele", "Consequence", "IMPACT", "SYMBOL", "Feature", "BIOTYPE", "PICK", "MANE_SELECT")


@pytest.mark.parametrize(
    ("flags", "transcript", "choice"),
    [
        # (PICK, MANE_SELECT) per entry of ENST1 (missense), ENST2 (stop_gained), ENST3 (synonymous).
        ((("", ""), ("", ""), ("1", "")), "ENST3", "PICK"),
        ((("", "NM_1.1"), ("", ""), ("", "")), "ENST1", "MANE_SELECT"),
        ((("", "NM_1.1"), ("", ""), ("1", "")), "ENST3", "PICK"),
        ((("", ""), ("", ""), ("", "")), "ENST2", "most_severe"),
    ],
)
def test_transcript_choice_prefers_pick_then_mane_select_then_canonical(
    flags: tuple[tuple[str, str], ...], transcript: str, choice: str
) -> None:
    context = AnnotationContext(csq_fields=VEP_FIELDS)
    terms = (("missense_variant", "MODERATE"), ("stop_gained", "HIGH"), ("synonymous_variant", "LOW"))
    csq = [
        f"A|{term}|{impact}|GENE|ENST{i + 1}|protein_coding|{pick}|{mane}"
        for i, ((term, impact), (pick, mane)) in enumerate(zip(terms, flags, strict=True))
    ]
    annotation = annotate(msg("G", "A", info={"CSQ": csq}), context).annotation
    assert (annotation.transcript, annotation.transcript_choice) == (transcript, choice)


def test_vep_allele_num_picks_this_alts_entries() -> None:
    # VEP --allele_number: ALLELE_NUM says which ALT an entry describes, whatever its allele text.
    context = AnnotationContext(
        csq_fields=("Allele", "Consequence", "IMPACT", "SYMBOL", "ALLELE_NUM", "MAX_AF")
    )
    csq = ["-|frameshift_variant|HIGH|G1|1|", "T|missense_variant|MODERATE|G1|2|0.3"]
    first = annotate(msg("CA", "C", alts=["C", "CT"], info={"CSQ": csq}), context).annotation
    second = annotate(msg("CA", "CT", alts=["C", "CT"], alt_index=1, info={"CSQ": csq}), context).annotation
    assert (first.consequence, first.frequency_tier) == ("frameshift_variant", "absent")
    assert (second.consequence, second.population_af) == ("missense_variant", pytest.approx(0.3))


def test_old_vep_allele_prefixed_frequencies_count_only_for_this_allele() -> None:
    # VEP before release 90 wrote GMAF=A:0.348 (the minor allele, possibly REF, and its frequency).
    context = AnnotationContext(csq_fields=("Allele", "Consequence", "GMAF", "EUR_MAF"))
    annotation = annotate(
        msg("A", "G", info={"CSQ": ["G|missense_variant|A:0.348|G:0.70"]}), context
    ).annotation
    assert (annotation.population_af, annotation.population_af_source) == (pytest.approx(0.7), "CSQ:EUR_MAF")


def test_population_key_pattern_is_configurable() -> None:
    header = [
        '##INFO=<ID=cohortdb_af,Number=A,Type=Float,Description="Allele frequency in our lab cohort DB">',
        '##INFO=<ID=gnomAD_AF,Number=A,Type=Float,Description="Alternate allele frequency in gnomAD">',
        '##INFO=<ID=AF,Number=A,Type=Float,Description="Allele frequency in gnomAD, this file">',
        '##INFO=<ID=CLNSIG,Number=.,Type=String,Description="Clinical significance">',
    ]
    assert list(annotation_context(header).population_keys) == ["gnomAD_AF"]
    assert list(annotation_context(header).clinvar_keys) == ["CLNSIG"]
    assert list(annotation_context(header, r"cohortdb").population_keys) == ["cohortdb_af"]


def test_a_clinvar_annotated_file_without_clnsig_on_a_record_says_not_listed() -> None:
    annotated = annotate(msg(info={"DP": 3}), AnnotationContext(clinvar_keys=("CLNSIG", "CLNREVSTAT")))
    assert "; ClinVar: not listed;" in annotated.rationale
    assert "; ClinVar none;" in annotate(msg(info={"DP": 3})).rationale


def test_vcf44_sv_example_has_no_quality_to_tier_and_every_allele_its_class() -> None:
    """hts-specs' examples/vcf/sv44.vcf (VCF 4.4's structural-variant example, one sample, GT only):
    nine records, QUAL `.` in every one, so neither the record nor the call has a quality to tier:
    "unknown", never the "medium" a missing QUAL was read as. Classes and genotypes checked by hand
    against the file: TGC>T a deletion; <DEL>, <DUP> and <INS> symbolic; T[chrA:5[, ]chrA:2]A and
    the single breakend .CCCCCCG breakends; G>GAAA an insertion; 0/1 het, 1/1 hom_alt."""
    path = Path(__file__).resolve().parents[1] / "data" / "hts-specs" / "examples" / "sv44.vcf"
    answers = [(m, annotate(m)) for m in messages_from_vcf(path)]
    assert [(m.position, m.alternate, r.annotation.variant_class) for m, r in answers] == [
        (2, "T", "deletion"),
        (2, "<DEL>", "symbolic"),
        (2, "T[chrA:5[", "breakend"),
        (2, "]chrA:2]A", "breakend"),
        (2, "<DEL>", "symbolic"),
        (5, "GAAA", "insertion"),
        (5, "<DUP>", "symbolic"),
        (14, "<INS>", "symbolic"),
        (14, ".CCCCCCG", "breakend"),
    ]
    assert {r.annotation.quality_tier for _, r in answers} == {"unknown"}
    assert [[(s.zygosity, s.call_quality) for s in r.annotation.samples] for _, r in answers] == [
        [("het", "unknown")]
    ] * 5 + [[("hom_alt", "unknown")]] * 2 + [[("het", "unknown")]] * 2
    assert all("quality unknown" in r.rationale for _, r in answers)
