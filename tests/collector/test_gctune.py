"""The collector process's garbage-collector settings: queued items are never scanned."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from booktape.gctune import YOUNG_THRESHOLD
from collector.gctune import tune_gc
from collector.types import Item
from tests.collector.conftest import T0


@pytest.fixture
def gc_restored() -> Iterator[None]:
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def collections_while_queueing(count: int) -> int:
    """Collections that run while ``count`` items are built and held (as in the record
    queue between two writes), then dropped."""
    runs = 0

    def on_gc(phase: str, info: dict[str, int]) -> None:
        nonlocal runs
        runs += phase == "start"

    gc.callbacks.append(on_gc)
    try:
        queued = [Item("BTCUSDT", b"{}\n", T0 + n, n, n) for n in range(count)]
        del queued
    finally:
        gc.callbacks.remove(on_gc)
    return runs


@pytest.mark.usefixtures("gc_restored")
def test_tuned_gc_leaves_queued_items_alone_and_freezes_start_up() -> None:
    gc.set_threshold(700, 10, 10)  # CPython's defaults
    assert collections_while_queueing(20_000) >= 20  # one every 700 new items

    tune_gc()

    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    assert gc.get_freeze_count() > 0  # what start-up built is out of every collection
    assert collections_while_queueing(20_000) == 0
