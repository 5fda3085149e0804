"""Keep a merge's resident memory at what it holds, however long the day.

What a merge holds is bounded by design: the book, the feed's few chunks per source and one
``levels.parquet`` batch. Its resident size was not: memory freed by one batch sat in the
allocators, fragmented, and a long day kept more of it than a short one (peak RSS +8 % for
24 h over 1 h). Two things bound it:

- the writer's Arrow work (the batch's columns) allocates from :data:`ARROW_POOL`, the
  system allocator, not Arrow's default mimalloc pool, which keeps freed pages for reuse
  (~20 MiB more at each flush); the Parquet column writers, which pyarrow gives no pool,
  use Arrow's default pool, which the ``merger`` package sets to the system allocator too
  (``ARROW_DEFAULT_MEMORY_POOL``, see ``merger/__init__.py``);
- :func:`release_free_memory`, called after each batch is written, hands what the C
  allocator holds free back to the operating system (glibc ``malloc_trim``; elsewhere it
  does nothing).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from typing import Final

import pyarrow as pa

__all__ = ["ARROW_POOL", "release_free_memory"]

ARROW_POOL: Final = pa.system_memory_pool()


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM: Final = _malloc_trim()


def release_free_memory() -> None:
    """Return the free memory of the C allocator (every arena) to the operating system.

    Costs 2-4 ms for a merge's heap; called once per written batch (~400 a BTCUSDT day).
    """
    if _TRIM is not None:
        _TRIM(0)
