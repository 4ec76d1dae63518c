"""Wake-ups between processes sharing one embedded log: a datagram per publish to each reader.

Without them a consumer in another process sees a record only when its idle poll comes
round, up to MAX_IDLE_SLEEP_S later, and a job crosses five such hops (ingest, router,
provider worker, aggregator, writer, back to ingest). Each consumer binds a datagram socket
in Linux's abstract namespace (no file, gone with the process) and registers its name under
`doorbells/<stream>/` in the log's directory; a publisher rings every name registered for
the stream once its records are committed. A lost ring costs only the wait it would have
saved: consumers still poll, so correctness never depends on one. Elsewhere than Linux (no
abstract namespace) there are no doorbells and consumers poll as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

_AVAILABLE = sys.platform == "linux"
_PREFIX = b"\0vcf-agent-doorbell-"


def _address(name: str) -> bytes:
    return _PREFIX + name.encode()


class Doorbell:
    """A consumer's socket: `wake` is called on the loop whenever a publisher rings it."""

    def __init__(self, directory: Path, streams: Iterable[str], wake: Callable[[], None]) -> None:
        # Host and pid in the name let a publisher tell a crashed process's leftover from a live one.
        self.name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._files = [directory / stream / self.name for stream in streams]
        self._wake = wake
        self._socket: socket.socket | None = None

    def open(self) -> None:
        """Bind and register; on any failure the consumer just polls."""
        if not _AVAILABLE:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(_address(self.name))
            asyncio.get_running_loop().add_reader(sock.fileno(), self._rung)
        except OSError:
            sock.close()
            return
        self._socket = sock
        try:
            for path in self._files:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
        except OSError:
            self.close()

    def close(self) -> None:
        for path in self._files:
            with contextlib.suppress(OSError):
                path.unlink()
        sock, self._socket = self._socket, None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()

    def _rung(self) -> None:
        assert self._socket is not None
        # Every ring queued so far is one wake-up.
        with contextlib.suppress(OSError):
            while self._socket.recv(64):
                pass
        self._wake()


class Bells:
    """A publisher's side: rings the doorbells registered for a stream."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._socket: socket.socket | None = None
        # stream -> (directory mtime, names): listed again only when the directory changed.
        self._names: dict[str, tuple[int, list[str]]] = {}
        # This process's own consumers are woken directly, not through a socket.
        self.local: set[str] = set()

    def ring(self, stream: str) -> None:
        names = self._registered(stream)
        if not names:
            return
        if self._socket is None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.setblocking(False)
        for name in names:
            if name in self.local:
                continue
            try:
                self._socket.sendto(b"\1", _address(name))
            except BlockingIOError:
                pass  # its queue is full of rings it has not read yet: it is awake already
            except ConnectionRefusedError:
                self._forget_if_dead(stream, name)
            except OSError:
                pass  # a wake-up lost: that consumer sees the records at its next poll

    def close(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()

    def _registered(self, stream: str) -> list[str]:
        directory = self._directory / stream
        try:
            changed = directory.stat().st_mtime_ns
        except OSError:
            return []
        known = self._names.get(stream)
        if known is None or known[0] != changed:
            try:
                known = (changed, os.listdir(directory))
            except OSError:
                return []
            self._names[stream] = known
        return known[1]

    def _forget_if_dead(self, stream: str, name: str) -> None:
        """Unregister a name left by a process of this host that no longer runs (it was killed).

        Nothing listens on a live process's name from another network namespace either: that
        one is kept, and costs one refused datagram per publish.
        """
        host, _, pid = name.rpartition("-")[0].rpartition("-")
        if host != socket.gethostname() or not pid.isdigit():
            return
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                (self._directory / stream / name).unlink()
        except OSError:
            pass
