"""One collector per spool directory: an exclusive lock held for the process's life.

Two collectors on one spool would append to the same open files (same names when they
share a configuration) and each would seal or upload the other's chunks at its start.
:func:`hold_spool_lock` takes an advisory ``flock`` on the spool directory itself (no lock
file to leave behind or to clean up); the kernel releases it when the process dies, also
on ``kill -9``, so a restarted collector never finds a stale lock. A second process gets
:class:`SpoolInUseError` before it reads or writes anything in the spool. The spool must be
on a local file system (``flock`` on NFS is not reliable; the spool is local by design).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from booktape.errors import ConfigError


class SpoolInUseError(ConfigError):
    """Another process holds the spool directory's lock."""


@contextlib.contextmanager
def hold_spool_lock(spool_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Create ``spool_dir`` if needed and hold its exclusive lock inside the block."""
    path = Path(spool_dir)
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise SpoolInUseError(
                    f"spool directory {path} is in use by another process (its lock is held):"
                    " two collectors must not share a spool directory"
                ) from None
            raise
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock
