"""Gzip decompression on its own thread, so inflating overlaps with parsing.

zlib releases the GIL while it inflates, so a thread that decompresses the
next chunks while the reader encodes records puts the second core to work:
inflating a bgzipped VCF costs about a quarter of ingest on one thread.
Memory stays bounded by a few chunks in flight.
"""

from __future__ import annotations

import gzip
import io
import queue
import threading
from pathlib import Path

_CHUNK = 1 << 20
_CHUNKS_AHEAD = 4
_POLL_S = 0.1


class BackgroundGunzip(io.RawIOBase):
    """A readable raw stream of a gzip file's decompressed bytes, inflated ahead on a thread.

    An error of the decompressor (truncation, corrupt data) is raised by the
    read that reaches it, as gzip.open would.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._file = gzip.open(path, "rb")  # noqa: SIM115 - closed by close()
        self._chunks: queue.Queue[bytes | BaseException] = queue.Queue(_CHUNKS_AHEAD)
        self._stopping = threading.Event()
        self._pending = memoryview(b"")
        self._eof = False
        self._thread = threading.Thread(target=self._inflate, name=f"gunzip {path.name}", daemon=True)
        self._thread.start()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._pending:
            if self._eof:
                return 0
            item = self._chunks.get()
            if isinstance(item, BaseException):
                self._eof = True
                raise item
            if not item:
                self._eof = True
                return 0
            self._pending = memoryview(item)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def close(self) -> None:
        if not self.closed:
            self._stopping.set()
            # Unblock a thread waiting for room, then wait for it to let go of the file.
            while self._thread.is_alive():
                try:
                    self._chunks.get_nowait()
                except queue.Empty:
                    self._thread.join(_POLL_S)
            self._file.close()
        super().close()

    def _inflate(self) -> None:
        item: bytes | BaseException
        while not self._stopping.is_set():
            try:
                item = self._file.read(_CHUNK)
            except BaseException as exc:  # handed to the reading thread, which raises it
                item = exc
            if not self._hand_over(item) or not isinstance(item, bytes) or not item:
                return

    def _hand_over(self, item: bytes | BaseException) -> bool:
        while not self._stopping.is_set():
            try:
                self._chunks.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False
