"""Genomic regions as queries name them: `chr`, `chr:pos` or `chr:start-end` (1-based, inclusive)."""

from __future__ import annotations

import re

# The largest value the stores' int64 position column can compare against.
INT64_MAX = (1 << 63) - 1
# Contig names never hold ':' or whitespace (VCF 4.3 section 1.4.7); commas group digits.
_REGION = re.compile(r"^(?P<chrom>[^:\s]+)(?::(?P<start>[\d,]+)(?:-(?P<end>[\d,]+))?)?$")


def parse_region(region: str) -> tuple[str, int | None, int | None]:
    """(contig, first, last); positions are None for a whole contig.

    Raises ValueError with a description that never repeats the input, since
    it ends up in an error answer.
    """
    match = _REGION.match(region.strip())
    if match is None:
        raise ValueError("expected chr, chr:pos or chr:start-end")
    start = match["start"]
    end = match["end"] or start
    first = int(start.replace(",", "")) if start else None
    last = int(end.replace(",", "")) if end else None
    if first is not None and last is not None:
        if last > INT64_MAX:
            raise ValueError(f"positions must be at most {INT64_MAX}")
        if last < first:
            raise ValueError("end before start")
    return match["chrom"], first, last
