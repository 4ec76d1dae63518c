"""Genotypes as ingest publishes them, column-wise (GenotypeColumns): every shape a VCF call takes,
read back through vcf_agent.schema.genotype_calls, and written byte for byte as
vcf_agent.schema.genotype_columns writes the same calls.

Runs with whichever encoder the reader has (the compiled fast path, or with
VCF_AGENT_NO_EXTENSIONS=1 the Python path alone); test_record_encoder.py holds the two to the
same bytes on these records.
"""

from __future__ import annotations

from pathlib import Path

from vcf_agent.schema import GenotypeCall, genotype_calls, genotype_columns
from vcf_agent.services.ingest._vcf_reader import VcfReader
from vcf_agent.v1 import variant_pb2

from ._vcf_text import HEADER

SAMPLE_COLUMNS = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\tS2\tS3\tS4\n"

# (record, each sample's call); every ALT of a record carries the record's calls.
SHAPES: list[tuple[str, list[GenotypeCall]]] = [
    (
        # Multi-allelic, phased and unphased, `.` alleles, DP/GQ/AD missing in part or whole.
        "chr1\t100\t.\tA\tG,T\t50\tPASS\t.\tGT:DP:GQ:AD\t0|1:10:99:5,5,0\t1/2:.:.:.\t./.:3:20:1,.,0\t2|2:7:.:0,0,7",
        [
            GenotypeCall("S1", (0, 1), True, 10, 99, (5, 5, 0)),
            GenotypeCall("S2", (1, 2), False, -1, -1, ()),
            GenotypeCall("S3", (-1, -1), False, 3, 20, (1, -1, 0)),
            GenotypeCall("S4", (2, 2), True, 7, -1, (0, 0, 7)),
        ],
    ),
    (
        # Haploid, triploid, a bare `.` and dropped trailing values; no sample has GQ or AD.
        "chr1\t200\t.\tC\tA\t50\tPASS\t.\tGT:DP\t1:4\t0/1/1:9\t.\t0|1",
        [
            GenotypeCall("S1", (1,), False, 4),
            GenotypeCall("S2", (0, 1, 1), False, 9),
            GenotypeCall("S3", (-1,), False, -1),
            GenotypeCall("S4", (0, 1), True, -1),
        ],
    ),
    (
        # No GT at all: one missing allele each, as htslib reads it.
        "chr1\t300\t.\tG\tC\t50\tPASS\t.\tDP:AD\t5:2,3\t.:.\t0:0,0\t7:.",
        [
            GenotypeCall("S1", (-1,), False, 5, -1, (2, 3)),
            GenotypeCall("S2", (-1,), False, -1, -1, ()),
            GenotypeCall("S3", (-1,), False, 0, -1, (0, 0)),
            GenotypeCall("S4", (-1,), False, 7, -1, ()),
        ],
    ),
    (
        # DP and GQ present but missing for every sample: their columns stay empty.
        "chr1\t400\t.\tT\tG\t50\tPASS\t.\tGT:DP:GQ\t0/0:.:.\t0/1:.:.\t./.:.:.\t1/1:.:.",
        [
            GenotypeCall("S1", (0, 0)),
            GenotypeCall("S2", (0, 1)),
            GenotypeCall("S3", (-1, -1)),
            GenotypeCall("S4", (1, 1)),
        ],
    ),
]


def _variants(path: Path) -> list[variant_pb2.VariantMessage]:
    with VcfReader(path, file_id="f" * 64, job_id="j", tenant_id="t", source_name=path.name) as reader:
        variants = [v for batch in reader for v in batch.variants]
        assert reader.take_dead_letters() == []
    return variants


def _shapes_file(path: Path, copies: int) -> Path:
    """The shapes again and again at increasing positions, so later copies meet warm caches."""
    lines = []
    for copy in range(copies):
        for record, _ in SHAPES:
            columns = record.split("\t")
            columns[1] = str(int(columns[1]) + copy * 1000)
            lines.append("\t".join(columns) + "\n")
    path.write_text(HEADER + SAMPLE_COLUMNS + "".join(lines), encoding="utf-8")
    return path


def test_every_call_shape_reads_back_and_is_written_as_the_builder_writes_it(tmp_path: Path) -> None:
    copies = 3
    variants = _variants(_shapes_file(tmp_path / "shapes.vcf", copies))
    expected = [
        calls for _ in range(copies) for record, calls in SHAPES for _ in record.split("\t")[4].split(",")
    ]
    assert len(variants) == len(expected)
    for variant, calls in zip(variants, expected, strict=True):
        assert genotype_calls(variant.genotypes) == calls, variant.position
        # Byte for byte: the wire bytes of the columns are what the builder writes for these calls.
        assert variant.genotypes.SerializeToString() == genotype_columns(calls).SerializeToString()


def test_columns_that_hold_nothing_are_left_out(tmp_path: Path) -> None:
    variants = _variants(_shapes_file(tmp_path / "shapes.vcf", 1))
    by_position = {v.position: v.genotypes for v in variants}
    # Nobody phased, no GQ, no AD at 200; every DP and GQ missing at 400; no GT at 300.
    assert by_position[200].phased == b"\x08" and not by_position[200].genotype_quality
    assert not by_position[200].allele_depth_counts and not by_position[200].allele_depths
    assert (
        not by_position[400].depth and not by_position[400].genotype_quality and not by_position[400].phased
    )
    assert list(by_position[300].ploidy) == [1, 1, 1, 1] and list(by_position[300].alleles) == [-1] * 4
    assert list(by_position[100].allele_depth_counts) == [3, 0, 3, 3]


def test_a_file_without_samples_publishes_no_genotype_columns(tmp_path: Path) -> None:
    sites = tmp_path / "sites.vcf"
    columns = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    sites.write_text(HEADER + columns + "chr1\t100\t.\tA\tG\t50\tPASS\t.\n", encoding="utf-8")
    (variant,) = _variants(sites)
    assert not variant.HasField("genotypes") and genotype_calls(variant.genotypes) == []
    # The builder agrees: no calls, no samples.
    assert genotype_calls(genotype_columns([])) == []
