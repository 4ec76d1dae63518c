"""VCF/BCF records to serialized `VariantBatch`es, one `VariantMessage` per ALT allele.

Speed is the point of this module. Building `VariantMessage`s through the
protobuf Python API costs ~1.3 us per `GenotypeCall` and ~1.5 us per INFO entry
(measured with upb), which alone caps a 10-sample file far below the ingest
target. So records are encoded straight to protobuf wire bytes here, from the
VCF text htslib formats for each record (VCF, bgzipped VCF and BCF alike, so all
three yield identical messages), with encodings of recurring field values
cached. The bus publishes those bytes as they are; `EncodedBatch.decode()`
parses them (in C) when a caller needs the message objects.

Decisions:
- A record whose ALT is `.` (REF-only) yields no variant; it still consumes a
  record_index and is counted in `ReadCounters.ref_only_records`.
- INFO values with Number=A/R/G keep the full list on every ALT's message; the
  ALT's position is `alt_index` (+1 for Number=R), so nothing is lost or guessed.
- Missing INFO values (`.`) are dropped from lists; an entry with no values left
  is omitted. String INFO with Number=1 is kept whole (commas included).
- A float-typed DP/GQ (older GATK writes GQ as Float) is rounded to an int.
- `phased` is true when every separator of the GT is `|` (a haploid GT is unphased).
- With `region`, record_index counts records within the region and
  line_number is 0: positions in the whole file are unknown without reading it.
"""

from __future__ import annotations

import gzip
import os
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import pysam

from vcf_agent.schema import correlation_id, file_digest_hasher
from vcf_agent.v1 import events_pb2, variant_pb2

DEFAULT_BATCH_SIZE = 1000

# Cached encodings are dropped wholesale past this size so memory stays bounded
# on files with high-cardinality values.
_CACHE_LIMIT = 50_000

_DIGEST_CHUNK = 1 << 20

# htslib skips a bad line and goes on; this many failures in a row means the
# file is corrupt (e.g. truncated), not that a few records are.
_MAX_CONSECUTIVE_FAILURES = 100

_MASK64 = (1 << 64) - 1

# Varint bytes for every value below 2**14, and the low-14-bit prefix (both bytes
# with the continuation bit) for composing larger ones: table lookups beat a
# per-byte Python loop by ~5x for positions in the millions.
_SMALL = [bytes([n]) if n < 0x80 else bytes([(n & 0x7F) | 0x80, n >> 7]) for n in range(1 << 14)]
_CONT = [bytes([(n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80]) for n in range(1 << 14)]


def _varint(n: int) -> bytes:
    if 0 <= n < 16384:
        return _SMALL[n]
    if 0 < n < 268_435_456:
        # Positions and record indexes: two lookups, no loop.
        return _CONT[n & 0x3FFF] + _SMALL[n >> 14]
    if n < 0:
        # int32/int64 negatives are 10-byte two's-complement varints.
        n &= _MASK64
    parts = []
    while n >= 16384:
        parts.append(_CONT[n & 0x3FFF])
        n >>= 14
    parts.append(_SMALL[n])
    return b"".join(parts)


def _length_delimited(tag: bytes, body: bytes) -> bytes:
    return tag + _varint(len(body)) + body


def _string_field(tag: bytes, value: str) -> bytes:
    data = value.encode()
    return tag + _varint(len(data)) + data


_PACK_DOUBLE = struct.Struct("<d").pack

# Tags (field number << 3 | wire type) of the fields written below.
_T_BATCH_VARIANTS = b"\x0a"
_T_CORRELATION = b"\x0a"
_T_JOB = b"\x12"
_T_FILE = b"\x1a"
_T_TENANT = b"\x22"
_T_RECORD_INDEX = b"\x28"
_T_LINE_NUMBER = b"\x30"
_T_CHROMOSOME = b"\x3a"
_T_POSITION = b"\x40"
_T_ID = b"\x4a"
_T_REFERENCE = b"\x52"
_T_ALTERNATE = b"\x5a"
_T_ALT_INDEX = b"\x60"
_T_ALL_ALTERNATES = b"\x6a"
_HAS_QUALITY = b"\x70\x01"
_T_QUALITY = b"\x79"
_T_FILTERS = b"\x82\x01"
_T_INFO = b"\x8a\x01"
_T_GENOTYPES = b"\x92\x01"
_T_TIMESTAMP = b"\x9a\x01"
_T_SOURCE = b"\xa2\x01"
# GenotypeCall fields.
_T_SAMPLE = b"\x0a"
_T_ALLELES = b"\x12"
_PHASED = b"\x18\x01"
_T_DEPTH = b"\x20"
_T_GQ = b"\x28"
_T_AD = b"\x32"
# InfoValue / map entry fields.
_FLAG_VALUE = b"\x08\x01"
_T_INTS = b"\x12"
_T_FLOATS = b"\x1a"
_T_STRINGS = b"\x22"
_T_LIST_VALUES = b"\x0a"
_T_MAP_KEY = b"\x0a"
_T_MAP_VALUE = b"\x12"


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

    def decode(self) -> variant_pb2.VariantBatch:
        return variant_pb2.VariantBatch.FromString(self.payload)


@dataclass(frozen=True, slots=True)
class _InfoMeta:
    kind: str
    split: bool


def _encode_list(kind: str, raw: str, split: bool) -> bytes | None:
    """InfoValue bytes for one INFO value's text; None when every value is missing."""
    if kind == "Flag":
        return _FLAG_VALUE
    items = raw.split(",") if split else [raw]
    present = [item for item in items if item != "."]
    if not present:
        return None
    if kind == "Integer":
        packed = b"".join([_varint(int(item)) for item in present])
        return _length_delimited(_T_INTS, _length_delimited(_T_LIST_VALUES, packed))
    if kind == "Float":
        packed = struct.pack(f"<{len(present)}d", *[float(item) for item in present])
        return _length_delimited(_T_FLOATS, _length_delimited(_T_LIST_VALUES, packed))
    body = b"".join([_string_field(_T_LIST_VALUES, item) for item in present])
    return _length_delimited(_T_STRINGS, body)


def _int_value(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        return round(float(raw))


def _remember(cache: dict[str, bytes], key: str, encoded: bytes) -> bytes:
    """Store a cache miss, dropping everything first once the cache is full."""
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = encoded
    return encoded


def _encode_ad(text: str) -> bytes:
    if text == ".":
        return b""
    return _length_delimited(_T_AD, b"".join([_varint(-1 if d == "." else int(d)) for d in text.split(",")]))


def _encode_int_field(tag: bytes, text: str) -> bytes:
    """A DP/GQ field; a missing value is -1, as the schema says."""
    return tag + _varint(-1 if text == "." else _int_value(text))


def _encode_gt(gt: str) -> bytes:
    """Alleles and phased fields of a GenotypeCall for one GT text."""
    if gt == ".":
        # GT absent from this record's FORMAT, or a fully missing haploid call.
        return _length_delimited(_T_ALLELES, _varint(-1))
    phased = "|" in gt and "/" not in gt
    alleles = gt.replace("|", "/").split("/")
    packed = b"".join([_varint(-1 if a == "." else int(a)) for a in alleles])
    return _length_delimited(_T_ALLELES, packed) + (_PHASED if phased else b"")


class VcfFileError(Exception):
    """The file cannot be read as VCF/BCF at all (as opposed to one bad record)."""


class VcfReader:
    """Streams a VCF, bgzipped VCF or BCF as batches of up to `batch_size` variants.

    `batches()` yields the serialized form the bus needs; iterating the reader
    yields parsed `VariantBatch` messages for callers that want objects. Memory
    is bounded by one batch plus the capped encoding caches, whatever the file
    size. Iterate from one thread; `close()` may be called from another and
    stops the iteration at the next record.
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
        region: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._path = Path(path)
        self._file_id = file_id
        self._job_id = job_id
        self._tenant_id = tenant_id
        self._source_name = source_name
        self._batch_size = batch_size
        self._region = region
        try:
            self._file = pysam.VariantFile(os.fspath(self._path))
        except (OSError, ValueError) as exc:
            raise VcfFileError(
                f"{source_name or self._path.name}: not a readable VCF/BCF file ({exc})"
            ) from exc
        header = self._file.header
        self._is_bcf = self._file.format == "BCF"
        self.counters = ReadCounters(samples=list(header.samples))
        self._info_meta = {
            key: _InfoMeta(meta.type or "String", not (meta.type == "String" and str(meta.number) == "1"))
            for key, meta in header.info.items()
        }
        self._job_fields = (
            (_string_field(_T_JOB, job_id) if job_id else b"")
            + (_string_field(_T_FILE, file_id) if file_id else b"")
            + (_string_field(_T_TENANT, tenant_id) if tenant_id else b"")
        )
        self._source_field = _string_field(_T_SOURCE, source_name) if source_name else b""
        self._sample_fields = [_string_field(_T_SAMPLE, name) for name in self.counters.samples]
        # Encodings of recurring texts; GT, DP and GQ have few distinct values per file.
        self._info_cache: dict[str, bytes] = {}
        self._format_cache: dict[str, tuple[int, int, int, int, int]] = {}
        self._gt_cache: dict[str, bytes] = {}
        self._depth_cache: dict[str, bytes] = {}
        self._gq_cache: dict[str, bytes] = {}
        self._ad_cache: dict[str, bytes] = {}
        self._field_cache: dict[tuple[bytes, str], bytes] = {}
        self._dead_letters: list[events_pb2.DeadLetter] = []
        self.dead_lettered = 0
        self._lock = threading.Lock()
        self._closing = False
        self._active = False
        self._header_lines = 0 if self._is_bcf or region else self._count_header_lines()

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
        """Release the file; mid-iteration the reading thread does it, since htslib isn't thread-safe."""
        with self._lock:
            self._closing = True
            if not self._active:
                self._file.close()

    @property
    def samples(self) -> list[str]:
        return self.counters.samples

    @property
    def records(self) -> int:
        return self.counters.records

    def take_dead_letters(self) -> list[events_pb2.DeadLetter]:
        """Records that could not be parsed since the last call, for the dead-letter stream."""
        letters, self._dead_letters = self._dead_letters, []
        return letters

    def _count_header_lines(self) -> int:
        # htslib's rendered header differs from the file's (it adds PASS and
        # contig lines), so line numbers come from the file's own text.
        with open(self._path, "rb") as probe:
            compressed = probe.read(2) == b"\x1f\x8b"
        opener = gzip.open if compressed else open
        count = 0
        with opener(self._path, "rb") as fh:
            for line in fh:
                if not line.startswith(b"#"):
                    break
                count += 1
        return count

    def batches(self) -> Iterator[EncodedBatch]:
        """Yield serialized batches in file order; counters are updated as records are read."""
        with self._lock:
            if self._closing:
                raise VcfFileError("the reader is closed")
            self._active = True
        try:
            yield from self._encode_records()
        finally:
            with self._lock:
                self._active = False
                if self._closing:
                    self._file.close()

    def _encode_records(self) -> Iterator[EncodedBatch]:
        try:
            records = self._file.fetch(region=self._region) if self._region else self._file
        except (OSError, ValueError) as exc:
            raise VcfFileError(f"cannot fetch region {self._region!r}: {exc}") from exc
        next_record = iter(records).__next__
        counters = self.counters
        batch_size = self._batch_size
        file_id = self._file_id
        job_fields = self._job_fields
        line_base = self._header_lines + 1 if self._header_lines else 0
        chunks: list[bytes] = []
        count = 0
        first_index = -1
        first_locus = ("", 0)
        suffix = self._batch_suffix()
        record_index = -1
        failures = 0
        while not self._closing:
            try:
                record = next_record()
            except StopIteration:
                break
            except (OSError, ValueError) as exc:
                # htslib rejects the line but stays positioned after it, so the
                # read goes on; a run of failures means the file itself is broken.
                failures += 1
                if failures > _MAX_CONSECUTIVE_FAILURES:
                    raise VcfFileError(
                        f"{self._source_name}: unreadable after record {record_index}"
                    ) from exc
                record_index += 1
                counters.records = record_index + 1
                self._dead_letter(record_index, line_base, "", f"htslib could not parse the record: {exc}")
                continue
            failures = 0
            record_index += 1
            counters.records = record_index + 1
            text = str(record)
            try:
                fields = text[:-1].split("\t")
                alts_text = fields[4]
                if alts_text == ".":
                    counters.ref_only_records += 1
                    continue
                alts = alts_text.split(",")
                head = (
                    _T_RECORD_INDEX
                    + _varint(record_index)
                    + (_T_LINE_NUMBER + _varint(line_base + record_index) if line_base else b"")
                    + self._record_head(fields)
                )
                tail = b"".join([self._field(_T_ALL_ALTERNATES, alt) for alt in alts]) + self._record_tail(
                    fields
                )
            except (ValueError, IndexError) as exc:
                self._dead_letter(record_index, line_base, text[:-1], f"cannot encode the record: {exc}")
                continue
            for alt_index, alt in enumerate(alts):
                body = b"".join(
                    (
                        _T_CORRELATION,
                        b"\x20",
                        correlation_id(file_id, record_index, alt_index).encode(),
                        job_fields,
                        head,
                        self._field(_T_ALTERNATE, alt),
                        _T_ALT_INDEX + _SMALL[alt_index] if alt_index else b"",
                        tail,
                        suffix,
                    )
                )
                if first_index < 0:
                    first_index = record_index
                    first_locus = (fields[0], int(fields[1]))
                chunks.append(_T_BATCH_VARIANTS + _varint(len(body)) + body)
                count += 1
                if count == batch_size:
                    counters.variants += count
                    yield EncodedBatch(b"".join(chunks), count, first_index, record_index, *first_locus)
                    chunks.clear()
                    count = 0
                    first_index = -1
                    suffix = self._batch_suffix()
        if count:
            counters.variants += count
            yield EncodedBatch(b"".join(chunks), count, first_index, record_index, *first_locus)

    def _dead_letter(self, record_index: int, line_base: int, raw_line: str, reason: str) -> None:
        self.dead_lettered += 1
        letter = events_pb2.DeadLetter(
            reason=reason,
            job_id=self._job_id,
            tenant_id=self._tenant_id,
            file_name=self._source_name,
            line_number=line_base + record_index if line_base else 0,
            raw_line=raw_line,
            error_code="vcf_record_invalid",
            service="ingest",
        )
        letter.timestamp.GetCurrentTime()
        self._dead_letters.append(letter)

    def _batch_suffix(self) -> bytes:
        """Timestamp and source_name: shared by every variant of a batch, so encoded once."""
        now = time.time_ns()
        seconds, nanos = divmod(now, 1_000_000_000)
        stamp = b"\x08" + _varint(seconds) + (b"\x10" + _varint(nanos) if nanos else b"")
        return _length_delimited(_T_TIMESTAMP, stamp) + self._source_field

    def _field(self, tag: bytes, value: str) -> bytes:
        """A string field whose values recur (chromosomes, short alleles), cached."""
        key = (tag, value)
        encoded = self._field_cache.get(key)
        if encoded is None:
            if len(self._field_cache) >= _CACHE_LIMIT:
                self._field_cache.clear()
            encoded = self._field_cache[key] = _string_field(tag, value)
        return encoded

    def _record_head(self, fields: list[str]) -> bytes:
        """Fields 7-10 (chromosome .. reference), shared by all ALTs of a record."""
        vid = fields[2]
        return b"".join(
            (
                self._field(_T_CHROMOSOME, fields[0]),
                _T_POSITION,
                _varint(int(fields[1])),
                _string_field(_T_ID, vid) if vid != "." else b"",
                self._field(_T_REFERENCE, fields[3]),
            )
        )

    def _record_tail(self, fields: list[str]) -> bytes:
        """Fields 14-18 (quality .. genotypes), shared by all ALTs of a record."""
        qual = fields[5]
        filt = fields[6]
        parts = [
            _HAS_QUALITY + _T_QUALITY + _PACK_DOUBLE(float(qual)) if qual != "." else b"",
            b"".join([_string_field(_T_FILTERS, f) for f in filt.split(";")]) if filt != "." else b"",
            self._encode_info(fields[7]),
        ]
        if len(fields) > 9:
            parts.append(self._encode_genotypes(fields[8], fields[9:]))
        return b"".join(parts)

    def _encode_info(self, info: str) -> bytes:
        if info == ".":
            return b""
        cache = self._info_cache
        parts = []
        for entry in info.split(";"):
            encoded = cache.get(entry)
            if encoded is None:
                encoded = _remember(cache, entry, self._encode_info_entry(entry))
            parts.append(encoded)
        return b"".join(parts)

    def _encode_info_entry(self, entry: str) -> bytes:
        key, has_value, raw = entry.partition("=")
        meta = self._info_meta.get(key)
        if meta is None:
            # htslib passes undeclared keys through as untyped text.
            meta = _InfoMeta("String", False) if has_value else _InfoMeta("Flag", False)
        value = _encode_list(meta.kind, raw, meta.split)
        if value is None:
            return b""
        return _length_delimited(
            _T_INFO, _string_field(_T_MAP_KEY, key) + _length_delimited(_T_MAP_VALUE, value)
        )

    def _format_layout(self, fmt: str) -> tuple[int, int, int, int, int]:
        """Field count and positions of GT, DP, GQ, AD in a FORMAT string.

        An absent key points one past the last field, where every split sample
        value carries a `.` (see _encode_genotypes), so lookups need no branch.
        """
        layout = self._format_cache.get(fmt)
        if layout is None:
            keys = fmt.split(":")
            width = len(keys)
            gt, dp, gq, ad = (keys.index(k) if k in keys else width for k in ("GT", "DP", "GQ", "AD"))
            layout = self._format_cache[fmt] = (width + 1, gt, dp, gq, ad)
        return layout

    def _encode_genotypes(self, fmt: str, tokens: list[str]) -> bytes:
        # The hot loop for multi-sample files: one split and four cache hits per
        # sample is the measured floor; bulk map()-based variants were slower.
        width, gi, di, qi, ai = self._format_layout(fmt)
        gt_get = self._gt_cache.get
        depth_get = self._depth_cache.get
        gq_get = self._gq_cache.get
        ad_get = self._ad_cache.get
        parts = []
        for sample_field, token in zip(self._sample_fields, tokens, strict=False):
            values = (token + ":.").split(":")
            if len(values) != width:
                # Trailing fields may be dropped; pad them as missing.
                values = values[:-1] + ["."] * (width - len(values) + 1)
            gt = gt_get(values[gi])
            if gt is None:
                gt = _remember(self._gt_cache, values[gi], _encode_gt(values[gi]))
            depth = depth_get(values[di])
            if depth is None:
                depth = _remember(self._depth_cache, values[di], _encode_int_field(_T_DEPTH, values[di]))
            gq = gq_get(values[qi])
            if gq is None:
                gq = _remember(self._gq_cache, values[qi], _encode_int_field(_T_GQ, values[qi]))
            ad = ad_get(values[ai])
            if ad is None:
                ad = _remember(self._ad_cache, values[ai], _encode_ad(values[ai]))
            body = sample_field + gt + depth + gq + ad
            size = len(body)
            parts.append(_T_GENOTYPES + (_SMALL[size] if size < 16384 else _varint(size)) + body)
        return b"".join(parts)
