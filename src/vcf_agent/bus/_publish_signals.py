"""Cross-process wake-ups for the embedded log: a publish touches its stream's signal file.

A consumer of the embedded bus in another process cannot be signalled by a publish, so an
idle consumer sleeps between fetches, backing off to the bus's longest idle sleep (50 ms): a
job arriving at idle services waited up to that long at each of its hops between processes
(ingest, router, aggregator, writer, and back to ingest's job tracker). Here the publisher
touches one empty file per stream after each publish commits, and each process watches the
directory with Linux inotify, waking the consumers of that stream at once. Only a publish
wakes a consumer, and only one of its streams: commits, heartbeats and other streams'
publishes do not.

The files hold nothing: what a consumer reads still comes from the log, so a missed or
spurious signal costs a sleep or a fetch, never a record. Where inotify is not available
(not Linux, watches exhausted, a network file system) the sleeps alone remain, as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import struct
import sys
from pathlib import Path

_log = logging.getLogger(__name__)

# The directory beside the log's database that holds the signal files.
SIGNAL_DIRECTORY = "publish-signals"

# linux/inotify.h: a file's metadata changed (os.utime), or it was created.
_IN_ATTRIB = 0x00000004
_IN_CREATE = 0x00000100
# Events were dropped: which streams were published is unknown.
_IN_Q_OVERFLOW = 0x00004000
# struct inotify_event: int wd; uint32 mask, cookie, len; then `len` bytes of NUL-padded name.
_EVENT_HEADER = struct.Struct("iIII")

_LIBC = None
if sys.platform == "linux":
    _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def signal_name(stream: str) -> str:
    """The stream's signal file name: hex, so that any stream name is one safe file name."""
    return stream.encode().hex()


def signal_published(directory: Path, stream: str) -> None:
    """Touch `stream`'s signal file after a publish committed (creating it the first time)."""
    path = directory / signal_name(stream)
    try:
        os.utime(path)
    except FileNotFoundError:
        path.touch()


class PublishWatch:
    """An inotify descriptor on a signal directory; read() names the streams published since."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def of(cls, directory: Path) -> PublishWatch | None:
        """A watch on `directory`, or None where inotify is not available (then consumers sleep)."""
        if _LIBC is None or not hasattr(_LIBC, "inotify_init1"):
            return None
        fd = _LIBC.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            _log.info("embedded bus: no inotify (%s); consumers poll", os.strerror(ctypes.get_errno()))
            return None
        if _LIBC.inotify_add_watch(fd, os.fsencode(directory), _IN_ATTRIB | _IN_CREATE) < 0:
            reason = os.strerror(ctypes.get_errno())
            _log.info("embedded bus: cannot watch %s (%s); consumers poll", directory, reason)
            os.close(fd)
            return None
        return cls(fd)

    def fileno(self) -> int:
        return self._fd

    def read(self) -> set[str] | None:
        """The signal file names touched since the last read (empty if none), or None if the
        kernel's event queue overflowed and any stream may have been published."""
        names: set[str] | None = set()
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return names
            # A read returns whole events only.
            at = 0
            while at + _EVENT_HEADER.size <= len(data):
                _, mask, _, length = _EVENT_HEADER.unpack_from(data, at)
                at += _EVENT_HEADER.size
                if mask & _IN_Q_OVERFLOW:
                    names = None
                elif names is not None:
                    names.add(data[at : at + length].rstrip(b"\0").decode(errors="replace"))
                at += length

    def close(self) -> None:
        os.close(self._fd)
