"""`booktape report`: the page rendered by a real browser (headless Chromium).

Ground truth is the merged day's gaps.json: the rendered DOM has one timeline per symbol
and one gap mark per unrecoverable gap it lists, and the screenshot shows the colours.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest

from booktape.cli import main
from booktape.keys import canonical_key
from booktape.stores import LocalStore
from merger.day import merge_day
from merger.report import COVER, GAP, render
from tests.merger.test_day import DATE, make_market, record
from tests.png import colour_counts


def chromium() -> str:
    path = os.environ.get("BOOKTAPE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail("headless Chromium is needed: `make test` installs Debian's chromium")
    return path


def browse(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    command = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--hide-scrollbars", f"--user-data-dir={tmp / 'profile'}",
        *args, page.as_uri(),
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, timeout=90, check=True)


def rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


@pytest.fixture(scope="module")
def merged_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report") / "store"
    store = LocalStore(str(root))

    async def build() -> None:
        holey = make_market("BTCUSDT", n=140)
        # Both regions lose the same two stretches: two unrecoverable gaps, re-anchored.
        await record(store, holey, "eu", skip={*range(40, 50), *range(90, 100)},
                     snaps=(2, 60, 110))  # fmt: skip
        await record(store, holey, "us", skip={*range(38, 52), *range(88, 101)}, snaps=(2,))
        clean = make_market("ETHUSDT", n=80, seed=3)
        await record(store, clean, "eu", skip=set(range(20, 30)), snaps=(2, 50))
        await record(store, clean, "us", snaps=(2,))
        await merge_day(store, "binance", DATE)

    asyncio.run(build())
    return root


def gaps_of(store: Path, symbol: str) -> dict[str, object]:
    key = canonical_key("binance", "depth", symbol, DATE, "gaps.json")
    doc: dict[str, object] = orjson.loads((store / key).read_bytes())
    return doc


def test_rendered_page_has_a_timeline_per_symbol_and_a_mark_per_gap(
    merged_store: Path, tmp_path: Path
) -> None:
    page = tmp_path / "report.html"
    assert main(["report", "--store", str(merged_store), "--date", str(DATE), "-o", str(page)]) == 0

    dom = browse(page, tmp_path, "--dump-dom").stdout.decode()

    timelines = re.findall(r'<svg class="timeline" data-symbol="(\w+)"', dom)
    assert timelines == ["BTCUSDT", "ETHUSDT"]
    for symbol in timelines:
        section = dom.split(f'<section class="symbol-report" data-symbol="{symbol}">')[1]
        section = section.split("</section>")[0]
        listed = gaps_of(merged_store, symbol)["unrecoverable"]
        assert isinstance(listed, list)
        assert len(re.findall(r'<rect class="gap"', section)) == len(listed)
        assert len(re.findall(r'<path class="reanchor"', section)) == len(listed)
        audit = gaps_of(merged_store, symbol)["audit"]
        assert isinstance(audit, dict)
        assert len(re.findall(r'<line class="audit ok"', section)) == audit["matched"]
    assert len(gaps_of(merged_store, "BTCUSDT")["unrecoverable"]) == 2  # type: ignore[arg-type]


def test_screenshot_shows_coverage_green_and_gaps_red(merged_store: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    main(["report", "--store", str(merged_store), "--date", str(DATE), "-o", str(page)])
    shot = tmp_path / "shot.png"

    browse(page, tmp_path, f"--screenshot={shot}", "--window-size=1200,800")

    counts = colour_counts(shot.read_bytes())
    assert counts[rgb(COVER)] > 2_000  # the lanes of four sources and two canonical streams
    assert counts[rgb(GAP)] > 100  # two gaps of ten ids each, and the sources' own gaps


def test_a_day_without_merged_symbols_says_so(tmp_path: Path) -> None:
    page = render([], exchange="binance", date="2024-05-01")

    assert "No merged symbol-day" in page
    assert main(["report", "--store", str(tmp_path), "--date", "2024-05-01",
                 "-o", str(tmp_path / "r.html")]) == 0  # fmt: skip
    assert main(["report", "--store", str(tmp_path), "--date", "2024-13-01", "-o", "x"]) == 2
