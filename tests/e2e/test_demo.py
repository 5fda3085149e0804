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
    assert out.count("unrecoverable gaps 0") == 5  # two symbols, a product, two currencies
    assert "exit codes {'eu': 0, 'us': 0, 'us-coinbase': 0}" in out
    assert out.count("missing 0") == 3  # the Coinbase grid kept by us alone
    report = (tmp_path / "demo-report.html").read_text()
    assert report.count('<svg class="timeline"') == 2
    assert (tmp_path / "demo-BTC-USD.h5").stat().st_size > 0
    assert (tmp_path / "demo-BTCUSDT.csv.gz").stat().st_size > 0
    assert any((tmp_path / "demo-store" / "raw" / "binance" / "depth").rglob("*.jsonl.zst"))
    assert len(list((tmp_path / "demo-store" / "canonical").rglob("_MANIFEST.json"))) >= 2
