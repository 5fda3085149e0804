"""The spool: chunk files on local disk, before and after sealing.

Layout under ``spool_dir``::

    open/{exchange}/{channel}/{SYMBOL}/{first_recv_ns}.jsonl   a chunk being written: the
                                                                 header line, then records
    sealed/{object key}                                          sealed, waiting for upload
    sealed/{object key}.tmp                                      a seal in progress
    quarantine/...                                               open files that cannot be
                                                                 attributed (no header)

Open files are appended with ``os.write`` on an ``O_APPEND`` descriptor: what was written
survives a ``kill -9`` (the page cache outlives the process). Sealing compresses the whole
lines of an open file into one zstd frame with a content checksum, writes ``.tmp``, makes it
durable, renames it, makes the rename durable, then unlinks the open file (for a batch of
chunks at once: :meth:`Spool.seal_many`). A crash at any step leaves the
open file (sealed again at the next start, to the same key and the same bytes), the sealed
file, or both; never neither. A sealed file is deleted only after a verified upload.

Every method does blocking file I/O: call it from a worker thread (:func:`in_thread`),
except :meth:`Spool.create_open` and :meth:`Spool.write`, the writer's page-cache appends,
which it calls from the event loop's thread (see ``collector.pipeline``).
:class:`SpoolUsage`
counts bytes and files on disk (thread-safe) for metrics and the spool bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, ParamSpec, TypeVar

import zstandard

from booktape.errors import KeyLayoutError
from booktape.keys import RawKey, parse_raw_key
from booktape.stores.base import fsync_dir
from collector.syncfs import sync_filesystem

OPEN: Final = "open"
SEALED: Final = "sealed"
QUARANTINE: Final = "quarantine"
OPEN_SUFFIX: Final = ".jsonl"
TMP_SUFFIX: Final = ".tmp"
READ_CHUNK: Final = 1 << 20

P = ParamSpec("P")
T = TypeVar("T")


async def in_thread(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run blocking spool I/O in a worker thread. A cancelled caller first waits for the
    thread to finish, so that no file operation outlives the task that started it (and
    no descriptor is closed under a write still running)."""
    future = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise


@dataclass(frozen=True, slots=True)
class SealedChunk:
    """A sealed chunk waiting in the spool for its upload."""

    key: RawKey
    path: Path
    size: int  # compressed bytes on disk
    md5: str | None  # hex MD5 of the file; None until computed


@dataclass(frozen=True, slots=True)
class SealJob:
    """An open file to seal: its first ``length`` bytes (whole lines) into ``key``."""

    open_path: Path
    length: int
    key: RawKey


@dataclass(frozen=True, slots=True)
class _Written:
    """A job of :meth:`Spool.seal_many` compressed into its temp file (open, not synced)."""

    index: int
    fd: int
    tmp: Path
    open_size: int
    chunk: SealedChunk


@dataclass(frozen=True, slots=True)
class Usage:
    """What the spool holds on disk."""

    open_bytes: int
    open_chunks: int
    sealed_bytes: int
    sealed_chunks: int

    @property
    def bytes(self) -> int:
        return self.open_bytes + self.sealed_bytes

    @property
    def chunks(self) -> int:
        return self.open_chunks + self.sealed_chunks


class SpoolUsage:
    """Byte and file counters of the spool, updated from the writer, sealer and uploader."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = [0, 0]  # bytes, files
        self._sealed = [0, 0]

    def opened(self, nbytes: int, files: int = 0) -> None:
        with self._lock:
            self._open[0] += nbytes
            self._open[1] += files

    def sealed(self, open_bytes: int, sealed_bytes: int) -> None:
        """An open file of ``open_bytes`` became a sealed file of ``sealed_bytes``."""
        with self._lock:
            self._open[0] -= open_bytes
            self._open[1] -= 1
            self._sealed[0] += sealed_bytes
            self._sealed[1] += 1

    def added_sealed(self, nbytes: int) -> None:
        with self._lock:
            self._sealed[0] += nbytes
            self._sealed[1] += 1

    def removed_sealed(self, nbytes: int) -> None:
        with self._lock:
            self._sealed[0] -= nbytes
            self._sealed[1] -= 1

    def snapshot(self) -> Usage:
        with self._lock:
            return Usage(self._open[0], self._open[1], self._sealed[0], self._sealed[1])


class Spool:
    """The spool directory; see the module docstring for the layout and the guarantees."""

    def __init__(self, root: str | os.PathLike[str], *, zstd_level: int = 1) -> None:
        self.root = Path(root).absolute()
        self.open_dir = self.root / OPEN
        self.sealed_dir = self.root / SEALED
        self.quarantine_dir = self.root / QUARANTINE
        self.usage = SpoolUsage()
        self._level = zstd_level
        self._local = threading.local()
        self._dirs: set[Path] = set()

    # --- open files ------------------------------------------------------------------

    def create_open(
        self, exchange: str, channel: str, symbol: str, first_recv_ns: int
    ) -> tuple[Path, int]:
        """Create a new open file (a unique name) and return it with an O_APPEND descriptor."""
        folder = self.open_dir / exchange / channel / symbol
        if folder not in self._dirs:
            folder.mkdir(parents=True, exist_ok=True)
            self._dirs.add(folder)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        for n in range(1000):
            path = folder / (f"{first_recv_ns}-{n}" if n else str(first_recv_ns))
            path = path.with_name(path.name + OPEN_SUFFIX)
            try:
                fd = os.open(path, flags, 0o644)
            except FileExistsError:
                continue  # a chunk of the same nanosecond is still being sealed
            except FileNotFoundError:
                self._dirs.discard(folder)  # removed behind our back: a retry recreates it
                raise
            self.usage.opened(0, files=1)
            return path, fd
        raise FileExistsError(errno.EEXIST, "no free open-file name", str(folder))

    def write(self, fd: int, data: memoryview) -> int:
        """One ``os.write``; returns the bytes written (may be short). Tests override it."""
        return os.write(fd, data)

    def list_open(self) -> list[Path]:
        """Every open file a previous process left (now counted in usage), by name."""
        paths = sorted(self.open_dir.rglob(f"*{OPEN_SUFFIX}"))
        for path in paths:
            self.usage.opened(path.stat().st_size, files=1)
        return paths

    def discard_open(self, path: Path) -> None:
        """Delete an open file that holds no whole record."""
        size = path.stat().st_size
        path.unlink()
        self.usage.opened(-size, files=-1)

    def quarantine(self, path: Path) -> Path:
        """Move an open file that cannot be sealed out of the way (kept for an operator)."""
        dest = self.quarantine_dir / path.relative_to(self.open_dir)
        dest.parent.mkdir(parents=True, exist_ok=True)
        size = path.stat().st_size
        os.replace(path, dest)
        self.usage.opened(-size, files=-1)
        return dest

    # --- sealing ---------------------------------------------------------------------

    def sealed_path(self, key: RawKey) -> Path:
        return self.sealed_dir / key.key

    def seal(self, open_path: Path, length: int, key: RawKey) -> SealedChunk:
        """Compress the first ``length`` bytes (whole lines) of ``open_path`` into ``key``
        (:meth:`seal_many` of one). Raises OSError (e.g. ENOSPC) with the open file untouched."""
        (result,) = self.seal_many([SealJob(open_path, length, key)])
        if isinstance(result, OSError):
            raise result
        return result

    def seal_many(self, jobs: Sequence[SealJob]) -> list[SealedChunk | OSError]:
        """Seal several open files with one durability barrier for all (group commit).

        Each job's whole lines are compressed into ``<key>.tmp``. Then one sync makes every
        temp file durable (:func:`~collector.syncfs.sync_filesystem`: one ``syncfs`` on
        Linux, else an fsync each), they are renamed to ``<key>``, a second sync makes the
        renames durable (else an fsync of each folder), and only then are the open files
        unlinked. At the minute's turn ~1,500 chunks are sealed at once: two fsyncs each
        cost more CPU than their compression.

        Returns, in order, each job's sealed chunk or the OSError that stopped it: a failed
        compression (ENOSPC...) fails that job alone; a failed sync fails every job that
        reached it. A failed job's open file is untouched (a sync failing after the
        renames leaves the sealed files too: a retry writes them again, and a restart
        finds the open file equal to its sealed twin and drops it).
        """
        results: list[SealedChunk | OSError] = []
        written: list[_Written] = []
        try:
            for job in jobs:
                try:
                    written.append(self._compress(job, len(results)))
                except OSError as exc:
                    results.append(exc)
                    continue
                results.append(written[-1].chunk)
            try:
                self._sync([w.fd for w in written], [])
            except OSError as exc:
                for w in written:
                    results[w.index] = exc
                    with contextlib.suppress(FileNotFoundError):
                        w.tmp.unlink()
                return results
        finally:
            for w in written:
                os.close(w.fd)
        renamed = []
        for w in written:
            try:
                os.replace(w.tmp, w.chunk.path)
            except OSError as exc:
                results[w.index] = exc
                with contextlib.suppress(FileNotFoundError):
                    w.tmp.unlink()
                continue
            renamed.append(w)
        try:
            self._sync([], sorted({w.chunk.path.parent for w in renamed}))
        except OSError as exc:
            for w in renamed:
                results[w.index] = exc
            return results
        for w in renamed:
            with contextlib.suppress(FileNotFoundError):
                jobs[w.index].open_path.unlink()
            self.usage.sealed(w.open_size, w.chunk.size)
        return results

    def _compress(self, job: SealJob, index: int) -> _Written:
        """Write ``job``'s temp file (not yet synced); its descriptor stays open."""
        final = self.sealed_path(job.key)
        tmp = final.with_name(final.name + TMP_SUFFIX)
        md5 = hashlib.md5(usedforsecurity=False)
        size = 0
        out = self._create_tmp(tmp)
        try:
            zobj = self._compressor().compressobj(size=job.length)
            with open(job.open_path, "rb") as src:
                open_size = os.fstat(src.fileno()).st_size
                left = job.length
                while left > 0:
                    piece = src.read(min(READ_CHUNK, left))
                    if not piece:
                        raise OSError(
                            errno.EIO, "open file shorter than written", str(job.open_path)
                        )
                    left -= len(piece)
                    size += _write_all(out, zobj.compress(piece), md5.update)
            size += _write_all(out, zobj.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH), md5.update)
        except BaseException:
            os.close(out)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        chunk = SealedChunk(job.key, final, size, md5.hexdigest())
        return _Written(index, out, tmp, open_size, chunk)

    def _sync(self, fds: list[int], folders: list[Path]) -> None:
        """Make the files ``fds`` and the entries of ``folders`` durable: one ``syncfs``
        of the spool's filesystem where there is one, else an fsync of each."""
        if not fds and not folders:
            return
        root = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if sync_filesystem(root):
                return
        finally:
            os.close(root)
        for fd in fds:
            os.fsync(fd)
        for folder in folders:
            fsync_dir(folder)

    def _compressor(self) -> zstandard.ZstdCompressor:
        """This thread's compressor, reused from seal to seal (a new one per seal allocates
        its context again; one must not be shared by threads)."""
        compressor: zstandard.ZstdCompressor | None = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = zstandard.ZstdCompressor(level=self._level, write_checksum=True)
            self._local.compressor = compressor
        return compressor

    def _create_tmp(self, tmp: Path) -> int:
        """Create a seal's temp file; its folder is made when missing (the symbol's first
        chunk of the day; the uploader may prune an emptied folder meanwhile)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        for _ in range(3):
            try:
                return os.open(tmp, flags, 0o644)
            except FileNotFoundError:
                tmp.parent.mkdir(parents=True, exist_ok=True)
        return os.open(tmp, flags, 0o644)

    # --- sealed files ----------------------------------------------------------------

    def list_sealed(self) -> tuple[list[SealedChunk], list[Path]]:
        """Sealed chunks on disk (now counted in usage), and files that are not raw keys.

        Leftover ``.tmp`` files (a seal cut by a crash; its open file still exists) and empty
        folders are removed.
        """
        chunks: list[SealedChunk] = []
        strangers: list[Path] = []
        found = list(self.sealed_dir.rglob("*"))
        for folder in sorted((p for p in found if p.is_dir()), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()  # empty: kept by remove_sealed(prune=False) before a restart
        for path in sorted(p for p in found if p.is_file()):
            if path.name.endswith(TMP_SUFFIX):
                path.unlink()
                continue
            try:
                key = parse_raw_key(path.relative_to(self.sealed_dir).as_posix())
            except KeyLayoutError:
                strangers.append(path)
                continue
            chunks.append(SealedChunk(key, path, path.stat().st_size, None))
            self.usage.added_sealed(chunks[-1].size)
        return chunks, strangers

    def remove_sealed(self, chunk: SealedChunk, *, prune: bool = True) -> None:
        """Delete an uploaded chunk and (``prune``) the folders it leaves empty.

        The uploader keeps the folders of the current UTC day (``prune=False``): the same
        symbol's next chunk is sealed there a minute later, and removing and creating three
        folders per chunk cost more than the rest of the removal (~1 ms a chunk, with
        ``discard`` on). They go with the day's last chunk, or at the next start.
        """
        chunk.path.unlink()
        self.usage.removed_sealed(chunk.size)
        if prune:
            self._prune(chunk.path.parent)

    def _prune(self, parent: Path) -> None:
        while parent != self.sealed_dir and parent.is_relative_to(self.sealed_dir):
            try:
                parent.rmdir()
            except OSError:
                break  # not empty, or a seal is creating a file there
            parent = parent.parent


def _write_all(fd: int, data: bytes, update: Callable[[bytes], None]) -> int:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    update(data)
    return len(data)


def sealed_content_equals(path: Path, data: bytes) -> bool:
    """True if the sealed file at ``path`` exists and decompresses to exactly ``data``."""
    try:
        compressed = path.read_bytes()
    except FileNotFoundError:
        return False
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(compressed, read_across_frames=True)
        return bool(reader.read() == data)
    except zstandard.ZstdError:
        return False


def file_md5(path: Path) -> str:
    """Hex MD5 of a file's content."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while piece := f.read(READ_CHUNK):
            digest.update(piece)
    return digest.hexdigest()


def whole_lines(path: Path) -> bytes:
    """The content of ``path`` up to its last newline (a cut last line is dropped)."""
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1]
