"""VCF/BCF records to serialized `VariantBatch`es, one `VariantMessage` per ALT allele.

Speed is the point of this module. Building `VariantMessage`s through the
protobuf Python API costs ~1.3 us per genotype call and ~1.5 us per INFO entry
(measured with upb), so records are encoded straight to protobuf wire bytes
here. Plain and gzipped VCF are read as text lines (see _vcf_source); BCF and
region queries come through pysam as the same text. Every field value's
encoding is cached, and a value enters a cache only after the checks of
_vcf_validator pass, so validation costs one dict lookup per value on a hit.
The bus publishes the bytes as they are; `EncodedBatch.decode()` parses them.

Decisions:
- A record whose ALT is `.` (REF-only) yields no variant; it still consumes a
  record_index and is counted in `ReadCounters.ref_only_records`.
- gVCF's `<*>` and `<NON_REF>` stand for "any allele not listed" (VCF 4.3+
  §5.5): they are not variants. A record whose only ALTs they are (a
  reference block) yields none and is counted in `reference_blocks`; in a
  record with real ALTs they are skipped (counted in `placeholder_alleles`)
  and the real ALTs keep their `alt_index`.
- A SHOULD not followed (undeclared INFO/FORMAT/FILTER key, unsorted POS,
  contig without a ##contig line) is a warning and the record flows; an
  undeclared key is typed as htslib types it (see VcfHeader.declare_info).
- A record that breaks the spec yields no variant either: it consumes a
  record_index and becomes a DeadLetter with its line, raw text and reason.
- INFO values with Number=A/R/G keep the full list on every ALT's message; the
  ALT's position is `alt_index` (+1 for Number=R), so nothing is lost or guessed.
- Missing INFO values (`.`) are dropped from lists; an entry with no values left
  is omitted. String INFO with Number=1 is kept whole (commas included).
- VEP CSQ, SnpEff ANN and bcftools BCSQ stay as written: their subfield names ride
  once per batch in VariantBatch.annotation_context, read from this header.
- String values of VCF 4.3+ files are percent-decoded.
- A float-typed DP/GQ (older GATK writes GQ as Float) is rounded to an int.
- `phased` is true when every separator of the GT is `|` (a haploid GT is unphased).
- With `region`, record_index counts records within the region and
  line_number is 0: positions in the whole file are unknown without reading it.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self, cast

from vcf_agent.compiled import compiled_module
from vcf_agent.schema import SMALL_VARINTS, correlation_prefix, file_digest_hasher, length_delimited, varint
from vcf_agent.v1 import events_pb2, variant_pb2
from vcf_agent.v1 import wire_numbers as wire

from ._input_limits import InputLimitError, InputLimits
from ._record_encoder_py import RecordEncoder as PythonRecordEncoder
from ._vcf_header import ISSUE_LIMIT, FieldDef, Issue, IssueList, VcfFileError, VcfHeader, parse_header

__all__ = [
    "ISSUE_LIMIT",
    "EncodedBatch",
    "ReadCounters",
    "ReadPosition",
    "VcfFileError",
    "VcfReader",
    "file_digest",
]
from ._vcf_source import VcfText, open_vcf_text
from ._vcf_validator import (
    INT_MAX,
    INT_MIN,
    VALUE_CODES,
    RecordError,
    RecordRules,
    TypedValues,
    expected_count,
)

DEFAULT_BATCH_SIZE = 1000

# Cached encodings are dropped wholesale past this size so memory stays bounded
# on files with high-cardinality values.
_CACHE_LIMIT = 50_000
# FORMAT strings whose layout is kept; real files have a handful (a gVCF tens).
_LAYOUT_LIMIT = 1_000

_DIGEST_CHUNK = 1 << 20

# Bytes of a variant message beyond the record's shared fields: tags, lengths, the
# correlation id and alt_index (as the compiled encoder's bound counts them).
_VARIANT_OVERHEAD = 64

# gVCF's "any other allele": `<*>` (VCF 4.3+ §5.5, preferred) or GATK's `<NON_REF>`.
GVCF_PLACEHOLDERS = frozenset({"<*>", "<NON_REF>"})


def _string_field(tag: bytes, value: str) -> bytes:
    data = value.encode()
    return tag + varint(len(data)) + data


_PACK_DOUBLE = struct.Struct("<d").pack

# Tags of the fields written below (generated from the .proto files).
_T_BATCH_VARIANTS = wire.VARIANT_BATCH_VARIANTS_TAG
_T_CORRELATION = wire.VARIANT_MESSAGE_CORRELATION_ID_TAG
_T_JOB = wire.VARIANT_MESSAGE_JOB_ID_TAG
_T_FILE = wire.VARIANT_MESSAGE_FILE_ID_TAG
_T_TENANT = wire.VARIANT_MESSAGE_TENANT_ID_TAG
_T_RECORD_INDEX = wire.VARIANT_MESSAGE_RECORD_INDEX_TAG
_T_LINE_NUMBER = wire.VARIANT_MESSAGE_LINE_NUMBER_TAG
_T_CHROMOSOME = wire.VARIANT_MESSAGE_CHROMOSOME_TAG
_T_POSITION = wire.VARIANT_MESSAGE_POSITION_TAG
_T_ID = wire.VARIANT_MESSAGE_ID_TAG
_T_REFERENCE = wire.VARIANT_MESSAGE_REFERENCE_TAG
_T_ALTERNATE = wire.VARIANT_MESSAGE_ALTERNATE_TAG
_T_ALT_INDEX = wire.VARIANT_MESSAGE_ALT_INDEX_TAG
_T_ALL_ALTERNATES = wire.VARIANT_MESSAGE_ALL_ALTERNATES_TAG
_HAS_QUALITY = wire.VARIANT_MESSAGE_HAS_QUALITY_TAG + varint(1)
_T_QUALITY = wire.VARIANT_MESSAGE_QUALITY_TAG
_T_FILTERS = wire.VARIANT_MESSAGE_FILTERS_TAG
_T_INFO = wire.VARIANT_MESSAGE_INFO_TAG
_T_GENOTYPES = wire.VARIANT_MESSAGE_GENOTYPES_TAG
_T_TIMESTAMP = wire.VARIANT_MESSAGE_TIMESTAMP_TAG
_T_SOURCE = wire.VARIANT_MESSAGE_SOURCE_NAME_TAG
_T_SAMPLE = wire.GENOTYPE_COLUMNS_SAMPLES_TAG
_T_PLOIDY = wire.GENOTYPE_COLUMNS_PLOIDY_TAG
_T_ALLELES = wire.GENOTYPE_COLUMNS_ALLELES_TAG
_T_PHASED = wire.GENOTYPE_COLUMNS_PHASED_TAG
_T_DEPTH = wire.GENOTYPE_COLUMNS_DEPTH_TAG
_T_GQ = wire.GENOTYPE_COLUMNS_GENOTYPE_QUALITY_TAG
_T_AD_COUNTS = wire.GENOTYPE_COLUMNS_ALLELE_DEPTH_COUNTS_TAG
_T_AD = wire.GENOTYPE_COLUMNS_ALLELE_DEPTHS_TAG
_FLAG_VALUE = wire.INFO_VALUE_FLAG_TAG + varint(1)
_T_INTS = wire.INFO_VALUE_INTS_TAG
_T_FLOATS = wire.INFO_VALUE_FLOATS_TAG
_T_STRINGS = wire.INFO_VALUE_STRINGS_TAG
_T_INT_VALUES = wire.INT_LIST_VALUES_TAG
_T_FLOAT_VALUES = wire.FLOAT_LIST_VALUES_TAG
_T_STRING_VALUES = wire.STRING_LIST_VALUES_TAG
_T_MAP_KEY = wire.VARIANT_MESSAGE_INFO_ENTRY_KEY_TAG
_T_MAP_VALUE = wire.VARIANT_MESSAGE_INFO_ENTRY_VALUE_TAG
# Correlation ids are 32 hex digits: their length prefix is fixed.
_CORRELATION_ID_LENGTH = varint(32)


def record_encoder_class() -> type[PythonRecordEncoder]:
    """The compiled record encoder, or its pure-Python twin (same interface, every line to Python)."""
    compiled = compiled_module(f"{__package__}._record_encoder")
    if compiled is None:
        return PythonRecordEncoder
    return cast("type[PythonRecordEncoder]", compiled.RecordEncoder)


def file_digest(path: str | os.PathLike[str], chunk_size: int = _DIGEST_CHUNK) -> str:
    """The file_id of a file: SHA-256 hex of its raw bytes, streamed so size doesn't matter."""
    hasher = file_digest_hasher()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            hasher.update(chunk)
    return hasher.hexdigest()


@dataclass(slots=True)
class ReadCounters:
    """Progress of one read; final once the batch iterator is exhausted."""

    samples: list[str] = field(default_factory=list)
    records: int = 0
    variants: int = 0
    ref_only_records: int = 0
    # gVCF records whose every ALT is <*>/<NON_REF> (VCF 4.3+ §5.5): counted, not published.
    reference_blocks: int = 0
    # <*>/<NON_REF> ALTs of records that also have a real ALT, likewise skipped.
    placeholder_alleles: int = 0


@dataclass(frozen=True, slots=True)
class ReadPosition:
    """Where a read stands after a record boundary: enough to resume it there exactly.

    `lines` counts the data lines consumed after the header; the rest is the
    encoder's state and the counters over every record before that point.
    """

    lines: int = 0
    record_index: int = -1
    line_number: int = 0
    chrom: str = ""
    last_pos: int = -1
    variants: int = 0
    dead_lettered: int = 0
    reference_blocks: int = 0
    placeholder_alleles: int = 0
    ref_only_records: int = 0


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """A serialized `VariantBatch` ready to publish, and what it holds."""

    payload: bytes
    variant_count: int
    first_record_index: int
    last_record_index: int
    # Locus of the first variant, for choosing a partition key without decoding.
    chromosome: str
    position: int
    # Set when the batch ends with a record's last variant: every record up to here is read.
    resume_at: ReadPosition | None = None

    def decode(self) -> variant_pb2.VariantBatch:
        return variant_pb2.VariantBatch.FromString(self.payload)


class _Layout(NamedTuple):
    """A FORMAT string's keys, checked once, and the per-ALT-count value caches.

    A tuple because the compiled encoder reads it too: its first five fields, by position.
    The cached encoding of a value is its contribution to its GenotypeColumns column (the
    key's role is its native code, DP/GQ/AD, or GT's position): GT a phased byte (0 or 1) then
    the alleles' zigzag varints; DP and GQ one zigzag varint; AD the values' zigzag varints
    (empty for `.`); any other key empty (checked, not stored).
    """

    width: int
    gt: int
    # Whether a non-diploid GT changes what other values must hold: GT is present
    # and some key's Number depends on ploidy (G, P).
    checks_ploidy: bool
    by_alts: dict[int, list[dict[str, bytes]]]
    # Per key, what the compiled encoder checks without a cache (_native_format_spec).
    natives: tuple[tuple[int, int], ...]
    keys: list[str]
    # Positions of the keys whose Number depends on ploidy.
    ploidy_fields: list[int]
    # Positions of the stored DP, GQ and AD keys; -1 when the FORMAT has none.
    depth: int
    quality: int
    allele_depths: int
    # Each key's definition, as `VcfHeader.format_def` gave it.
    defs: tuple[FieldDef, ...]


# FORMAT_NATIVE codes of the single-valued FORMAT fields the schema stores, by key and Type.
_STORED_SCALARS = {
    ("DP", "Integer"): wire.FORMAT_NATIVE_DEPTH,
    ("GQ", "Integer"): wire.FORMAT_NATIVE_GQ,
    ("DP", "Float"): wire.FORMAT_NATIVE_DEPTH_FLOAT,
    ("GQ", "Float"): wire.FORMAT_NATIVE_GQ_FLOAT,
}


def _native_format_spec(definition: FieldDef) -> tuple[int, int]:
    """(code, Number code) of a FORMAT key whose plain values the compiled encoder checks itself.

    Codes are the generated FORMAT_NATIVE_* (wire_numbers): DP and GQ with Number=1 are stored
    as integers (rounded when Float, as older GATK writes GQ); AD (Integer) is stored; any other
    Integer or Float key is only checked. Number codes as in _number_code.
    """
    key, kind, number = definition.id, definition.type, definition.number
    if key in ("DP", "GQ") and number == "1":
        return _STORED_SCALARS.get((key, kind), wire.FORMAT_NATIVE_NONE), 0
    if key == "AD":
        if kind != "Integer":
            return wire.FORMAT_NATIVE_NONE, 0
        return wire.FORMAT_NATIVE_AD, _number_code(number)
    if key == "GT" or kind not in ("Integer", "Float"):
        return wire.FORMAT_NATIVE_NONE, 0
    check = wire.FORMAT_NATIVE_CHECK_INTEGER if kind == "Integer" else wire.FORMAT_NATIVE_CHECK_FLOAT
    return check, _number_code(number)


_NUMBER_CODES = {"A": wire.NUMBER_A, "R": wire.NUMBER_R, "G": wire.NUMBER_G, "P": 2}


def _number_code(number: str) -> int:
    """A Number for the compiled encoder: a count, or a generated NUMBER_* code.

    Counts are checked as for a diploid sample, so P is 2 (the encoder leaves
    other ploidies to Python); LA, LR, LG and . take any count.
    """
    return int(number) if number.isdigit() else _NUMBER_CODES.get(number, wire.NUMBER_ANY)


def _native_info_spec(definition: FieldDef) -> tuple[int, int, bytes] | None:
    """(kind, Number code, map key field) of an INFO key the compiled encoder checks itself.

    Kinds are the generated INFO_KIND_*; INFO counts are checked as diploid, like the validator does.
    """
    kind = {"Integer": wire.INFO_KIND_INTEGER, "Float": wire.INFO_KIND_FLOAT}.get(definition.type)
    if kind is None:
        return None
    return kind, _number_code(definition.number), _string_field(_T_MAP_KEY, definition.id)


def _ints(values: list[int]) -> bytes:
    return length_delimited(_T_INTS, length_delimited(_T_INT_VALUES, b"".join([varint(v) for v in values])))


# What stands in a list for a missing value (`.`) among present ones, so that every value keeps
# its place (VCF 4.3 §1.4.2: Number=A is one value per alternate allele, in ALT order), as
# variant.proto's IntList, FloatList and StringList say.
_MISSING_IN_PLACE: dict[str, int | float | str] = {
    "Integer": wire.INT_LIST_RESERVED_MISSING,
    "Float": math.nan,
}


def _info_value(typed: TypedValues) -> bytes | None:
    """InfoValue bytes for typed values; None when every value is missing."""
    values: list[Any] = typed.values
    if not values:
        return None
    if typed.missing:
        values = list(values)
        placeholder = _MISSING_IN_PLACE.get(typed.kind, ".")
        for index in typed.missing:
            values.insert(index, placeholder)
    if typed.kind == "Integer":
        return _ints(values)
    if typed.kind == "Float":
        packed = struct.pack(f"<{len(values)}d", *values)
        return length_delimited(_T_FLOATS, length_delimited(_T_FLOAT_VALUES, packed))
    return _strings(values)


def _strings(values: list[str]) -> bytes:
    return length_delimited(_T_STRINGS, b"".join([_string_field(_T_STRING_VALUES, v) for v in values]))


def _map_entry(key: str, value: bytes) -> bytes:
    return length_delimited(_T_INFO, _string_field(_T_MAP_KEY, key) + length_delimited(_T_MAP_VALUE, value))


# Bytes that continue a varint: deleting them from packed varints leaves one byte per value.
_CONTINUATION_BYTES = bytes(range(0x80, 0x100))
# zigzag(-1): a missing sint32 (an allele `.`, a DP or GQ `.`).
_MISSING = b"\x01"


def _zigzag(n: int) -> bytes:
    """A sint32 value's varint."""
    return varint((n << 1) ^ (n >> 63))


def _packed(tag: bytes, values: bytes) -> bytes:
    """A packed repeated field; nothing when it holds no value (proto3 writes none)."""
    return tag + varint(len(values)) + values if values else b""


def _remember(cache: dict[str, bytes], key: str, encoded: bytes) -> bytes:
    """Store a checked value, dropping everything first once the cache is full."""
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = encoded
    return encoded


def _printable(line: str) -> str:
    """A raw line as valid UTF-8 text (undecodable bytes were kept as surrogates)."""
    return line.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class VcfReader:
    """Streams a VCF, bgzipped or plain-gzipped VCF or BCF as batches of up to `batch_size` variants.

    Opening reads and checks the header (raising VcfFileError for files that
    cannot be ingested). `batches()` yields the serialized form the bus needs;
    iterating the reader yields parsed `VariantBatch` messages. Memory is
    bounded by one batch plus the capped caches, whatever the file size.
    Iterate from one thread; `close()` may be called from another and stops the
    iteration at the next record.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        file_id: str,
        job_id: str,
        tenant_id: str,
        source_name: str,
        batch_size: int = DEFAULT_BATCH_SIZE,
        linger_ms: int = 50,
        region: str | None = None,
        keep_issues: bool = False,
        limits: InputLimits | None = None,
        resume_at: ReadPosition | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._limits = limits or InputLimits()
        self._resume_at = resume_at
        self._linger_s = linger_ms / 1000
        self._path = Path(path)
        # Correlation ids are hashed from this (tenant and file) plus `record:alt`, here and in C.
        self._id_prefix = correlation_prefix(tenant_id, file_id)
        self._job_id = job_id
        self._tenant_id = tenant_id
        self._source_name = source_name
        self._batch_size = batch_size
        self._keep_issues = keep_issues
        name = source_name or self._path.name
        self._source: VcfText = open_vcf_text(self._path, name=name, region=region, limits=self._limits)
        try:
            header, issues = parse_header(self._source.header_lines)
        except VcfFileError as exc:
            self._source.close()
            raise VcfFileError(f"{name}: {exc}", exc.code, exc.line) from exc
        self.header: VcfHeader = header
        # The header as written, for what is read from it beyond validation (annotation context).
        self.header_lines: list[str] = self._source.header_lines
        # Header problems that leave records interpretable; strict ingest fails on them.
        self.header_issues: IssueList = issues
        self.record_issues = IssueList()
        # Errors of the file as a whole found among the records; they reject no record.
        self.file_issues = IssueList()
        self.warnings = IssueList()
        self._rules = RecordRules(header)
        self.counters = ReadCounters(samples=list(header.samples))
        self._columns = 9 + len(header.samples) if header.samples else 8
        self._job_fields = (
            (_string_field(_T_JOB, job_id) if job_id else b"")
            + (_string_field(_T_FILE, file_id) if file_id else b"")
            + (_string_field(_T_TENANT, tenant_id) if tenant_id else b"")
        )
        self._source_field = _string_field(_T_SOURCE, source_name) if source_name else b""
        self._sample_fields = tuple(_string_field(_T_SAMPLE, n) for n in header.samples)
        self._samples_block = b"".join(self._sample_fields)
        # Each sample field's first position: a value a cache misses names its sample by position, and
        # tuple.index made that quadratic in the samples (a quarter of a 2,504-sample file's ingest CPU).
        self._sample_positions = {field: i for i, field in reversed(list(enumerate(self._sample_fields)))}
        # Cached GT encodings split into their ploidy and alleles columns.
        self._gt_columns: dict[bytes, tuple[bytes, bytes]] = {}
        # Checked encodings of recurring values, so most values cost one lookup.
        self._fields: dict[str, bytes] = {}
        self._refs: dict[str, bytes] = {}
        self._alts: dict[str, tuple[list[str], list[bytes], bytes]] = {}
        self._quals: dict[str, bytes] = {}
        self._filters: dict[str, bytes] = {}
        self._info: dict[int, dict[str, bytes]] = {}
        self._layouts: dict[str, _Layout] = {}
        self._values: dict[tuple[str, int], dict[str, bytes]] = {}
        self._non_diploid: dict[str, int] = {}
        self._numbered = self._source.first_line_number > 0
        self._encoder = record_encoder_class()(
            columns=self._columns,
            numbered=self._numbered,
            prefix=self._id_prefix,
            job_fields=self._job_fields,
            sample_fields=self._sample_fields,
            chrom_fields=self._fields,
            refs=self._refs,
            alts=self._alts,
            quals=self._quals,
            filters=self._filters,
            info=self._info,
            layouts=self._layouts,
            non_diploid=self._non_diploid,
            info_natives={key: spec for key, d in header.info.items() if (spec := _native_info_spec(d))},
        )
        self._encoder.max_record_bytes = self._limits.max_record_bytes
        self._encoder.line_number = self._source.first_line_number - 1
        self._dead_letters: list[events_pb2.DeadLetter] = []
        self.dead_lettered = 0
        self._lock = threading.Lock()
        self._closing = False
        self._active = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[variant_pb2.VariantBatch]:
        for batch in self.batches():
            yield batch.decode()

    def close(self) -> None:
        """Release the file; mid-iteration the reading thread does it (htslib is not thread-safe)."""
        with self._lock:
            self._closing = True
            if not self._active:
                self._source.close()

    @property
    def samples(self) -> list[str]:
        return self.counters.samples

    @property
    def records(self) -> int:
        return self.counters.records

    def take_dead_letters(self) -> list[events_pb2.DeadLetter]:
        """Records rejected since the last call, for the dead-letter stream."""
        letters, self._dead_letters = self._dead_letters, []
        return letters

    def batches(self) -> Iterator[EncodedBatch]:
        """Yield serialized batches in file order; counters are updated as records are read."""
        with self._lock:
            if self._closing:
                raise VcfFileError("the reader is closed", "READER_CLOSED")
            self._active = True
        try:
            yield from self._encode_records()
        except (OSError, EOFError, UnicodeError) as exc:
            raise VcfFileError(
                f"{self._source_name}: the file became unreadable after record"
                f" {self.counters.records}: {exc}",
                "TRUNCATED_FILE",
            ) from exc
        finally:
            with self._lock:
                self._active = False
                if self._closing:
                    self._source.close()

    def _position(self, lines: int) -> ReadPosition:
        encoder, counters = self._encoder, self.counters
        return ReadPosition(
            lines,
            encoder.record_index,
            encoder.line_number,
            encoder.chrom,
            encoder.last_pos,
            counters.variants,
            self.dead_lettered,
            encoder.reference_blocks,
            encoder.placeholder_alleles,
            counters.ref_only_records,
        )

    def _skip_to(self, at: ReadPosition) -> None:
        """Resume after the records an earlier read of this file already handed on.

        The lines are read (decompression cannot seek) but not parsed, and the
        counters are restored, so the read ends with the same totals as one pass.
        """
        skipped = sum(1 for _ in itertools.islice(self._source.lines, at.lines))
        if skipped != at.lines:
            raise VcfFileError(
                f"{self._source_name}: the file has {skipped} data lines, fewer than the"
                f" {at.lines} already read; it changed since the job started",
                "FILE_CHANGED",
            )
        encoder, counters = self._encoder, self.counters
        encoder.record_index, encoder.line_number = at.record_index, at.line_number
        encoder.chrom, encoder.last_pos = at.chrom, at.last_pos
        encoder.reference_blocks, encoder.placeholder_alleles = at.reference_blocks, at.placeholder_alleles
        counters.records = at.record_index + 1
        counters.variants = at.variants
        counters.reference_blocks, counters.placeholder_alleles = at.reference_blocks, at.placeholder_alleles
        counters.ref_only_records = at.ref_only_records
        self.dead_lettered = at.dead_lettered

    def _encode_records(self) -> Iterator[EncodedBatch]:
        counters = self.counters
        encoder = self._encoder
        batch_size = self._batch_size
        # Batches are cut by size too, so many samples per record cannot make one huge.
        batch_bytes = self._limits.max_record_bytes
        linger_s = self._linger_s
        monotonic = time.monotonic
        fast = encoder.encode
        slow = self._encode_slow
        chunks: list[bytes] = []
        size = 0
        first_index = -1
        first_locus = ("", 0)
        batch_deadline = 0.0
        lines = 0
        if self._resume_at is not None and self._resume_at.lines:
            # (At line 0 there is nothing to skip, and the encoder's start state is the right one.)
            self._skip_to(self._resume_at)
            lines = self._resume_at.lines
        encoder.suffix = self._batch_suffix()
        for line in self._source.lines:
            if self._closing:
                break
            lines += 1
            entries = fast(line)
            if not entries:
                # None: the Python path decides; []: a gVCF reference block the C path counted.
                if entries is None:
                    entries = slow(line)
                if not entries:
                    continue
            if first_index < 0:
                first_index = encoder.record_index
                first_locus = (encoder.chrom, encoder.position)
                batch_deadline = monotonic() + linger_s
            chunks += entries
            size += sum(map(len, entries))
            # Linger bounds latency when records trickle in (a slow upload or pipe).
            if len(chunks) < batch_size and size < batch_bytes and monotonic() < batch_deadline:
                continue
            record_index = encoder.record_index
            counters.records = record_index + 1
            counters.reference_blocks = encoder.reference_blocks
            counters.placeholder_alleles = encoder.placeholder_alleles
            while chunks:
                # A multi-allelic record may straddle two batches, as the ALTs fill them.
                taken = chunks[:batch_size]
                del chunks[:batch_size]
                counters.variants += len(taken)
                yield EncodedBatch(
                    b"".join(taken),
                    len(taken),
                    first_index,
                    record_index,
                    *first_locus,
                    resume_at=None if chunks else self._position(lines),
                )
                first_index, first_locus = record_index, (encoder.chrom, encoder.position)
                if len(chunks) < batch_size:
                    break
            size = sum(map(len, chunks))
            encoder.suffix = self._batch_suffix()
            if chunks:
                batch_deadline = monotonic() + linger_s
            else:
                first_index = -1
        counters.records = encoder.record_index + 1
        counters.reference_blocks = encoder.reference_blocks
        counters.placeholder_alleles = encoder.placeholder_alleles
        if counters.records == 0 and not self._closing:
            self.warnings.append(
                Issue(
                    0,
                    "FILE",
                    "NO_RECORDS",
                    "the file has a header and no records: valid, and nothing to analyse",
                    warning=True,
                )
            )
        if chunks:
            counters.variants += len(chunks)
            yield EncodedBatch(
                b"".join(chunks),
                len(chunks),
                first_index,
                encoder.record_index,
                *first_locus,
                resume_at=self._position(lines),
            )

    def _encode_slow(self, line: str) -> list[bytes] | None:
        """The reference encoder: every rule check, cache fill and diagnostic; None when no variant."""
        encoder = self._encoder
        rules = self._rules
        encoder.line_number += 1
        line_number = encoder.line_number
        if line[-1:] == "\n":
            line = line[:-1]
        else:
            self._missing_newline(line_number)
        fields = line.split("\t")
        if len(fields) != self._columns and not line.strip():
            # Capped like every issue list: a gzip bomb of newlines must not grow memory.
            self.warnings.append(Issue(line_number, "CHROM", "BLANK_LINE", "a blank line was skipped"))
            return None
        encoder.record_index += 1
        record_index = encoder.record_index
        try:
            if len(fields) == self._columns + 1 and not fields[-1]:
                # A tab ending the line (GATK output in vcfanno's dbNSFP example): an empty column
                # the header does not define holds nothing, so the record is read without it.
                rules.trailing_tab(self._columns)
                fields.pop()
            if len(fields) != self._columns:
                raise rules.column_count(len(fields), self._columns)
            chrom = fields[0]
            if chrom != encoder.chrom:
                rules.contig(chrom, encoder.chrom)
                encoder.chrom = chrom
                encoder.last_pos = -1
            pos = rules.position(fields[1])
            if pos < encoder.last_pos:
                rules.unsorted(chrom, pos, encoder.last_pos)
            encoder.last_pos = pos
            ref_field = self._refs.get(fields[3]) or self._ref(fields[3])
            alts, alt_fields, all_alts = self._alts.get(fields[4]) or self._alt(fields[4])
            n_alt = len(alts)
            vid = fields[2]
            id_field = b""
            if vid != ".":
                rules.identifier(vid)
                id_field = _string_field(_T_ID, vid)
            qual = self._quals.get(fields[5])
            if qual is None:
                qual = self._qual(fields[5])
            filters = self._filters.get(fields[6])
            if filters is None:
                filters = self._filter(fields[6])
            info_bytes = self._encode_info(fields[7], n_alt)
            genotypes = self._encode_genotypes(fields[8], fields, n_alt) if self._columns > 8 else b""
        except RecordError as exc:
            self._reject(record_index, line_number if self._numbered else 0, line, exc)
            return None
        except UnicodeEncodeError:
            # Bytes the text decoder kept as surrogates reached a field that is stored as text.
            not_utf8 = RecordError(
                "NOT_UTF8", "CHROM", "the record holds bytes that are not UTF-8 (VCF 4.3+ §1.2: UTF-8)"
            )
            self._reject(record_index, line_number if self._numbered else 0, line, not_utf8)
            return None
        finally:
            if rules.pending:
                self._warn(line_number if self._numbered else 0)
        if not n_alt:
            self.counters.ref_only_records += 1
            return None
        if not any(alt_fields):
            # Every ALT is gVCF's <*>/<NON_REF>: a reference block, not a variant.
            encoder.reference_blocks += 1
            return None
        encoder.position = pos
        head = b"".join(
            (
                _T_RECORD_INDEX,
                varint(record_index),
                _T_LINE_NUMBER + varint(line_number) if self._numbered else b"",
                self._fields.get(chrom) or self._chrom_field(chrom),
                _T_POSITION,
                varint(pos),
                id_field,
                ref_field,
            )
        )
        tail = all_alts + qual + filters + info_bytes + genotypes + encoder.suffix
        # Every ALT's message repeats the whole record: check the total before building it.
        encoded = n_alt * (len(head) + len(tail) + len(self._job_fields) + _VARIANT_OVERHEAD)
        if encoded > self._limits.max_record_bytes:
            where = f"line {line_number}" if self._numbered else f"record {record_index + 1}"
            raise InputLimitError(
                "max_record_bytes",
                self._limits.max_record_bytes,
                f"{self._source_name}: the record at {where} ({n_alt} ALT(s), {len(self._sample_fields)}"
                f" sample(s)) encodes to about {encoded} bytes",
                line_number,
            )
        key = self._id_prefix + f"{record_index}:".encode()
        entries = []
        for alt_index in range(n_alt):
            if not alt_fields[alt_index]:
                encoder.placeholder_alleles += 1
                continue
            body = b"".join(
                (
                    _T_CORRELATION,
                    _CORRELATION_ID_LENGTH,
                    hashlib.blake2b(b"%s%d" % (key, alt_index), digest_size=16).hexdigest().encode(),
                    self._job_fields,
                    head,
                    alt_fields[alt_index],
                    _T_ALT_INDEX + SMALL_VARINTS[alt_index] if alt_index else b"",
                    tail,
                )
            )
            entries.append(_T_BATCH_VARIANTS + varint(len(body)) + body)
        return entries

    def _encode_info(self, info: str, n_alt: int) -> bytes:
        if info == ".":
            return b""
        cache = self._info.get(n_alt)
        if cache is None:
            cache = self._info[n_alt] = {}
        entries = info.split(";")
        if len(entries) > 1:
            entries = self._rules.info_keys(entries)
        encoded = list(map(cache.get, entries))
        if None in encoded:
            encoded = self._info_misses(entries, encoded, n_alt, cache)
        return b"".join(encoded)  # type: ignore[arg-type]

    def _warn(self, line_number: int) -> None:
        """What the record's checks noted without rejecting it, as issues at its line."""
        for column, code, message, warning in self._rules.pending:
            issues = self.warnings if warning else self.file_issues
            issues.append(Issue(line_number, column, code, message, warning=warning))
        self._rules.pending.clear()

    def _missing_newline(self, line_number: int) -> None:
        if self._numbered:
            self.warnings.append(
                Issue(
                    line_number, "CHROM", "MISSING_FINAL_NEWLINE", "the last line does not end with a newline"
                )
            )

    def _reject(self, record_index: int, line_number: int, line: str, exc: RecordError) -> None:
        self.dead_lettered += 1
        message = self._rules.cited(exc)
        if self._keep_issues:
            self.record_issues.append(Issue(line_number, exc.column, exc.code, message))
        where = f"line {line_number}" if line_number else f"record {record_index + 1}"
        letter = events_pb2.DeadLetter(
            reason=f"{where}, column {exc.column}: {message}",
            job_id=self._job_id,
            tenant_id=self._tenant_id,
            file_name=self._source_name,
            line_number=line_number,
            raw_line=_printable(line),
            error_code=exc.code,
            service="ingest",
        )
        letter.timestamp.GetCurrentTime()
        self._dead_letters.append(letter)

    def _batch_suffix(self) -> bytes:
        """Timestamp and source_name: shared by every variant of a batch, so encoded once."""
        now = time.time_ns()
        seconds, nanos = divmod(now, 1_000_000_000)
        stamp = wire.TIMESTAMP_SECONDS_TAG + varint(seconds)
        if nanos:
            stamp += wire.TIMESTAMP_NANOS_TAG + varint(nanos)
        return length_delimited(_T_TIMESTAMP, stamp) + self._source_field

    def _text(self, tag: bytes, value: str) -> bytes:
        """A string field; undecodable bytes become U+FFFD instead of failing the encode."""
        try:
            return _string_field(tag, value)
        except UnicodeEncodeError:
            return _string_field(tag, _printable(value))

    def _chrom_field(self, chrom: str) -> bytes:
        return _remember(self._fields, chrom, self._text(_T_CHROMOSOME, chrom))

    def _ref(self, ref: str) -> bytes:
        self._rules.reference(ref)
        return _remember(self._refs, ref, _string_field(_T_REFERENCE, ref))

    def _alt(self, text: str) -> tuple[list[str], list[bytes], bytes]:
        alts = self._rules.alternates(text)
        unknown = self._rules.symbolic_warnings(alts)
        if unknown:
            self.warnings.append(
                Issue(
                    0, "ALT", "ALT_UNDECLARED", f"symbolic allele(s) {', '.join(unknown)} have no ##ALT line"
                )
            )
        entry = (
            alts,
            # gVCF's unobserved-allele placeholders are no variant: an empty field skips them.
            [b"" if a in GVCF_PLACEHOLDERS else _string_field(_T_ALTERNATE, a) for a in alts],
            b"".join([_string_field(_T_ALL_ALTERNATES, a) for a in alts]),
        )
        if len(self._alts) >= _CACHE_LIMIT:
            self._alts.clear()
        self._alts[text] = entry
        return entry

    def _qual(self, text: str) -> bytes:
        value = self._rules.quality(text)
        encoded = b"" if value is None else _HAS_QUALITY + _T_QUALITY + _PACK_DOUBLE(value)
        return _remember(self._quals, text, encoded)

    def _filter(self, text: str) -> bytes:
        names = self._rules.filters(text)
        return _remember(self._filters, text, b"".join([_string_field(_T_FILTERS, n) for n in names]))

    def _info_misses(
        self, entries: list[str], encoded: list[bytes | None], n_alt: int, cache: dict[str, bytes]
    ) -> list[bytes | None]:
        for i, entry in enumerate(entries):
            if encoded[i] is None:
                encoded[i] = _remember(cache, entry, self._info_entry(entry, n_alt))
        return encoded

    def _info_entry(self, entry: str, n_alt: int) -> bytes:
        if not entry:
            self._rules.empty_info_entry()
            return b""
        try:
            _, key, typed = self._rules.info_entry(entry, n_alt)
        except RecordError as exc:
            if exc.code not in VALUE_CODES:
                raise
            key, _, raw = entry.partition("=")
            self._rules.value_not_trusted(key, exc, "the value as text")
            return _map_entry(key, _strings([raw]))
        if typed is None:
            return _map_entry(key, _FLAG_VALUE)
        value = _info_value(typed)
        if value is None:
            return b""
        return _map_entry(key, value)

    def _layout(self, fmt: str) -> _Layout:
        layout = self._layouts.get(fmt)
        if layout is not None:
            return layout
        keys = self._rules.format_keys(fmt)
        if len(self._layouts) >= _LAYOUT_LIMIT:
            # A file of ever new FORMAT strings (a new key per record) would grow these by ~1.4 KB
            # a record; the caches they share go with them, as `_remember` drops a full cache.
            self._layouts.clear()
            self._values.clear()
        defs = [self.header.format_def(key) for key in keys]
        gt = keys.index("GT") if "GT" in keys else -1
        ploidy_fields = [i for i, d in enumerate(defs) if d.number in ("G", "P")]
        natives = tuple(_native_format_spec(d) for d in defs)
        codes = [code for code, _ in natives]

        def position(*roles: int) -> int:
            return next((i for i, code in enumerate(codes) if code in roles), -1)

        layout = _Layout(
            width=len(keys),
            gt=gt,
            checks_ploidy=bool(ploidy_fields) and gt >= 0,
            by_alts={},
            natives=natives,
            keys=keys,
            ploidy_fields=ploidy_fields,
            depth=position(wire.FORMAT_NATIVE_DEPTH, wire.FORMAT_NATIVE_DEPTH_FLOAT),
            quality=position(wire.FORMAT_NATIVE_GQ, wire.FORMAT_NATIVE_GQ_FLOAT),
            allele_depths=position(wire.FORMAT_NATIVE_AD),
            defs=tuple(defs),
        )
        self._layouts[fmt] = layout
        return layout

    def _caches(self, layout: _Layout, n_alt: int) -> list[dict[str, bytes]]:
        caches = layout.by_alts.get(n_alt)
        if caches is None:
            caches = []
            for key, definition in zip(layout.keys, layout.defs, strict=True):
                # Values whose check does not depend on the ALT count share one cache.
                depends = key == "GT" or expected_count(definition, 0) != expected_count(definition, 1)
                caches.append(self._values.setdefault((key, n_alt if depends else -1), {}))
            layout.by_alts[n_alt] = caches
        return caches

    def _encode_genotypes(self, fmt: str, fields: list[str], n_alt: int) -> bytes:
        # The hot loop of multi-sample files: per sample one split, one map of
        # dict lookups over the FORMAT values and an append per stored column.
        layout = self._layouts.get(fmt)
        if layout is None:
            if fmt == ".":
                return self._no_sample_data(fields)
            layout = self._layout(fmt)
        caches = self._caches(layout, n_alt)
        width = layout.width
        check_ploidy = layout.checks_ploidy
        non_diploid = self._non_diploid
        get = dict.get
        gt, dp, gq, ad = layout.gt, layout.depth, layout.quality, layout.allele_depths
        gts: list[bytes] = []
        depths: list[bytes] = []
        qualities: list[bytes] = []
        allele_depths: list[bytes] = []
        for sample_field, token in zip(self._sample_fields, fields[9:], strict=True):
            values = token.split(":")
            if len(values) != width:
                values = self._pad(values, width, sample_field)
            encoded: list[bytes] = list(map(get, caches, values))  # type: ignore[arg-type]
            if None in encoded or (check_ploidy and values[gt] in non_diploid):
                encoded = self._sample_misses(layout, caches, values, encoded, n_alt, sample_field)  # type: ignore[arg-type,assignment]
            if gt >= 0:
                gts.append(encoded[gt])
            if dp >= 0:
                depths.append(encoded[dp])
            if gq >= 0:
                qualities.append(encoded[gq])
            if ad >= 0:
                allele_depths.append(encoded[ad])
        return self._genotype_columns(gts, depths, qualities, allele_depths)

    def _no_sample_data(self, fields: list[str]) -> bytes:
        """A record whose FORMAT is the MISSING value: every sample's column must be `.` too, and
        each sample is a no-call. htslib writes a record that has samples but no FORMAT key so
        (bcftools' own test files hold such records), and VCF 4.5 §1 has `.` stand for any
        field that is empty; so the record flows, with nothing of the file lost. The compiled
        encoder keeps no layout for `.`, so such records take this path."""
        for sample_field, token in zip(self._sample_fields, fields[9:], strict=True):
            if token != ".":
                raise self._rules.too_many_values(self._sample_name(sample_field), len(token.split(":")), 0)
        return self._genotype_columns([], [], [], [])

    def _genotype_columns(
        self, gts: list[bytes], depths: list[bytes], qualities: list[bytes], allele_depths: list[bytes]
    ) -> bytes:
        """The GenotypeColumns field from each sample's cached encodings (see _Layout), by its rules:
        no GT is one missing allele; an all-missing DP or GQ column and an all-absent AD are empty."""
        n = len(self._sample_fields)
        if gts:
            split = self._gt_columns
            parts = [split.get(g) or self._split_gt(g) for g in gts]
            ploidy = b"".join([part[0] for part in parts])
            alleles = b"".join([part[1] for part in parts])
            bits = sum(1 << i for i, g in enumerate(gts) if g[0])
        else:
            ploidy = alleles = _MISSING * n
            bits = 0
        body = [self._samples_block, _packed(_T_PLOIDY, ploidy), _packed(_T_ALLELES, alleles)]
        if bits:
            body.append(_packed(_T_PHASED, bits.to_bytes((n + 7) // 8, "little")))
        if depths and depths.count(_MISSING) != n:
            body.append(_packed(_T_DEPTH, b"".join(depths)))
        if qualities and qualities.count(_MISSING) != n:
            body.append(_packed(_T_GQ, b"".join(qualities)))
        if any(allele_depths):
            counts = [SMALL_VARINTS[len(ad.translate(None, _CONTINUATION_BYTES))] for ad in allele_depths]
            body.append(_packed(_T_AD_COUNTS, b"".join(counts)))
            body.append(_packed(_T_AD, b"".join(allele_depths)))
        return length_delimited(_T_GENOTYPES, b"".join(body))

    def _split_gt(self, encoded: bytes) -> tuple[bytes, bytes]:
        """(ploidy varint, allele varints) of a cached GT encoding (a phased byte, then the alleles)."""
        alleles = encoded[1:]
        parts = (varint(len(alleles.translate(None, _CONTINUATION_BYTES))), alleles)
        if len(self._gt_columns) >= _CACHE_LIMIT:
            self._gt_columns.clear()
        self._gt_columns[encoded] = parts
        return parts

    def _sample_name(self, sample_field: bytes) -> str:
        """The sample as errors name it: by position, never by name, since error messages become
        dead-letter reasons and log lines, and sample names identify people."""
        index = self._sample_positions[sample_field]
        return f"{index + 1} (column {index + 10})"

    def _pad(self, values: list[str], width: int, sample_field: bytes) -> list[str]:
        if len(values) > width:
            raise self._rules.too_many_values(self._sample_name(sample_field), len(values), width)
        # Trailing values may be dropped; they are missing.
        return values + ["."] * (width - len(values))

    def _sample_misses(
        self,
        layout: _Layout,
        caches: list[dict[str, bytes]],
        values: list[str],
        encoded: list[bytes | None],
        n_alt: int,
        sample_field: bytes,
    ) -> list[bytes | None]:
        sample = self._sample_name(sample_field)
        ploidy = 2
        if layout.gt >= 0:
            gt = values[layout.gt]
            ploidy = self._non_diploid.get(gt, 2)
            if encoded[layout.gt] is None:
                encoded[layout.gt], ploidy = self._gt(gt, n_alt, sample)
                caches[layout.gt][gt] = encoded[layout.gt]  # type: ignore[assignment]
        for i, key in enumerate(layout.keys):
            if key == "GT" or (encoded[i] is not None and (ploidy == 2 or i not in layout.ploidy_fields)):
                continue
            value = self._sample_value(layout.defs[i], values[i], n_alt, ploidy, sample)
            encoded[i] = value
            if ploidy == 2 or i not in layout.ploidy_fields:
                _remember(caches[i], values[i], value)
        return encoded

    def _gt(self, text: str, n_alt: int, sample: str) -> tuple[bytes, int]:
        """(the GT's cached encoding: a phased byte, then the alleles' zigzag varints; its ploidy)."""
        if text == ".":
            return b"\x00" + _MISSING, 1
        alleles, phased = self._rules.genotype(text, n_alt, sample)
        if len(alleles) != 2:
            self._non_diploid[text] = len(alleles)
        return bytes([phased]) + b"".join([_zigzag(a) for a in alleles]), len(alleles)

    def _sample_value(self, definition: FieldDef, text: str, n_alt: int, ploidy: int, sample: str) -> bytes:
        # What the value stores, as _Layout places it: by the key's native code.
        code = _native_format_spec(definition)[0]
        try:
            return self._stored_sample_value(definition, code, text, n_alt, ploidy)
        except RecordError as exc:
            error = RecordError(exc.code, exc.column, f"sample {sample}: {exc.message}")
            if exc.code not in VALUE_CODES:
                raise error from None
            scalar = code in _STORED_SCALARS.values()
            if scalar or code == wire.FORMAT_NATIVE_AD:
                self._rules.value_not_trusted(definition.id, error, "this sample's value missing")
            else:
                self._rules.value_not_trusted(definition.id, error, "the value left out (it is not stored)")
            return _MISSING if scalar else b""

    def _stored_sample_value(
        self, definition: FieldDef, code: int, text: str, n_alt: int, ploidy: int
    ) -> bytes:
        typed = self._rules.typed(definition, text, "FORMAT")
        self._rules.check_count(definition, typed, n_alt, "FORMAT", ploidy)
        if code in _STORED_SCALARS.values():
            if not typed.values:
                return _MISSING
            number = float(typed.values[0])
            rounded = round(number) if math.isfinite(number) else None
            if rounded is None or not INT_MIN <= rounded <= INT_MAX:
                raise RecordError(
                    "INTEGER_OUT_OF_RANGE",
                    "FORMAT",
                    f"{definition.id} {text} does not round to a 32-bit integer",
                )
            return _zigzag(rounded)
        if code == wire.FORMAT_NATIVE_AD:
            if text == ".":
                return b""
            return b"".join([_zigzag(-1 if d == "." else int(d)) for d in text.split(",")])
        return b""
