"""A VEP CSQ in a non-default field order is read by the header's order, end to end from the file."""

from __future__ import annotations

from pathlib import Path

from vcf_agent.services.ingest._vcf_reader import VcfReader
from vcf_agent.services.router._local_annotator import LocalAnnotator

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
    with VcfReader(path, file_id="f", job_id="j", tenant_id="t", source_name="s") as reader:
        variant = next(iter(reader)).variants[0]
    result = LocalAnnotator().annotate(variant)
    annotation = result.annotation
    assert annotation.gene == "BRCA1"
    assert annotation.consequence == "stop_gained"
    assert annotation.impact == "HIGH"
    assert annotation.hgvs_c == "c.5266C>T"
