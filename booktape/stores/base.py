"""The ``Store`` Protocol every object store implements, and what the backends share.

A store maps keys to immutable byte objects. Keys are relative POSIX paths (see
:func:`check_key`); every backend validates them the same way, so a key accepted by one
store is accepted by all. Writes are atomic: a reader sees the whole old object, the whole
new one, or nothing. Errors are :class:`~booktape.errors.StoreError` subclasses.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol, Self, runtime_checkable

from booktape.errors import (
    InvalidNameError,
    StoreAccessError,
    StoreError,
)

MAX_KEY_BYTES = 1024
TMP_PREFIX = ".tmp"  # reserved first segment: the local store's temp folder
_SEGMENT = re.compile(r"[A-Za-z0-9_.=-]+")
COPY_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a store knows about one stored object.

    ``etag`` is the store's content tag without quotes: the hex MD5 of the content for a
    single PUT (and always for the local and memory stores); ``<hex>-<parts>`` for an S3
    multipart upload. Some S3 servers (rclone) report a different ETag in listings than
    the one returned by the upload, so compare ETags obtained the same way.
    ``last_modified_ns`` is None where the backend does not say (an S3 PUT response).
    """

    key: str
    size: int
    etag: str
    last_modified_ns: int | None


@runtime_checkable
class Store(Protocol):
    """An object store: local directory, S3 bucket prefix, or memory.

    All methods validate their key with :func:`check_key` and raise
    :class:`~booktape.errors.InvalidNameError` before any I/O. A store is an async context
    manager; ``close()`` releases its connections and is safe to call twice.
    """

    @property
    def url(self) -> str:
        """The URL this store was opened with (never contains credentials)."""
        ...

    async def put(self, key: str, data: bytes) -> ObjectInfo:
        """Store ``data`` at ``key`` atomically, replacing any previous object."""
        ...

    async def put_file(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        """Store the content of the local file ``path`` at ``key`` atomically."""
        ...

    async def get(self, key: str) -> bytes:
        """Return the object's bytes; ObjectNotFoundError if there is none."""
        ...

    async def get_file(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        """Download the object to ``path`` atomically (parents are created)."""
        ...

    async def head(self, key: str) -> ObjectInfo | None:
        """Return the object's info, or None if there is no object at ``key``."""
        ...

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Yield every object whose key starts with ``prefix``, sorted by key.

        ``prefix`` is a plain string prefix (``"raw/binance/"`` or ``"raw/bin"``).
        Objects whose names are not valid keys (e.g. written by another tool) are skipped.
        """
        ...

    async def delete(self, key: str) -> None:
        """Delete the object; deleting a missing key is not an error."""
        ...

    async def close(self) -> None:
        """Release connections and other resources."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class BaseStore:
    """Context-manager plumbing shared by the backends."""

    url: str

    async def close(self) -> None:
        """Release resources (nothing by default)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid store key, else raise InvalidNameError.

    A key is a relative POSIX path of segments matching ``[A-Za-z0-9_.=-]+``: no empty,
    ``.`` or ``..`` segment, no leading or trailing ``/``, ASCII only, at most 1024 bytes,
    and not under the reserved ``.tmp/`` folder.
    """
    if not isinstance(key, str):
        raise InvalidNameError(f"store key must be a string, not {type(key).__name__}")
    if not key:
        raise InvalidNameError("store key must not be empty")
    if not key.isascii():
        raise InvalidNameError(f"invalid store key {key!r}: only ASCII characters are allowed")
    if any(ch.isspace() for ch in key):
        raise InvalidNameError(f"invalid store key {key!r}: whitespace is not allowed")
    if "\\" in key:
        raise InvalidNameError(f"invalid store key {key!r}: backslashes are not allowed")
    if key.startswith("/"):
        raise InvalidNameError(f"invalid store key {key!r}: keys are relative (no leading '/')")
    if len(key) > MAX_KEY_BYTES:
        raise InvalidNameError(
            f"invalid store key {key[:40]!r}...: {len(key)} bytes, at most {MAX_KEY_BYTES}"
        )
    segments = key.split("/")
    for segment in segments:
        if not segment:
            raise InvalidNameError(f"invalid store key {key!r}: empty path segment")
        if segment in (".", ".."):
            raise InvalidNameError(
                f"invalid store key {key!r}: {segment!r} segments are not allowed"
            )
        if not _SEGMENT.fullmatch(segment):
            raise InvalidNameError(
                f"invalid store key {key!r}: segment {segment!r} has characters outside "
                "[A-Za-z0-9_.=-]"
            )
    if segments[0] == TMP_PREFIX:
        raise InvalidNameError(f"invalid store key {key!r}: '{TMP_PREFIX}/' is reserved")
    return key


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is empty or a valid key optionally followed by ``/``."""
    if prefix == "":
        return prefix
    check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def is_valid_key(key: str) -> bool:
    """True if :func:`check_key` accepts ``key``."""
    try:
        check_key(key)
    except InvalidNameError:
        return False
    return True


def md5_hex(data: bytes) -> str:
    """Hex MD5 of ``data`` (the S3 single-PUT ETag)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def oserror_to_store_error(exc: OSError, action: str) -> StoreError:
    """Translate a filesystem error into the most specific StoreError.

    ``action`` says what was being done, e.g. ``"put 'raw/x' in /data"``.
    """
    code = exc.errno
    reason = exc.strerror or str(exc)
    if isinstance(exc, PermissionError) or code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoreAccessError(f"{action}: permission denied ({reason})")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return StoreError(f"{action}: no space left on device ({reason})")
    if code in (errno.ENOTDIR, errno.EISDIR, errno.EEXIST):
        return StoreError(f"{action}: a key cannot be both an object and a folder ({reason})")
    return StoreError(f"{action}: {reason}")


def fsync_dir(path: Path) -> None:
    """fsync a directory so that a rename or create inside it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """Create ``path`` and missing parents, fsyncing each parent that gained an entry."""
    missing: list[Path] = []
    cur = path
    while not cur.is_dir():
        missing.append(cur)
        cur = cur.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            if not directory.is_dir():
                raise
        fsync_dir(directory.parent)


class AtomicFile:
    """A local file written under a temp name in ``tmp_dir`` and renamed into place.

    Use from worker threads: ``write()`` any number of times, then ``commit()`` (fsync,
    rename, fsync the directory) or ``discard()``. The MD5 of the content is computed
    while writing.
    """

    def __init__(self, final: Path, tmp_dir: Path) -> None:
        self.final = final
        self.tmp_dir = tmp_dir
        self.tmp = tmp_dir / f".{final.name[:100]}.{secrets.token_hex(6)}.part"
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0
        make_dirs(tmp_dir)
        self._fd: int | None = os.open(
            self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666
        )

    def write(self, data: bytes) -> None:
        """Append ``data`` to the temp file."""
        assert self._fd is not None, "AtomicFile already finished"
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.md5.update(data)
        self.size += len(data)

    def commit(self) -> os.stat_result:
        """Make the content durable and move it to its final name; return its stat."""
        assert self._fd is not None, "AtomicFile already finished"
        try:
            os.fsync(self._fd)
            st = os.fstat(self._fd)
            self.before_rename(self._fd, st)
        finally:
            os.close(self._fd)
            self._fd = None
        try:
            for _ in range(3):  # a concurrent delete may prune the parent folder
                make_dirs(self.final.parent)
                try:
                    os.replace(self.tmp, self.final)
                    break
                except FileNotFoundError:
                    if not self.tmp.exists():
                        raise
            else:
                raise StoreError(f"cannot create the folder of {self.final}")
            fsync_dir(self.final.parent)
        except BaseException:
            self.discard()
            raise
        return st

    def before_rename(self, fd: int, st: os.stat_result) -> None:
        """Hook run on the complete, fsynced temp file (subclasses add metadata)."""

    def discard(self) -> None:
        """Remove the temp file (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


def write_atomic(out: AtomicFile, chunks: Iterable[bytes]) -> os.stat_result:
    """Write ``chunks`` to ``out`` and commit it; discard the temp file on any failure."""
    try:
        for chunk in chunks:
            out.write(chunk)
        return out.commit()
    except BaseException:
        out.discard()
        raise


def read_chunks(f: BinaryIO) -> Iterator[bytes]:
    """The content of an open file in COPY_CHUNK pieces."""
    while chunk := f.read(COPY_CHUNK):
        yield chunk
