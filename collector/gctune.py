"""Garbage-collector settings for the collector process (``booktape collect``).

The hot path makes one small GC-tracked object per frame (a :class:`collector.types.Item`),
and each lives until the spool writer routes it (up to ``write_interval_s``). With
CPython's default thresholds (700, 10, 10) a young collection runs every 700 net
allocations, scans the items still queued and promotes them, so the older generations
keep filling and being scanned too: ~0.014 of a core at 15,000 frames/s, measured with
``gc.callbacks``. :func:`tune_gc`, called once after start-up, collects what start-up left
and then applies :func:`booktape.gctune.freeze_long_lived` for good: what start-up built
(modules, settings, the parsers' tables) is never scanned again, and routed items are
freed by reference counting long before a collection (every
:data:`~booktape.gctune.YOUNG_THRESHOLD` net allocations) would scan them.
"""

from __future__ import annotations

import gc

from booktape.gctune import freeze_long_lived


def tune_gc() -> None:
    """Collect, then freeze what exists and raise the young-generation threshold
    (process-wide)."""
    gc.collect()
    freeze_long_lived()
