"""Types of the compiled record encoder (_record_encoder.c)."""

from collections.abc import Mapping

# A FORMAT layout as the encoder reads it: (width, GT position, checks ploidy,
# per-ALT-count caches, per-key (native code, Number code)), then anything the caller keeps.
Layout = tuple[
    int, int, bool, dict[int, list[dict[str, bytes]]], tuple[tuple[int, int], ...], *tuple[object, ...]
]

class RecordEncoder:
    line_number: int
    record_index: int
    last_pos: int
    placeholder_alleles: int
    reference_blocks: int
    position: int
    max_record_bytes: int
    chrom: str
    suffix: bytes
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
    ) -> None: ...
    def encode(self, line: str) -> list[bytes] | None: ...
