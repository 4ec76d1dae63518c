"""The pure-Python twin of the compiled record encoder (_record_encoder.c).

The compiled encoder is a fast path: for a line whose every value is in the reader's caches it
writes the bytes the Python encoder (VcfReader._encode_slow) would write, and for any other
line it returns None, leaving the line to the Python encoder. So the twin returns None for every
line, and only keeps the reader's counters the compiled encoder otherwise holds. Used when the
extension was not built or VCF_AGENT_NO_EXTENSIONS=1 (see vcf_agent.compiled).
"""

from __future__ import annotations

from collections.abc import Mapping

# A FORMAT layout as the compiled encoder reads it: (width, GT position, checks ploidy,
# per-ALT-count caches, per-key (native code, Number code)), then anything the caller keeps.
Layout = tuple[
    int, int, bool, dict[int, list[dict[str, bytes]]], tuple[tuple[int, int], ...], *tuple[object, ...]
]


class RecordEncoder:
    """Counters of the read in progress; `encode` leaves every line to the Python encoder."""

    __slots__ = (
        "chrom",
        "last_pos",
        "line_number",
        "max_record_bytes",
        "placeholder_alleles",
        "position",
        "record_index",
        "reference_blocks",
        "suffix",
    )

    def __init__(
        self,
        *,
        columns: int,
        numbered: bool,
        prefix: bytes,
        job_fields: bytes,
        sample_fields: tuple[bytes, ...],
        chrom_fields: dict[str, bytes],
        refs: dict[str, bytes],
        alts: dict[str, tuple[list[str], list[bytes], bytes]],
        quals: dict[str, bytes],
        filters: dict[str, bytes],
        info: dict[int, dict[str, bytes]],
        layouts: Mapping[str, Layout],
        non_diploid: dict[str, int],
        info_natives: dict[str, tuple[int, int, bytes]],
    ) -> None:
        if columns < 8 or (columns > 8 and len(sample_fields) != columns - 9):
            raise ValueError("columns must be 8, or 9 plus one per sample field")
        self.line_number = 0
        self.record_index = -1
        self.last_pos = -1
        self.placeholder_alleles = 0
        self.reference_blocks = 0
        self.position = 0
        # Kept for the compiled encoder's interface; the Python encoder checks the bound itself.
        self.max_record_bytes = 0
        self.chrom = ""
        self.suffix = b""

    def encode(self, line: str) -> list[bytes] | None:
        """None: the Python encoder handles the line."""
        return None
