"""`booktape gaps`: the day's gap reports as a table, JSON, and exit 3 for cron alerts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from booktape.cli import main
from booktape.stores import open_store

REPORT: dict[str, Any] = {
    "exchange": "binance",
    "symbol": "BTCUSDT",
    "date": "2026-11-20",
    "events": 1000,
    "sources": {
        "eu.c1": {"events": 900, "first_update_id": 1, "last_update_id": 70000, "gaps": 2},
        "us.c1": {"events": 640, "first_update_id": 1, "last_update_id": 70000, "gaps": 1},
    },
    "filled": {"eu.c1": 880, "us.c1": 120},
    "unrecoverable": [
        {
            "from_update_id": 5001,
            "to_update_id": 5400,
            "from_ts": 1,
            "to_ts": 12_500_000_001,
            "duration_s": 12.5,
            "reanchored_on": {"key": "raw/x.jsonl.zst", "lastUpdateId": 5400},
        }
    ],
    "unusable_before_anchor": 2,
    "corrupt": [{"key": "raw/bad.jsonl.zst", "error": "not zstd"}],
    "audit": {"checked": 48, "matched": 48, "mismatched": 0, "match_pct": 100.0},
    "crossed_books": 0,
    "gaps_per_million": 1000.0,
    "longest_gap_s": 12.5,
}


async def _store(root: Path, *, manifest: bool = True, gaps: bool = True) -> None:
    prefix = "canonical/binance/depth/BTCUSDT/2026-11-20/"
    async with open_store(str(root)) as store:
        report = dict(REPORT, unrecoverable=REPORT["unrecoverable"] if gaps else [])
        await store.put(prefix + "gaps.json", orjson.dumps(report))
        if manifest:
            await store.put(prefix + "_MANIFEST.json", b"{}")


def _gaps(root: Path, *extra: str) -> int:
    return main(["gaps", "--store", str(root), "--date", "2026-11-20", *extra])


async def test_table_shows_canonical_sources_and_gaps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _store(tmp_path)

    code = await asyncio.to_thread(_gaps, tmp_path)

    out = capsys.readouterr().out
    assert code == 0
    assert "binance BTCUSDT 2026-11-20" in out
    assert "unrecoverable gaps 1 (longest 12.5 s, total 12.5 s)" in out
    assert "audit 100.0% of 48" in out
    assert "eu.c1" in out
    assert "recorded  90.0%" in out
    assert "taken        120" in out
    assert "gap: ids 5001..5400" in out
    assert "corrupt: raw/bad.jsonl.zst: not zstd" in out


async def test_json_and_fail_on_gap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    await _store(tmp_path)

    code = await asyncio.to_thread(_gaps, tmp_path, "--json", "--fail-on-gap")

    assert code == 3
    assert orjson.loads(capsys.readouterr().out) == [REPORT]


async def test_no_gap_exits_0_even_with_fail_on_gap(tmp_path: Path) -> None:
    await _store(tmp_path, gaps=False)

    assert await asyncio.to_thread(_gaps, tmp_path, "--fail-on-gap") == 0


async def test_unmerged_day_is_not_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _store(tmp_path, manifest=False)

    code = await asyncio.to_thread(_gaps, tmp_path)

    assert code == 0
    assert "no merged symbol-day found" in capsys.readouterr().out


def test_bad_date_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _gaps(tmp_path, "--symbols", "BTC/USDT") == 2
    assert main(["gaps", "--store", str(tmp_path), "--date", "yesterday"]) == 2
    assert capsys.readouterr().err.startswith("booktape gaps:")
