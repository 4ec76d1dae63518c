"""Synthetic VCF files for tests and benchmarks.

Real files are either tiny (test fixtures) or too big to ship, so throughput
numbers and bounded-memory checks need a generator that can produce any size
with a realistic field mix. Output is fully determined by the seed.
"""

from __future__ import annotations

import gzip
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pysam

_BASES = "ACGT"
_CONTIG_LENGTH = 250_000_000

_HEADER_META = """##fileformat=VCFv4.2
##source=vcf_agent.synthetic
##INFO=<ID=DP,Number=1,Type=Integer,Description="Total depth">
##INFO=<ID=AF,Number=A,Type=Float,Description="Allele frequency per ALT">
##INFO=<ID=AC,Number=A,Type=Integer,Description="Allele count per ALT">
##INFO=<ID=DB,Number=0,Type=Flag,Description="dbSNP membership">
##INFO=<ID=GENE,Number=1,Type=String,Description="Gene symbol">
##FILTER=<ID=LowQual,Description="Low quality">
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Read depth">
##FORMAT=<ID=GQ,Number=1,Type=Integer,Description="Genotype quality">
##FORMAT=<ID=AD,Number=R,Type=Integer,Description="Allelic depths">
"""

# As SnpEff 4.x writes it.
_ANN_HEADER = (
    "##INFO=<ID=ANN,Number=.,Type=String,Description=\"Functional annotations: 'Allele | Annotation"
    " | Annotation_Impact | Gene_Name | Gene_ID | Feature_Type | Feature_ID | Transcript_BioType | Rank"
    " | HGVS.c | HGVS.p | cDNA.pos / cDNA.length | CDS.pos / CDS.length | AA.pos / AA.length | Distance"
    " | ERRORS / WARNINGS / INFO' \">\n"
)
_GENES = ("BRCA1", "BRCA2", "TP53", "EGFR", "KRAS", "CFTR", "APOE", "MTHFR")


@dataclass(frozen=True, slots=True)
class SyntheticVcfSpec:
    """Shape of a generated file; `records` counts data lines, not ALT alleles."""

    records: int
    samples: int = 1
    seed: int = 0
    chromosomes: int = 2
    # Fractions of records that get a second ALT / an indel ALT.
    multi_allelic_fraction: float = 0.0
    indel_fraction: float = 0.0
    # "uniform": every allele of a call equally likely (most calls carry an ALT).
    # "population": each record draws an ALT frequency from the 1/f site-frequency
    # spectrum of a neutral population (Watterson), as in 1000 Genomes, where most
    # sites are rare and most calls hom-ref.
    allele_frequencies: str = "uniform"
    # Also write the GENE as a SnpEff ANN annotation of each ALT (what annotators read), so
    # stored variants carry genes; off by default so existing seeds keep their output.
    gene_annotations: bool = False


def sample_names(count: int) -> list[str]:
    return [f"S{i:04d}" for i in range(count)]


def expected_variant_count(path: str | os.PathLike[str]) -> int:
    """Variants (ALT alleles) in a generated file, counted from its text for cross-checks."""
    total = 0
    opener = gzip.open if _is_gzip(path) else open
    with opener(path, "rb") as fh:
        for line in fh:
            if line.startswith(b"#"):
                continue
            alt = line.split(b"\t", 5)[4]
            total += 0 if alt == b"." else alt.count(b",") + 1
    return total


def _is_gzip(path: str | os.PathLike[str]) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _record(rng: random.Random, spec: SyntheticVcfSpec, chrom: str, pos: int, index: int) -> str:
    ref = rng.choice(_BASES)
    alts = [rng.choice([b for b in _BASES if b != ref])]
    if rng.random() < spec.indel_fraction:
        if rng.random() < 0.5:
            alts[0] = ref + "".join(rng.choice(_BASES) for _ in range(rng.randint(1, 4)))
        else:
            ref = ref + "".join(rng.choice(_BASES) for _ in range(rng.randint(1, 4)))
            alts[0] = ref[0]
    if rng.random() < spec.multi_allelic_fraction:
        extra = rng.choice([b for b in _BASES if b != ref[0] and b != alts[0]])
        alts.append(extra if len(ref) == 1 else ref[0] + extra)
    n_alleles = len(alts) + 1
    qual = "." if index % 97 == 0 else f"{rng.uniform(1, 999):.2f}"
    filt = "LowQual" if qual != "." and float(qual) < 20 else "PASS"
    af = ",".join(f"{rng.random():.4f}" for _ in alts)
    ac = ",".join(str(rng.randint(1, 2 * max(spec.samples, 1))) for _ in alts)
    info = f"DP={rng.randint(5, 500)};AF={af};AC={ac}"
    if rng.random() < 0.3:
        info += ";DB"
    if rng.random() < 0.5:
        gene = rng.choice(_GENES)
        info += f";GENE={gene}"
        if spec.gene_annotations:
            info += ";ANN=" + ",".join(
                f"{alt}|missense_variant|MODERATE|{gene}|{gene}|transcript" for alt in alts
            )
    vid = f"rs{1_000_000 + index}" if rng.random() < 0.4 else "."
    fields = [chrom, str(pos), vid, ref, ",".join(alts), qual, filt, info]
    if spec.samples and spec.allele_frequencies == "population":
        fields.append("GT:DP:GQ:AD")
        fields.extend(_population_calls(rng, spec.samples, n_alleles))
    elif spec.samples:
        fields.append("GT:DP:GQ:AD")
        for _ in range(spec.samples):
            if rng.random() < 0.02:
                fields.append("./.:.:.:.")
                continue
            a, b = rng.randrange(n_alleles), rng.randrange(n_alleles)
            sep = "|" if rng.random() < 0.3 else "/"
            depth = rng.randint(0, 200)
            ad = ",".join(str(rng.randint(0, depth)) for _ in range(n_alleles))
            fields.append(f"{a}{sep}{b}:{depth}:{rng.randint(0, 99)}:{ad}")
    return "\t".join(fields) + "\n"


def _population_calls(rng: random.Random, samples: int, n_alleles: int) -> list[str]:
    """Calls with an ALT frequency f drawn with density proportional to 1/f over [1/2n, 1/2].

    Hom-ref calls share one text, so a cohort of thousands stays cheap to write.
    """
    low = 1 / (2 * samples)
    frequency = low * (0.5 / low) ** rng.random()
    hom_ref = "0/0:30:99:30" + ",0" * (n_alleles - 1)
    calls = []
    for _ in range(samples):
        a = 1 if rng.random() < frequency else 0
        b = 1 if rng.random() < frequency else 0
        if a or b:
            alt_depth = 15 * (a + b) // 2
            calls.append(f"{a}|{b}:30:99:{30 - alt_depth},{alt_depth}" + ",0" * (n_alleles - 2))
        else:
            calls.append(hom_ref)
    return calls


def _write_records(
    write: Callable[[bytes], object],
    rng: random.Random,
    spec: SyntheticVcfSpec,
    header: str,
    chroms: list[str],
) -> None:
    write(header.encode())
    per_chrom = -(-spec.records // len(chroms)) if spec.records else 0
    chunk: list[str] = []
    written = 0
    for chrom in chroms:
        pos = 0
        for _ in range(min(per_chrom, spec.records - written)):
            pos += rng.randint(1, 200)
            chunk.append(_record(rng, spec, chrom, pos, written))
            written += 1
            # Bounded chunks keep memory flat for any file size.
            if len(chunk) >= 10_000:
                write("".join(chunk).encode())
                chunk.clear()
    if chunk:
        write("".join(chunk).encode())


def write_synthetic_vcf(
    path: str | os.PathLike[str],
    spec: SyntheticVcfSpec,
    *,
    bgzip: bool = False,
    index: bool = False,
) -> Path:
    """Write a sorted VCF (plain, or BGZF when `bgzip`; tabix-indexed when `index`)."""
    out = Path(path)
    rng = random.Random(spec.seed)
    chroms = [f"chr{i + 1}" for i in range(spec.chromosomes)]
    header = (
        _HEADER_META
        + (_ANN_HEADER if spec.gene_annotations else "")
        + "".join(f"##contig=<ID={c},length={_CONTIG_LENGTH}>\n" for c in chroms)
    )
    columns = ["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO"]
    if spec.samples:
        columns += ["FORMAT", *sample_names(spec.samples)]
    header += "\t".join(columns) + "\n"
    # BGZFile writes valid BGZF blocks directly, so no temporary plain file is needed.
    if bgzip:
        with pysam.BGZFile(os.fspath(out), "wb", index=None) as fh:
            _write_records(fh.write, rng, spec, header, chroms)
    else:
        with open(out, "wb") as fh:
            _write_records(fh.write, rng, spec, header, chroms)
    if index:
        if not bgzip:
            raise ValueError("an index needs a bgzipped file")
        pysam.tabix_index(os.fspath(out), preset="vcf", force=True)
    return out
