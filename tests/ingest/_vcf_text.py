"""Building small VCF texts for tests: one header, records given as lists of columns."""

from __future__ import annotations

from pathlib import Path

HEADER = """##fileformat=VCFv4.3
##contig=<ID=chr1,length=1000000>
##contig=<ID=chr2,length=1000000>
##FILTER=<ID=LowQual,Description="Low quality">
##INFO=<ID=DP,Number=1,Type=Integer,Description="Total depth">
##INFO=<ID=AF,Number=A,Type=Float,Description="Allele frequency">
##INFO=<ID=AD2,Number=R,Type=Integer,Description="Depth per allele">
##INFO=<ID=DB,Number=0,Type=Flag,Description="dbSNP">
##INFO=<ID=GENE,Number=1,Type=String,Description="Gene">
##INFO=<ID=CH,Number=1,Type=Character,Description="One character">
##INFO=<ID=SVTYPE,Number=1,Type=String,Description="SV type">
##ALT=<ID=DEL,Description="Deletion">
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Depth">
##FORMAT=<ID=GQ,Number=1,Type=Integer,Description="Genotype quality">
##FORMAT=<ID=AD,Number=R,Type=Integer,Description="Allelic depths">
##FORMAT=<ID=PL,Number=G,Type=Integer,Description="Phred likelihoods">
"""

COLUMNS = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\tS2\n"
HEADER_LINES = HEADER.count("\n") + 1  # with the #CHROM line

GOOD = (
    "chr1\t100\trs1\tA\tG\t50\tPASS\tDP=10;AF=0.5\tGT:DP:GQ:AD:PL"
    "\t0/1:10:99:5,5:0,10,100\t0|0:8:50:8,0:0,20,200"
)


def record(**columns: str) -> str:
    """GOOD with some columns replaced, by name (chrom, pos, id, ref, alt, ..., format, s1, s2)."""
    names = ["chrom", "pos", "id", "ref", "alt", "qual", "filter", "info", "format", "s1", "s2"]
    values = GOOD.split("\t")
    for name, value in columns.items():
        values[names.index(name)] = value
    return "\t".join(values)


def write_vcf(path: Path, records: list[str], *, header: str = HEADER, columns: str = COLUMNS) -> Path:
    path.write_text(header + columns + "".join(r + "\n" for r in records), encoding="utf-8")
    return path
