"""Bounds on one input file, so a hostile or broken file cannot exhaust ingest's memory.

A line is read whole before it is parsed, so its length bounds memory; the
raw bytes are scanned for newlines as they are read (plain or inflated), so a
2 GiB line inside a 2 MB gzip fails once `max_line_bytes` have been read, not
after the whole line was decoded. The header is held whole, and its #CHROM
line decides how many calls each record carries. One record becomes one
message per ALT, each with every sample's call, so its encoded size is
checked before it is built. Over any bound the job fails at once, naming it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from vcf_agent.config import Settings

from ._vcf_header import VcfFileError

__all__ = ["InputLimitError", "InputLimits", "LineBoundedRaw", "NewlineRuns"]


@dataclass(frozen=True, slots=True)
class InputLimits:
    """See Settings.ingest_max_*; the defaults are the settings' defaults."""

    max_line_bytes: int = 16 * 1024**2
    max_header_bytes: int = 16 * 1024**2
    max_samples: int = 20_000
    max_record_bytes: int = 16 * 1024**2

    @classmethod
    def from_settings(cls, settings: Settings) -> InputLimits:
        return cls(
            settings.ingest_max_line_bytes,
            settings.ingest_max_header_bytes,
            settings.ingest_max_samples,
            settings.ingest_max_record_bytes,
        )


# The setting (and variable) that raises each limit, quoted in the job's error.
_SETTINGS = {
    "max_line_bytes": "VCF_AGENT_INGEST_MAX_LINE_BYTES",
    "max_header_bytes": "VCF_AGENT_INGEST_MAX_HEADER_BYTES",
    "max_samples": "VCF_AGENT_INGEST_MAX_SAMPLES",
    "max_record_bytes": "VCF_AGENT_INGEST_MAX_RECORD_BYTES",
}


class InputLimitError(VcfFileError):
    """The file passes one of the input limits; the message names the limit and its setting."""

    def __init__(self, limit: str, value: int, what: str, line: int = 0) -> None:
        super().__init__(
            f"{what}, over the input limit {limit}={value} (raise {_SETTINGS[limit]} to accept it)",
            f"LIMIT_{limit.upper()}",
            line,
        )
        self.limit = limit


class NewlineRuns:
    """Tracks the longest run of bytes without a newline across consecutive chunks."""

    def __init__(self, max_line_bytes: int, name: str) -> None:
        self._max = max_line_bytes
        self._name = name
        self._run = 0

    def feed(self, data: bytes) -> None:
        """Raises InputLimitError as soon as a line passes the limit."""
        first = data.find(b"\n")
        if first < 0:
            self._run += len(data)
            self._check(self._run)
            return
        self._check(self._run + first)
        if len(data) > self._max:
            # Lines inside a chunk longer than the limit: check each (only with small limits).
            start = first + 1
            while (stop := data.find(b"\n", start)) >= 0:
                self._check(stop - start)
                start = stop + 1
        self._run = len(data) - data.rfind(b"\n") - 1
        self._check(self._run)

    def _check(self, run: int) -> None:
        if run > self._max:
            raise InputLimitError(
                "max_line_bytes", self._max, f"{self._name}: a line is longer than {self._max} bytes"
            )


class LineBoundedRaw(io.RawIOBase):
    """A raw stream that raises InputLimitError when a line passes `max_line_bytes`.

    Wraps the file (or the inflating stream) below the text decoder, so nothing
    above it ever buffers more than one limit's worth of one line.
    """

    def __init__(self, raw: io.RawIOBase, max_line_bytes: int, name: str) -> None:
        super().__init__()
        self._raw = raw
        self._runs = NewlineRuns(max_line_bytes, name)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        size = self._raw.readinto(buffer)
        if size:
            self._runs.feed(bytes(memoryview(buffer)[:size]))
        return size or 0

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()
