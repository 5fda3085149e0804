"""Garbage-collector settings for the collector process (``booktape collect``).

The hot path makes one small GC-tracked object per frame (a :class:`collector.types.Item`),
and each lives until the spool writer routes it (up to ``write_interval_s``). With
CPython's default thresholds (700, 10, 10) a young collection runs every 700 net
allocations, scans the items still queued and promotes them, so the older generations
keep filling and being scanned too: ~0.014 of a core at 15,000 frames/s, measured with
``gc.callbacks``. :func:`tune_gc`, called once after start-up:

- ``gc.collect()`` then ``gc.freeze()``: what start-up built (modules, settings, the
  parsers' tables) moves to the permanent generation and is never scanned again;
- a young-generation threshold of :data:`GEN0_THRESHOLD` net allocations: routed items are
  freed by reference counting long before a collection would scan them.

Reference counting still frees everything that is not in a cycle at once; cyclic garbage
(rare here: asyncio exceptions, closed connections) waits at most that many allocations.
"""

from __future__ import annotations

import gc
from typing import Final

GEN0_THRESHOLD: Final = 50_000


def tune_gc() -> None:
    """Freeze what exists now and raise the young-generation threshold (process-wide)."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
