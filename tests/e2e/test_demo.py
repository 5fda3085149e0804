"""`make demo` end to end: two collectors, one broken then killed, merged back whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.demo import demo


@pytest.mark.slow
async def test_demo_rebuilds_the_true_book_from_two_damaged_regions(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code = await demo(tmp_path, seconds=12.0)

    out = capfd.readouterr().out
    assert code == 0, out
    assert out.count("equals the exchange's true book, top 200 levels a side") == 2
    assert out.count("unrecoverable gaps 0") == 2
    assert "exit codes {'eu': 0, 'us': 0}" in out
    assert any((tmp_path / "demo-store" / "raw" / "binance" / "depth").rglob("*.jsonl.zst"))
    assert len(list((tmp_path / "demo-store" / "canonical").rglob("_MANIFEST.json"))) >= 2
