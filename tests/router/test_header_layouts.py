"""A VEP CSQ in a non-default field order is read by the header's order: ingest builds the job's
annotation context from the file's header and every batch carries it to the router."""

from __future__ import annotations

from pathlib import Path

from vcf_agent.analysis._local_annotator import LocalAnnotator

from ._file_analysis import analyse_file

# Fields in an order VEP produces with custom --fields; the default CSQ layout starts with Allele.
HEADER = (
    "##fileformat=VCFv4.2\n"
    "##contig=<ID=chr17,length=83257441>\n"
    '##INFO=<ID=CSQ,Number=.,Type=String,Description="Consequence annotations from Ensembl VEP. '
    'Format: SYMBOL|Consequence|IMPACT|Allele|HGVSc|CANONICAL">\n'
    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
)
RECORD = (
    "chr17\t43045712\t.\tG\tA\t50\tPASS\t"
    "CSQ=BRCA1|synonymous_variant|LOW|A|c.100C>T|,BRCA1|stop_gained|HIGH|A|c.5266C>T|YES\n"
)


def test_consequence_and_gene_follow_the_files_declared_field_order(tmp_path: Path) -> None:
    path = tmp_path / "custom_csq.vcf"
    path.write_text(HEADER + RECORD)
    (result,) = analyse_file(path)
    annotation = result.annotation
    assert annotation.gene == "BRCA1"
    assert annotation.consequence == "stop_gained"
    assert annotation.impact == "HIGH"
    assert annotation.hgvs_c == "c.5266C>T"


def test_without_the_jobs_context_the_default_layout_misreads_it(tmp_path: Path) -> None:
    # What the router did before the context travelled: VEP's default order puts Allele first.
    path = tmp_path / "custom_csq.vcf"
    path.write_text(HEADER + RECORD)
    (result,) = analyse_file(path)
    without = LocalAnnotator().annotate(result.variant)
    assert without.annotation.gene != "BRCA1"
