"""Garbage-collector settings for processes that churn through many short-lived objects.

Both the collector (an item per frame, held until the spool writer routes it) and the
merger (events queued between reading and stitching) allocate containers that live a
little while and then die by reference counting. CPython's defaults (700, 10, 10) collect
the youngest generation every 700 net allocations, promote those items and so keep the
older generations filling and being walked too, together with every long-lived object of
the process (modules, classes, tables), to find nothing. :func:`freeze_long_lived`:

- ``gc.freeze()``: what exists now moves to the permanent generation, left out of every
  later collection;
- a young-generation threshold of :data:`YOUNG_THRESHOLD` net allocations: every
  collection still runs, only less often; cyclic garbage waits at most that many
  allocations.

The collector applies it for good after start-up (:func:`collector.gctune.tune_gc`), the
merger for each symbol's merge (:func:`long_lived_frozen`).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import Final

__all__ = ["YOUNG_THRESHOLD", "freeze_long_lived", "long_lived_frozen"]

YOUNG_THRESHOLD: Final = 50_000  # net allocations between young-generation collections


def freeze_long_lived() -> tuple[int, int, int]:
    """Freeze what exists now and raise the young-generation threshold (process-wide);
    return the thresholds it replaced."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *thresholds[1:])
    return thresholds


@contextlib.contextmanager
def long_lived_frozen() -> Iterator[None]:
    """:func:`freeze_long_lived` inside the block; thresholds and freeze undone after."""
    thresholds = freeze_long_lived()
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
