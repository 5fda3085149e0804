"""The merger's memory: the writer's Arrow work kept off Arrow's default pool, free C
memory handed back to the OS, and a merge process's Arrow default pool the system one.

Ground truth: the Arrow pools' own counters and the process's resident size read from /proc.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from merger import memory, writer
from merger.model import BookImage, StreamEvent
from merger.writer import LEVELS_FILE, DayWriter
from tests.merger.test_writer import event

_KEEP_ALIVE: list[pa.MemoryPool] = []


def test_writer_allocates_nothing_from_arrows_default_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # what pyarrow allocates from the default pool it exposes on the writer's behalf; the
    # Parquet column writers take Arrow's C++ default pool, which this proxy does not see:
    # that one is the subject of test_a_merge_process_runs_arrow_on_the_system_allocator
    monkeypatch.setattr(writer, "BATCH_ROWS", 3)  # several row groups, each flushed
    watched = pa.proxy_memory_pool(pa.default_memory_pool())
    _KEEP_ALIVE.append(watched)  # a buffer from it may outlive the test: never freed
    previous = pa.default_memory_pool()
    pa.set_memory_pool(watched)
    try:
        out = DayWriter(tmp_path, exchange="binance", channel="depth", symbol="BTCUSDT",
                        date="2024-08-09", keep_book=False)  # fmt: skip
        items: list[BookImage | StreamEvent] = [
            BookImage(1, 9, (("5", "1"), ("4", "2")), (("6", "1"),), "us.c1", "start")
        ]
        items += [event(10 + 2 * n, 11 + 2 * n, [["5", str(n)]], [["6.5", "1"]]) for n in range(9)]
        out.add_all(items)
        out.close()
    finally:
        pa.set_memory_pool(previous)
    table = pq.read_table(tmp_path / LEVELS_FILE)
    assert table.num_rows == 3 + 9 * 2
    assert pq.ParquetFile(tmp_path / LEVELS_FILE).num_row_groups == 6  # 3, 4, 4, 4, 4, 2
    assert watched.max_memory() == 0


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_release_hands_freed_c_memory_back() -> None:
    if platform.libc_ver()[0] != "glibc":  # no malloc_trim: releasing does nothing
        assert memory._TRIM is None
        return
    assert memory._TRIM is not None
    blocks = [bytes(4000) + bytes([n % 256]) for n in range(40_000)]  # ~160 MiB via malloc
    keep = blocks[-1]
    del blocks  # all free, but below the last one: glibc cannot shrink the heap by itself
    before = _rss_mib()
    memory.release_free_memory()
    after = _rss_mib()
    assert len(keep) == 4001
    assert before - after > 100, (before, after)


def _default_pool_in_child(env: dict[str, str]) -> str:
    code = "import merger, pyarrow as pa; print(pa.default_memory_pool().backend_name)"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_a_merge_process_runs_arrow_on_the_system_allocator() -> None:
    # the Parquet column writers allocate from Arrow's default pool (pyarrow gives them
    # no other): importing the merger first makes that the system allocator
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    assert _default_pool_in_child(env) == "system"


def test_a_pool_the_user_chose_is_kept() -> None:
    env = {**os.environ, "ARROW_DEFAULT_MEMORY_POOL": "jemalloc"}
    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:  # a pyarrow built without it: Arrow falls back
        env["ARROW_DEFAULT_MEMORY_POOL"] = "mimalloc"
    assert _default_pool_in_child(env) == env["ARROW_DEFAULT_MEMORY_POOL"]
