"""Merged canonical days built from simulated recordings with known truth (module-scoped)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from booktape.keys import canonical_key
from booktape.stores import LocalStore
from tests.read.market import Recording, record_and_merge, simulate
from tests.s3servers import S3Server, rclone_argv, sandbox_env, start_server, stop_server

MIDNIGHT = 1_714_608_000_000_000_000  # 2024-05-02T00:00:00Z
DAY1, DAY2 = dt.date(2024, 5, 1), dt.date(2024, 5, 2)
GAP_START = 1_717_236_000_000_000_000  # 2024-06-01T10:00:00Z
GAP_DAY = dt.date(2024, 6, 1)
GAP_EVENTS = range(100, 130)  # nobody recorded these
REANCHOR_AFTER = 160  # the snapshot the merger re-anchors on


@dataclass
class MergedStore:
    root: Path
    rec: Recording
    dates: list[dt.date]

    def gaps(self, date: dt.date) -> dict[str, object]:
        key = canonical_key("binance", "depth", self.rec.symbol, date, "gaps.json")
        data: dict[str, object] = orjson.loads((self.root / key).read_bytes())
        return data


def _merged(root: Path, rec: Recording) -> MergedStore:
    dates = asyncio.run(record_and_merge(LocalStore(root), rec))
    return MergedStore(root, rec, dates)


@pytest.fixture(scope="module")
def midnight(tmp_path_factory: pytest.TempPathFactory) -> MergedStore:
    """One minute of market from 23:59:30, merged as two days (the second continues)."""
    rec = simulate(MIDNIGHT - 30_000_000_000, 60.0)
    return _merged(tmp_path_factory.mktemp("midnight"), rec)


@pytest.fixture(scope="module")
def gapped(tmp_path_factory: pytest.TempPathFactory) -> MergedStore:
    """30 s of market with 30 events nobody recorded and a later snapshot to re-anchor on."""
    rec = simulate(GAP_START, 30.0, seed=11, skip=GAP_EVENTS,
                   snapshots_after=(1, REANCHOR_AFTER))  # fmt: skip
    return _merged(tmp_path_factory.mktemp("gapped"), rec)


@pytest.fixture(scope="module")
def rclone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """``rclone serve s3`` on loopback with test credentials (nothing reaches AWS)."""
    base = tmp_path_factory.mktemp("rclone")
    with pytest.MonkeyPatch.context() as mp:
        sandbox_env(mp, base / "absent")
        server = start_server("rclone", rclone_argv(base), base / "rclone.log")
        try:
            yield server
        finally:
            stop_server(server.process)
