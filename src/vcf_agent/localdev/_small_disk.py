"""A size-limited filesystem that can be filled and emptied: the full disk of fault tests and chaos.

A tmpfs of a fixed size, mounted over a directory. Writes into it fail with ENOSPC
for real once `fill()` took the free space, and succeed again after `free()`; nothing
in the code under test is told. Mounting needs CAP_SYS_ADMIN (root in a container
that allows mounts); without it SmallDiskUnavailableError says why.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from types import TracebackType

_CHUNK = 1 << 20


class SmallDiskUnavailableError(RuntimeError):
    """This machine cannot mount a tmpfs here (not root, or mounts are not allowed)."""


class SmallDisk:
    """`with SmallDisk(path, 64 << 20) as disk:` mounts; `disk.fill()` / `disk.free()` move the ballast."""

    def __init__(self, path: Path, size_bytes: int) -> None:
        self.path = path
        self.size_bytes = size_bytes
        self._ballast = path / ".ballast"

    def __enter__(self) -> SmallDisk:
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={self.size_bytes}", "tmpfs", str(self.path)],
                capture_output=True,
                text=True,
                check=False,
            )
        except FileNotFoundError as exc:
            raise SmallDiskUnavailableError("no `mount` command on this machine") from exc
        if done.returncode != 0:
            raise SmallDiskUnavailableError(f"cannot mount a tmpfs: {done.stderr.strip() or done.returncode}")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        # Lazy: a store a test left open must not keep the mount (and its memory) alive.
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)

    def fill(self) -> int:
        """Take every free byte into a ballast file; returns the bytes taken."""
        taken = 0
        block = memoryview(b"\0" * _CHUNK)
        fd = os.open(self._ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while True:
                try:
                    written = os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    return taken
                if not written:
                    return taken
                taken += written
        finally:
            os.close(fd)

    def free(self) -> None:
        """Give the ballast's space back."""
        self._ballast.unlink(missing_ok=True)

    def free_bytes(self) -> int:
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize
