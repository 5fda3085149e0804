"""`booktape ls` lists raw objects with their source, id range and start time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from booktape.cli import main
from booktape.keys import RawKey
from booktape.stores import open_store


async def test_ls_shows_sources_and_id_ranges(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = RawKey.from_recv(
        "binance",
        "depth",
        "BTCUSDT",
        "eu",
        "c1",
        1_723_161_254_206_652_067,
        50093239189,
        50093240000,
    )
    async with open_store(str(tmp_path)) as store:
        await store.put(key.key, b"x" * 10)
        await store.put("raw/notes.txt", b"hi")

    code = await asyncio.to_thread(main, ["ls", "--store", str(tmp_path)])

    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0] == (
        f"{key.key}\t10\teu.c1\t50093239189..50093240000\t2024-08-08T23:54:14.206+00:00"
    )
    assert lines[1] == "raw/notes.txt\t2\t(not a raw object key)"
