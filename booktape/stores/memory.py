"""MemoryStore: the Store Protocol over a dict, with fault injection for tests.

Stores opened with ``open_store("memory://name")`` share their objects with every other
store opened under the same name in the process (call :func:`clear_shared` between tests);
``MemoryStore()`` gets a private dict. Faults: set ``down = True`` to make every operation
raise StoreUnavailableError, or ``fail_next(n, exc, ops=...)`` to fail the next ``n``
matching operations. ``calls`` records ``(operation, key)`` for every call.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from booktape.errors import ObjectNotFoundError, StoreUnavailableError
from booktape.stores.base import (
    AtomicFile,
    BaseStore,
    ObjectInfo,
    check_key,
    check_prefix,
    md5_hex,
    oserror_to_store_error,
    write_atomic,
)

OPERATIONS = frozenset({"put", "get", "head", "list", "delete"})


@dataclass(frozen=True, slots=True)
class _Object:
    data: bytes
    info: ObjectInfo


_SHARED: dict[str, dict[str, _Object]] = {}


def clear_shared() -> None:
    """Forget every shared ``memory://`` store's objects."""
    _SHARED.clear()


class MemoryStore(BaseStore):
    """An in-memory store; see the module docstring for sharing and faults."""

    def __init__(
        self,
        name: str = "",
        *,
        shared: bool = False,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.name = name
        self.url = f"memory://{name}"
        self._objects: dict[str, _Object] = _SHARED.setdefault(name, {}) if shared else {}
        self._clock_ns = clock_ns
        self.down = False
        self.calls: list[tuple[str, str]] = []
        self._failures: list[tuple[frozenset[str], BaseException | None]] = []

    def fail_next(
        self, n: int = 1, exc: BaseException | None = None, *, ops: Iterable[str] | None = None
    ) -> None:
        """Make the next ``n`` operations in ``ops`` (default: all) raise ``exc``.

        ``exc`` defaults to a fresh StoreUnavailableError each time. Operations are
        ``put`` (also put_file), ``get`` (also get_file), ``head``, ``list``, ``delete``.
        """
        selected = frozenset(ops) if ops is not None else OPERATIONS
        if unknown := selected - OPERATIONS:
            raise ValueError(f"unknown store operations: {sorted(unknown)}")
        self._failures.extend((selected, exc) for _ in range(n))

    def _enter(self, op: str, key: str) -> None:
        self.calls.append((op, key))
        if self.down:
            raise StoreUnavailableError(f"{op} {key!r}: memory store {self.name!r} is down")
        for pos, (ops, exc) in enumerate(self._failures):
            if op in ops:
                del self._failures[pos]
                raise exc or StoreUnavailableError(f"{op} {key!r}: injected failure")

    def _store(self, key: str, data: bytes) -> ObjectInfo:
        info = ObjectInfo(key, len(data), md5_hex(data), self._clock_ns())
        self._objects[key] = _Object(bytes(data), info)
        return info

    def _load(self, key: str) -> _Object:
        try:
            return self._objects[key]
        except KeyError:
            raise ObjectNotFoundError(f"{key!r} not found in {self.url}") from None

    async def put(self, key: str, data: bytes) -> ObjectInfo:
        """Store a copy of ``data``."""
        check_key(key)
        self._enter("put", key)
        return self._store(key, data)

    async def put_file(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        """Store the content of a local file."""
        check_key(key)
        self._enter("put", key)
        try:
            data = await asyncio.to_thread(Path(path).read_bytes)
        except OSError as exc:
            raise oserror_to_store_error(exc, f"put {key!r} from {path}") from exc
        return self._store(key, data)

    async def get(self, key: str) -> bytes:
        """Return the stored bytes."""
        check_key(key)
        self._enter("get", key)
        return self._load(key).data

    async def get_file(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        """Write the object to a local file atomically."""
        check_key(key)
        self._enter("get", key)
        obj = self._load(key)
        dest = Path(path)

        try:
            await asyncio.to_thread(lambda: write_atomic(AtomicFile(dest, dest.parent), [obj.data]))
        except OSError as exc:
            raise oserror_to_store_error(exc, f"get {key!r} to {dest}") from exc
        return obj.info

    async def head(self, key: str) -> ObjectInfo | None:
        """Return the object's info or None."""
        check_key(key)
        self._enter("head", key)
        obj = self._objects.get(key)
        return obj.info if obj else None

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Yield a sorted snapshot of the keys under ``prefix``."""
        check_prefix(prefix)
        self._enter("list", prefix)
        for key in sorted(k for k in self._objects if k.startswith(prefix)):
            obj = self._objects.get(key)
            if obj is not None:
                yield obj.info

    async def delete(self, key: str) -> None:
        """Remove the object if present."""
        check_key(key)
        self._enter("delete", key)
        self._objects.pop(key, None)
