"""LocalStore: objects as files under a root directory.

Writes go to a temp file in ``<root>/.tmp/``, are fsynced and renamed onto the final path,
then the directory is fsynced: a crash leaves either the old object or the new one, plus
at most a stale temp file that listings ignore. The ETag (hex MD5, as for an S3 single PUT)
is computed while writing and cached in the ``user.booktape.md5`` extended attribute
together with the size and mtime it was computed for; files without a valid cache (written
by another tool, or on a filesystem without xattrs) are hashed when asked for.
All file I/O runs in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import TypeVar

from booktape.errors import ObjectNotFoundError
from booktape.stores.base import (
    COPY_CHUNK,
    TMP_PREFIX,
    AtomicFile,
    BaseStore,
    ObjectInfo,
    check_key,
    check_prefix,
    is_valid_key,
    oserror_to_store_error,
    read_chunks,
    write_atomic,
)

T = TypeVar("T")

ETAG_XATTR = "user.booktape.md5"
_NOT_FOUND = (FileNotFoundError, NotADirectoryError, IsADirectoryError)


def _cache_etag(fd: int, md5_hex: str, st: os.stat_result) -> None:
    # Without xattr support (or on a read-only store) the ETag is recomputed when needed.
    with contextlib.suppress(OSError):
        os.setxattr(fd, ETAG_XATTR, f"{md5_hex} {st.st_size} {st.st_mtime_ns}".encode())


def _cached_etag(fd: int, st: os.stat_result) -> str | None:
    try:
        md5_hex, size, mtime_ns = os.getxattr(fd, ETAG_XATTR).decode("ascii").split(" ")
        if int(size) == st.st_size and int(mtime_ns) == st.st_mtime_ns:
            return md5_hex
    except (OSError, ValueError):
        pass
    return None


def _info(key: str, path: str | Path) -> ObjectInfo:
    """Stat and ETag of one file, read through one descriptor so they agree."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "not a file", str(path))
        md5_hex = _cached_etag(fd, st)
        if md5_hex is None:
            digest = hashlib.md5(usedforsecurity=False)
            while chunk := os.read(fd, COPY_CHUNK):
                digest.update(chunk)
            md5_hex = digest.hexdigest()
            _cache_etag(fd, md5_hex, st)
    finally:
        os.close(fd)
    return ObjectInfo(key, st.st_size, md5_hex, st.st_mtime_ns)


class _ObjectFile(AtomicFile):
    def before_rename(self, fd: int, st: os.stat_result) -> None:
        _cache_etag(fd, self.md5.hexdigest(), st)


def _store_chunks(key: str, final: Path, tmp_dir: Path, chunks: Iterable[bytes]) -> ObjectInfo:
    out = _ObjectFile(final, tmp_dir)
    st = write_atomic(out, chunks)
    return ObjectInfo(key, st.st_size, out.md5.hexdigest(), st.st_mtime_ns)


def _scan(directory: Path, rel: str, name_prefix: str, top: bool) -> list[ObjectInfo | str]:
    """One directory level, sorted as full keys sort: files as ObjectInfo, folders as keys."""
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    items: list[tuple[str, os.DirEntry[str]]] = []
    for entry in entries:
        if not entry.name.startswith(name_prefix) or (top and entry.name == TMP_PREFIX):
            continue
        key = f"{rel}{entry.name}"
        if not is_valid_key(key):
            continue
        if entry.is_dir():
            items.append((key + "/", entry))
        elif entry.is_file():
            items.append((key, entry))
    items.sort(key=lambda item: item[0])
    out: list[ObjectInfo | str] = []
    for sort_key, entry in items:
        if sort_key.endswith("/"):
            out.append(sort_key)
            continue
        with contextlib.suppress(*_NOT_FOUND):  # deleted or replaced by a folder meanwhile
            out.append(_info(sort_key, entry.path))
    return out


class LocalStore(BaseStore):
    """Objects as files under ``root``; see the module docstring for the write protocol."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self._root = str(self.root)
        self.url = self.root.as_uri()
        self.tmp_dir = self.root / TMP_PREFIX

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def _run(self, action: str, key: str, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except _NOT_FOUND as exc:
            raise ObjectNotFoundError(f"{action} {key!r} in {self.root}: no such object") from exc
        except OSError as exc:
            raise oserror_to_store_error(exc, f"{action} {key!r} in {self.root}") from exc

    async def put(self, key: str, data: bytes) -> ObjectInfo:
        """Write ``data`` atomically (temp file, fsync, rename, fsync directory)."""
        final = self._path(key)
        return await self._write(key, lambda: _store_chunks(key, final, self.tmp_dir, [data]))

    async def put_file(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        """Copy the local file ``path`` into the store atomically."""
        final = self._path(key)

        def copy() -> ObjectInfo:
            with open(path, "rb") as src:
                return _store_chunks(key, final, self.tmp_dir, read_chunks(src))

        return await self._write(key, copy)

    async def _write(self, key: str, fn: Callable[[], T]) -> T:
        # A missing file on a write is the source or a folder race, never "no such object".
        try:
            return await asyncio.to_thread(fn)
        except OSError as exc:
            raise oserror_to_store_error(exc, f"put {key!r} in {self.root}") from exc

    async def get(self, key: str) -> bytes:
        """Read the whole object."""
        # a str path, not a Path: pathlib interns every part of every path it parses, and
        # the interpreter's table of interned strings, once grown, stays grown (a merge
        # reading a day's 4,000 chunks grew it by 1.9 MB)
        path = os.path.join(self._root, check_key(key))

        def read() -> bytes:
            with open(path, "rb") as f:
                return f.read()

        return await self._run("get", key, read)

    async def get_file(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        """Copy the object to ``path`` atomically (temp file next to ``path``)."""
        source = self._path(key)
        dest = Path(path)

        def copy() -> ObjectInfo:
            with open(source, "rb") as src:
                st = os.fstat(src.fileno())
                out = AtomicFile(dest, dest.parent)
                write_atomic(out, read_chunks(src))
            return ObjectInfo(key, out.size, out.md5.hexdigest(), st.st_mtime_ns)

        return await self._run("get", key, copy)

    async def head(self, key: str) -> ObjectInfo | None:
        """Stat the object; None if it does not exist."""
        path = self._path(key)
        try:
            return await self._run("head", key, lambda: _info(key, path))
        except ObjectNotFoundError:
            return None

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Walk the folders in key order, one worker-thread call per folder; skip ``.tmp``."""
        check_prefix(prefix)
        folder, _, name_prefix = prefix.rpartition("/")
        async for info in self._walk(f"{folder}/" if folder else "", name_prefix, prefix):
            yield info

    async def _walk(self, folder: str, name_prefix: str, prefix: str) -> AsyncIterator[ObjectInfo]:
        items = await self._run(
            "list", prefix, lambda: _scan(self.root / folder, folder, name_prefix, top=not folder)
        )
        for item in items:
            if isinstance(item, str):
                async for info in self._walk(item, "", prefix):
                    yield info
            else:
                yield item

    async def delete(self, key: str) -> None:
        """Remove the file (if any) and prune folders left empty."""
        path = self._path(key)

        def remove() -> None:
            try:
                path.unlink()
            except _NOT_FOUND:
                return
            parent = path.parent
            while parent != self.root:
                try:
                    parent.rmdir()
                except OSError:
                    break  # not empty (or raced with a put): keep it
                parent = parent.parent

        try:
            await asyncio.to_thread(remove)
        except OSError as exc:
            raise oserror_to_store_error(exc, f"delete {key!r} in {self.root}") from exc
