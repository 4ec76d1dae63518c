"""Which genes a variant overlaps, from a user-supplied GTF, GFF3 or BED file.

Plain files are read once into per-chromosome arrays sorted by start with a
running maximum of ends, so a lookup is one bisect plus a short backward walk
that stops as soon as no earlier interval can reach the query. Bgzipped files
with a tabix index are queried in place instead, for annotation sets too big to
hold in memory.

Everything is stored 0-based half-open: BED is already, GTF/GFF3 starts move
down by one (their ends are inclusive 1-based, which is the same number).
Only gene rows count (GTF "gene", GFF3 gene/ncRNA_gene/pseudogene, every BED
line): transcripts and exons would repeat the same gene many times over.
"""

from __future__ import annotations

import gzip
import os
import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol
from urllib.parse import unquote

import pysam

Format = Literal["gtf", "gff3", "bed"]

# Ensembl GFF3 splits "gene" by biotype.
_GFF3_GENE_TYPES = frozenset({"gene", "ncRNA_gene", "pseudogene"})


class GeneLookup(Protocol):
    """What the annotator needs: gene names overlapping a 0-based half-open interval."""

    def overlapping(self, chromosome: str, start: int, end: int) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class GeneInterval:
    chromosome: str
    start: int
    end: int
    name: str


def detect_format(path: str | os.PathLike[str]) -> Format:
    """From the file name: .gtf, .gff/.gff3 or .bed, optionally followed by .gz/.bgz."""
    name = os.fspath(path).lower()
    for suffix in (".gz", ".bgz"):
        name = name.removesuffix(suffix)
    if name.endswith(".gtf"):
        return "gtf"
    if name.endswith((".gff3", ".gff")):
        return "gff3"
    if name.endswith(".bed"):
        return "bed"
    raise ValueError(f"cannot tell the format of {os.fspath(path)!r}: expected .gtf, .gff3, .gff or .bed")


def _gtf_attribute(attributes: str, key: str) -> str:
    """Value of `key "value";` in a GTF attribute column; empty when absent."""
    for item in attributes.split(";"):
        name, _, value = item.strip().partition(" ")
        if name == key:
            return value.strip().strip('"')
    return ""


def _gff3_attribute(attributes: str, key: str) -> str:
    for item in attributes.split(";"):
        name, _, value = item.partition("=")
        if name.strip() == key:
            return unquote(value.strip())
    return ""


def _gtf_gene(columns: list[str]) -> GeneInterval | None:
    if columns[2] != "gene":
        return None
    attributes = columns[8]
    name = _gtf_attribute(attributes, "gene_name") or _gtf_attribute(attributes, "gene_id")
    return GeneInterval(columns[0], int(columns[3]) - 1, int(columns[4]), name)


def _gff3_gene(columns: list[str]) -> GeneInterval | None:
    if columns[2] not in _GFF3_GENE_TYPES:
        return None
    attributes = columns[8]
    name = (
        _gff3_attribute(attributes, "Name")
        or _gff3_attribute(attributes, "gene_name")
        or _gff3_attribute(attributes, "gene_id")
        or _gff3_attribute(attributes, "ID").removeprefix("gene:")
    )
    return GeneInterval(columns[0], int(columns[3]) - 1, int(columns[4]), name)


def _bed_gene(columns: list[str]) -> GeneInterval | None:
    start, end = int(columns[1]), int(columns[2])
    name = columns[3] if len(columns) > 3 and columns[3] else f"{columns[0]}:{start + 1}-{end}"
    return GeneInterval(columns[0], start, end, name)


_PARSERS = {"gtf": _gtf_gene, "gff3": _gff3_gene, "bed": _bed_gene}
_MIN_COLUMNS = {"gtf": 9, "gff3": 9, "bed": 3}


def parse_line(line: str, fmt: Format) -> GeneInterval | None:
    """The gene on one line, or None for comments, headers and non-gene features."""
    if not line or line.startswith(("#", "track", "browser")):
        return None
    columns = line.rstrip("\n\r").split("\t")
    if len(columns) < _MIN_COLUMNS[fmt]:
        return None
    return _PARSERS[fmt](columns)


def _read_lines(path: Path) -> Iterator[str]:
    with path.open("rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    with opener(path, "rt", encoding="utf-8") as handle:
        yield from handle


def _alias_names(names: Iterable[str]) -> dict[str, str]:
    """Lookup name -> stored name, so "chr1"/"1" and "chrM"/"MT" reach the same contig."""
    aliases: dict[str, str] = {}
    for name in names:
        bare = name.removeprefix("chr")
        for alias in (bare, f"chr{bare}", *(("M", "MT", "chrM", "chrMT") if bare in ("M", "MT") else ())):
            aliases.setdefault(alias, name)
    for name in names:
        aliases[name] = name
    return aliases


class _Contig:
    __slots__ = ("ends", "max_ends", "names", "starts")

    def __init__(self, genes: list[GeneInterval]) -> None:
        genes.sort(key=lambda gene: (gene.start, gene.end))
        self.starts = [gene.start for gene in genes]
        self.ends = [gene.end for gene in genes]
        self.names = [gene.name for gene in genes]
        running = -1
        self.max_ends: list[int] = []
        for end in self.ends:
            running = max(running, end)
            self.max_ends.append(running)


class GeneIndex:
    """In-memory interval index over the genes of one annotation file."""

    def __init__(self, genes: Iterable[GeneInterval]) -> None:
        by_contig: dict[str, list[GeneInterval]] = {}
        for gene in genes:
            by_contig.setdefault(gene.chromosome, []).append(gene)
        self._contigs = {name: _Contig(items) for name, items in by_contig.items()}
        self._aliases = _alias_names(self._contigs)
        self.gene_count = sum(len(contig.starts) for contig in self._contigs.values())

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], fmt: Format | None = None) -> GeneLookup:
        """Load a GTF/GFF3/BED file; a bgzipped file with a .tbi/.csi index is queried via tabix instead."""
        source = Path(path)
        fmt = fmt or detect_format(source)
        if any(Path(f"{source}{suffix}").exists() for suffix in (".tbi", ".csi")):
            return TabixGeneIndex(source, fmt)
        return cls(gene for line in _read_lines(source) if (gene := parse_line(line, fmt)) is not None)

    def overlapping(self, chromosome: str, start: int, end: int) -> list[str]:
        """Names of genes overlapping [start, end) (0-based half-open), in start order, each once."""
        name = self._aliases.get(chromosome)
        if name is None:
            return []
        contig = self._contigs[name]
        index = bisect_left(contig.starts, end) - 1
        found: list[str] = []
        max_ends, ends, names = contig.max_ends, contig.ends, contig.names
        # Walk left while some interval at or before `index` can still reach past `start`.
        while index >= 0 and max_ends[index] > start:
            if ends[index] > start and names[index] not in found:
                found.append(names[index])
            index -= 1
        found.reverse()
        return found


class TabixGeneIndex:
    """Gene lookups against a bgzipped, tabix-indexed GTF/GFF3/BED without loading it."""

    def __init__(self, path: Path, fmt: Format) -> None:
        self._fmt: Format = fmt
        self._file = pysam.TabixFile(os.fspath(path))
        self._aliases = _alias_names(self._file.contigs)
        # One htslib handle: concurrent fetches from worker threads would interleave its reads.
        self._lock = threading.Lock()

    def overlapping(self, chromosome: str, start: int, end: int) -> list[str]:
        name = self._aliases.get(chromosome)
        if name is None:
            return []
        with self._lock:
            lines = list(self._file.fetch(name, start, end))
        found: list[str] = []
        for line in lines:
            gene = parse_line(line, self._fmt)
            # Tabix returns every overlapping feature row (transcripts, exons too); keep the genes.
            if gene is not None and gene.name not in found:
                found.append(gene.name)
        return found

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TabixGeneIndex:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
