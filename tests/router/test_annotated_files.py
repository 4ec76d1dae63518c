"""ACMG/AMP 2015 evidence on real annotated files nobody here wrote, checked by hand against them.

Files (installed by scripts/install-test-data.sh from pinned Debian packages):
- vcfanno-examples 0.3.5: example/exac.vcf.gz, 148 records of the ExAC r0.3 sites VCF around
  OR4F5 with Ensembl VEP's CSQ (ALLELE_NUM, BIOTYPE, CANONICAL, HGVSc/HGVSp, the population
  fields GMAF, AFR/AMR/ASN/EUR_MAF, AA/EA_MAF in VEP's old "ALLELE:FREQ" form, and CLIN_SIG).
- python3-cyvcf2 0.30.18: tests/test.vcf.gz, a GEMINI-annotated extract with VEP CSQ (no Allele
  column), SnpEff ANN and vcfanno INFO keys holding 1000 Genomes and ExAC frequencies
  (aaf_1kg_*_float, aaf_adj_exac_*_float: "calculated by max of overlapping values in field
  EUR_AF from ...ALL.wgs.phase3...", so population data).
- pyvcf3 1.0.4 (dev dependency) and the bundled example: caller output without population data.
- geneimpacts 0.3.8 (PyPI): real bcftools csq strings (tests/bcfts.txt.gz), incl. a compound
  frameshift at 874816 and the '@874816' links of the records it spans.

The ExAC file's records break a VCF MUST rule elsewhere (DP_HIST is Number=A with two values),
so ingest dead-letters them; they are read here through htslib (analyse_records), with the
context built from the file's header exactly as ingest builds it.

Criteria, as the annotator applies them: BA1 AF > 0.05 (Richards 2015 Table 4; ClinGen SVI
2018), BS1 AF > 0.01 (the configured disorder threshold), PM2_Supporting when absent from every
population source annotated (ClinGen SVI PM2 v1.0); combined by Richards 2015 Table 5.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import vcf  # pyvcf3: only its bundled test files are used

from vcf_agent.config import Settings
from vcf_agent.pipeline import LocalPipeline
from vcf_agent.services.ingest._annotation_context import annotation_context
from vcf_agent.services.writer._lance_store import LanceStore, VariantQuery
from vcf_agent.v1 import analysis_pb2, events_pb2

from ._file_analysis import analyse_file, analyse_records, at

DEBIAN = Path(__file__).parents[2] / ".venv" / "test-data" / "debian"
EXAC = DEBIAN / "usr/share/doc/vcfanno-examples/example/exac.vcf.gz"
CYVCF2 = DEBIAN / "usr/lib/python3/dist-packages/cyvcf2/tests/test.vcf.gz"
PYVCF_FILES = Path(vcf.__file__).parent / "test"
EXAMPLE = Path(__file__).parents[2] / "src" / "vcf_agent" / "examples" / "gatk-multisample.vcf"

needs_exac = pytest.mark.skipif(
    not EXAC.exists(), reason="Debian package vcfanno-examples not unpacked (scripts/install-test-data.sh)"
)
needs_cyvcf2 = pytest.mark.skipif(
    not CYVCF2.exists(), reason="Debian package python3-cyvcf2 not unpacked (scripts/install-test-data.sh)"
)


def criteria(result: analysis_pb2.AnalysisResult) -> list[tuple[str, bool, str, str]]:
    return [(c.code, c.met, c.value, c.source) for c in result.annotation.acmg_criteria]


@pytest.fixture(scope="module")
def exac() -> list[analysis_pb2.AnalysisResult]:
    return analyse_records(EXAC)


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
    settings = Settings.from_env(data_dir=tmp_path / "data", bus_url=f"memory://acmg-{tmp_path.name}")
    async with LocalPipeline(settings) as pipeline:
        job_id = await pipeline.submit(CYVCF2)
        job = await pipeline.wait(job_id, timeout_s=120)
        assert events_pb2.JobState.Name(job.state) == "JOB_STATE_COMPLETE", job.error
        store = pipeline.parts["writer"].state["lance"]
        assert isinstance(store, LanceStore)
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
