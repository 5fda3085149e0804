"""booktape.read_levels: rows of several days as one pyarrow Table, local and on S3."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import pyarrow as pa
import pytest

import booktape
from booktape.errors import ConfigError
from booktape.stores import open_store
from tests.merger.levels import replay_rows
from tests.read.conftest import MIDNIGHT, MergedStore
from tests.read.market import Truth
from tests.s3servers import S3Server

SYMBOL = "BTCUSDT"


def _book(table: pa.Table) -> dict[str, dict[Decimal, Decimal]]:
    cols = [table.column(c).to_pylist() for c in ("side", "price", "qty", "is_snapshot")]
    return replay_rows(zip(*cols, strict=True))


def _truth_book(truth: Truth) -> dict[str, dict[Decimal, Decimal]]:
    return {
        "bid": {Decimal(str(p)): Decimal(str(q)) for p, q in truth.bids},
        "ask": {Decimal(str(p)): Decimal(str(q)) for p, q in truth.asks},
    }


def _image_runs(table: pa.Table) -> int:
    """How often is_snapshot rows start (after non-snapshot rows, or at the top)."""
    flags = table.column("is_snapshot").to_pylist()
    return sum(1 for i, f in enumerate(flags) if f and (i == 0 or not flags[i - 1]))


def test_two_days_read_as_one_table_rebuild_the_true_closing_book(midnight: MergedStore) -> None:
    table = booktape.read_levels(str(midnight.root), "binance", SYMBOL, "2024-05-01", "2024-05-03")

    assert table.column_names[:2] == ["local_ts", "exchange_ts"]
    assert table.column("is_snapshot")[0].as_py() is True
    assert _book(table) == _truth_book(midnight.rec.truths[-1])
    ids = set(table.column("last_update_id").to_pylist())
    assert {t.update_id for t in midnight.rec.truths[2:]} <= ids


def test_a_day_read_alone_opens_with_its_image_and_rebuilds_the_truth(
    midnight: MergedStore,
) -> None:
    table = booktape.read_levels(str(midnight.root), "binance", "btcusdt",
                                 "2024-05-02", "2024-05-03")  # fmt: skip

    assert table.column("is_snapshot")[0].as_py() is True
    assert _image_runs(table) == 1
    assert _book(table) == _truth_book(midnight.rec.truths[-1])


def test_a_time_window_keeps_only_its_rows(midnight: MergedStore) -> None:
    start, end = MIDNIGHT - 5_000_000_000, MIDNIGHT + 5_000_000_000
    table = booktape.read_levels(str(midnight.root), "binance", SYMBOL, start, end,
                                 columns=["local_ts", "last_update_id"])  # fmt: skip

    assert table.column_names == ["local_ts", "last_update_id"]
    times = table.column("local_ts").to_pylist()
    assert min(times) >= start
    assert max(times) < end
    expected = {t.update_id for t in midnight.rec.truths if start <= t.local_ts < end}
    assert set(table.column("last_update_id").to_pylist()) == expected


def test_a_gap_shows_as_a_second_image_in_the_rows(gapped: MergedStore) -> None:
    table = booktape.read_levels(str(gapped.root), "binance", SYMBOL, "2024-06-01", "2024-06-02")
    (gap,) = gapped.gaps(gapped.dates[0])["unrecoverable"]  # type: ignore[misc]

    assert _image_runs(table) == 2
    images = table.filter(table.column("is_snapshot"))
    assert set(images.column("last_update_id").to_pylist()) >= {gap["to_update_id"]}
    assert _book(table) == _truth_book(gapped.rec.truths[-1])


async def test_works_inside_a_running_event_loop_like_a_notebook(midnight: MergedStore) -> None:
    table = booktape.read_levels(str(midnight.root), "binance", SYMBOL, "2024-05-02", "2024-05-03")
    states = list(booktape.replay(str(midnight.root), "binance", SYMBOL, MIDNIGHT,
                                  MIDNIGHT + 1_000_000_000, depth=1))  # fmt: skip

    assert table.num_rows > 0
    assert [s.update_id for s in states] == [
        t.update_id for t in midnight.rec.truths if MIDNIGHT <= t.local_ts < MIDNIGHT + 10**9
    ]


def test_bad_arguments_raise_one_clear_error(midnight: MergedStore) -> None:
    root = str(midnight.root)
    with pytest.raises(ConfigError, match="end must be after start"):
        booktape.read_levels(root, "binance", SYMBOL, "2024-05-02", "2024-05-01")
    with pytest.raises(ConfigError, match="not a time"):
        booktape.read_levels(root, "binance", SYMBOL, "yesterday", "2024-05-01")
    with pytest.raises(ConfigError, match="exchange"):
        booktape.read_levels(root, "kraken", SYMBOL, "2024-05-01", "2024-05-02")
    with pytest.raises(ConfigError, match="depth"):
        booktape.replay(root, "binance", SYMBOL, "2024-05-01", "2024-05-02", depth=0)


def test_import_booktape_stays_cheap() -> None:
    code = "import sys, booktape; assert 'pyarrow' not in sys.modules; print(booktape.replay)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)  # fmt: skip
    assert "function replay" in out.stdout


@pytest.mark.s3
def test_the_s3_store_reads_the_same_days(midnight: MergedStore, rclone: S3Server) -> None:
    url = f"s3://{rclone.bucket}/read"

    async def upload() -> None:
        async with open_store(url, s3_endpoint_url=rclone.endpoint) as store:
            for path in sorted((midnight.root / "canonical").rglob("*")):
                if path.is_file():
                    await store.put(str(path.relative_to(midnight.root)), path.read_bytes())

    booktape.read.run_sync(upload)
    table = booktape.read_levels(url, "binance", SYMBOL, "2024-05-01", "2024-05-03",
                                 s3_endpoint_url=rclone.endpoint)  # fmt: skip
    states = list(booktape.replay(url, "binance", SYMBOL, "2024-05-01", "2024-05-03", depth=3,
                                  s3_endpoint_url=rclone.endpoint))  # fmt: skip

    assert _book(table) == _truth_book(midnight.rec.truths[-1])
    assert [(s.update_id, s.bids, s.asks) for s in states] == [
        (t.update_id, t.bids[:3], t.asks[:3]) for t in midnight.rec.truths[1:]
    ]


def test_levels_schema_matches_the_writer() -> None:
    from booktape.read import LEVELS_SCHEMA  # noqa: PLC0415
    from merger.writer import LEVELS_SCHEMA as WRITTEN  # noqa: PLC0415

    assert LEVELS_SCHEMA.equals(WRITTEN)
