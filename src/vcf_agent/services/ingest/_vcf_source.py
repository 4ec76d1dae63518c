"""Opening any VCF shape as text lines: plain, bgzipped, plain gzip, BCF, or a region.

Plain and (b)gzipped VCF are read as text here, not through htslib: htslib
would parse every record into binary and format it back to text, which costs
more than the rest of ingest, and it cannot seek in gzip that is not BGZF.
BCF and indexed region queries go through pysam. Everything that makes a file
unusable (empty, binary, truncated, wrong format) is detected here,
before the caller publishes anything.
"""

from __future__ import annotations

import gzip
import io
import itertools
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pysam

from ._background_gunzip import BackgroundGunzip
from ._input_limits import InputLimitError, InputLimits, LineBoundedRaw, NewlineRuns
from ._vcf_header import VcfFileError

# The fixed 28-byte empty block every complete BGZF file ends with.
_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
_SNIFF_BYTES = 1 << 16
_CHUNK = 1 << 20
_OTHER_FORMATS = {
    b"BAM\x01": "a BAM alignment file",
    b"CRAM": "a CRAM alignment file",
    b"BCF\x01": "a BCF version 1 file (only BCF 2 is supported)",
    b"PK\x03\x04": "a ZIP archive",
    b"%PDF": "a PDF document",
    b"\x89HDF": "an HDF5 file",
}


@dataclass(slots=True)
class VcfText:
    """A VCF as text: header lines (no line endings) and an iterator over record lines.

    `first_line_number` is the 1-based line of the first record, or 0 when line
    numbers are unknowable (BCF, region queries).
    """

    kind: str
    header_lines: list[str]
    lines: Iterator[str]
    first_line_number: int
    close: Callable[[], None]


def _is_bgzf(head: bytes) -> bool:
    return len(head) >= 14 and bool(head[3] & 4) and head[12:14] == b"BC"


def _has_bgzf_eof(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() < len(_BGZF_EOF):
            return False
        fh.seek(-len(_BGZF_EOF), os.SEEK_END)
        return fh.read() == _BGZF_EOF


def _check_gzip_complete(path: Path, name: str, limits: InputLimits) -> None:
    """Decompress the whole file once, so a truncated file fails before anything is published.

    Lines are measured on the way: a gzip bomb of one endless line fails at its limit.
    """
    runs = NewlineRuns(limits.max_line_bytes, name)
    try:
        with gzip.open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                runs.feed(chunk)
    except EOFError as exc:
        raise VcfFileError(
            f"{name}: the compressed file is truncated (it ends in the middle of the data); "
            "the upload or copy was probably interrupted",
            "TRUNCATED_FILE",
        ) from exc
    except (OSError, zlib.error) as exc:
        raise VcfFileError(f"{name}: the gzip data is corrupt ({exc})", "UNREADABLE_COMPRESSION") from exc


def _sniff(path: Path, name: str, limits: InputLimits, *, check_complete: bool = True) -> tuple[bytes, str]:
    """The first decompressed bytes and the container kind: plain, bgzf or gzip.

    check_complete decompresses a gzip (or marker-less BGZF) file once to catch truncation;
    a caller that only reads the header can skip that.
    """
    if path.stat().st_size == 0:
        raise VcfFileError(f"{name}: the file is empty", "EMPTY_FILE")
    with open(path, "rb") as fh:
        head = fh.read(max(18, _SNIFF_BYTES))
    if head[:2] != b"\x1f\x8b":
        return head[:_SNIFF_BYTES], "plain"
    kind = "bgzf" if _is_bgzf(head) else "gzip"
    try:
        with gzip.open(path, "rb") as fh:
            start = fh.read(_SNIFF_BYTES)
    except EOFError as exc:
        raise VcfFileError(f"{name}: the compressed file is truncated", "TRUNCATED_FILE") from exc
    except (OSError, zlib.error) as exc:
        raise VcfFileError(
            f"{name}: the file looks gzip-compressed but cannot be decompressed ({exc})",
            "UNREADABLE_COMPRESSION",
        ) from exc
    if check_complete and (kind == "gzip" or not _has_bgzf_eof(path)):
        # Plain gzip has no end marker to check cheaply; a BGZF file without one
        # may be truncated or just old, so decompressing it all tells which.
        _check_gzip_complete(path, name, limits)
    return start, kind


def open_vcf_text(
    path: Path,
    *,
    name: str = "",
    region: str | None = None,
    check_complete: bool = True,
    limits: InputLimits | None = None,
) -> VcfText:
    """Open `path` as VCF text; raises VcfFileError (with a code) when it cannot be ingested.

    Over one of `limits` (the defaults when None) it raises InputLimitError, when opening
    or later, from the line iterator.
    """
    name = name or path.name
    limits = limits or InputLimits()
    try:
        start, container = _sniff(path, name, limits, check_complete=check_complete)
    except OSError as exc:
        raise VcfFileError(f"{name}: cannot read the file ({exc})", "UNREADABLE_COMPRESSION") from exc
    if start.startswith(b"BCF\x02"):
        return _open_bcf(path, name, region, limits)
    for magic, what in _OTHER_FORMATS.items():
        if start.startswith(magic):
            raise VcfFileError(f"{name}: this is {what}, not a VCF", "WRONG_FORMAT")
    if b"\x00" in start:
        raise VcfFileError(f"{name}: this is a binary file, not VCF text", "BINARY_FILE")
    if not start.strip():
        raise VcfFileError(f"{name}: the file holds no data (only blank space)", "EMPTY_FILE")
    if region:
        if container != "bgzf":
            raise VcfFileError(
                f"{name}: a region query needs a bgzipped file with a .tbi or .csi index", "NOT_INDEXED"
            )
        return _open_region(path, name, region)
    # Left open on success: the returned VcfText owns the file until close().
    raw: io.RawIOBase = io.FileIO(path) if container == "plain" else BackgroundGunzip(path)
    opened: IO[str] = io.TextIOWrapper(
        io.BufferedReader(LineBoundedRaw(raw, limits.max_line_bytes, name), _CHUNK),
        encoding="utf-8",
        errors="surrogateescape",
        newline=None,
    )
    try:
        header, first = _read_header(opened, name, limits)
    except BaseException:
        opened.close()
        raise
    kind = {"plain": "vcf", "bgzf": "vcf.gz", "gzip": "gzip"}[container]
    lines: Iterator[str] = itertools.chain([first], opened) if first is not None else iter(())
    return VcfText(kind, header, lines, len(header) + 1, opened.close)


def _read_header(fh: IO[str], name: str, limits: InputLimits) -> tuple[list[str], str | None]:
    """Header lines and the first record line (None when the file has a header and no records).

    A header without records is a valid VCF (no version requires a record);
    the reader reports it as a warning and the job completes with 0 variants.
    """
    header: list[str] = []
    size = 0
    for line in fh:
        if line.startswith("#"):
            size += len(line)
            if size > limits.max_header_bytes:
                raise InputLimitError(
                    "max_header_bytes",
                    limits.max_header_bytes,
                    f"{name}: the header is longer than {limits.max_header_bytes} bytes",
                    len(header) + 1,
                )
            samples = line.count("\t") - 8 if line.startswith("#CHROM") else 0
            if samples > limits.max_samples:
                raise InputLimitError(
                    "max_samples", limits.max_samples, f"{name}: the header names {samples} samples"
                )
            try:
                line.encode()
            except UnicodeEncodeError:
                raise VcfFileError(
                    f"{name}: header line {len(header) + 1} holds bytes that are not UTF-8",
                    "NOT_UTF8",
                    len(header) + 1,
                ) from None
            header.append(line.rstrip("\n"))
            continue
        if not line.strip() and header and not header[-1].startswith("#CHROM"):
            # Kept so line numbers stay exact; the header check reports it.
            header.append("")
            continue
        if not header:
            raise VcfFileError(
                f"{name}: the file has no VCF header (it must start with ##fileformat=VCFv4.x)",
                "FILEFORMAT_MISSING",
                1,
            )
        return header, line
    if not header:
        raise VcfFileError(f"{name}: the file is empty", "EMPTY_FILE")
    if not header[-1].startswith("#CHROM"):
        raise VcfFileError(f"{name}: the header has no #CHROM line", "HEADER_LINE_MISSING", len(header))
    return header, None


def _open_region(path: Path, name: str, region: str) -> VcfText:
    try:
        tabix = pysam.TabixFile(os.fspath(path))
    except (OSError, ValueError) as exc:
        raise VcfFileError(f"{name}: no usable index for a region query ({exc})", "NOT_INDEXED") from exc
    try:
        rows = tabix.fetch(region=region)
    except (OSError, ValueError) as exc:
        tabix.close()
        raise VcfFileError(f"{name}: cannot query region {region!r} ({exc})", "BAD_REGION") from exc
    header = [line.rstrip("\n") for line in tabix.header]
    return VcfText("vcf.gz", header, (row + "\n" for row in rows), 0, tabix.close)


def _open_bcf(path: Path, name: str, region: str | None, limits: InputLimits) -> VcfText:
    try:
        variant_file = pysam.VariantFile(os.fspath(path))
    except (OSError, ValueError) as exc:
        raise VcfFileError(f"{name}: not a readable BCF file ({exc})", "WRONG_FORMAT") from exc
    samples = len(variant_file.header.samples)
    if samples > limits.max_samples:
        variant_file.close()
        what = f"{name}: the header names {samples} samples"
        raise InputLimitError("max_samples", limits.max_samples, what)
    header = str(variant_file.header).rstrip("\n").split("\n")
    try:
        records = variant_file.fetch(region=region) if region else variant_file
    except (OSError, ValueError) as exc:
        variant_file.close()
        raise VcfFileError(f"{name}: cannot query region {region!r} ({exc})", "BAD_REGION") from exc
    lines: Iterator[str] = (str(record) for record in records)
    if not region:
        try:
            first = next(lines)
        except StopIteration:
            lines = iter(())
        except (OSError, ValueError) as exc:
            variant_file.close()
            raise VcfFileError(f"{name}: the BCF data is corrupt ({exc})", "TRUNCATED_FILE") from exc
        else:
            lines = itertools.chain([first], lines)
    return VcfText("bcf", header, lines, 0, variant_file.close)


def header_samples(path: Path, limits: InputLimits | None = None) -> list[str]:
    """Sample names from the header alone, without reading (or decompressing) the records."""
    text = open_vcf_text(path, check_complete=False, limits=limits)
    try:
        names = next((line for line in text.header_lines if line.startswith("#CHROM")), "").split("\t")
    finally:
        text.close()
    return names[9:]
