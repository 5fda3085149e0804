"""``booktape derive snapshots``: the simulator's true book at every grid time."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import booktape
from booktape.cli import main
from booktape.keys import canonical_key
from booktape.read import DayReadError
from merger.derive import level_columns, parse_interval
from tests.read.conftest import DAY1, DAY2, MIDNIGHT, MergedStore
from tests.read.market import MS

S = 1_000_000_000


def _derive(store: MergedStore, date: str, *extra: str) -> int:
    return main(["derive", "snapshots", "--store", str(store.root), "--exchange", "binance",
                 "--symbol", "BTCUSDT", "--date", date, *extra])  # fmt: skip


def _check_against_truth(store: MergedStore, path: Path, depth: int, interval: int) -> int:
    table = pq.read_table(path)
    rows = table.to_pylist()
    assert table.column_names == ["exchange", "symbol", "timestamp", "local_timestamp",
                                  "update_id", *level_columns(depth)]  # fmt: skip
    grid = [r["timestamp"] * 1000 for r in rows]
    assert grid == list(range(grid[0], grid[-1] + 1, interval))
    assert grid[0] % interval == 0
    for row, g in zip(rows, grid, strict=True):
        truth = store.rec.truth_at(g)
        assert truth is not None
        assert row["update_id"] == truth.update_id
        assert truth.local_ts // 1000 <= row["local_timestamp"] <= row["timestamp"]
        for side, levels in (("bids", truth.bids), ("asks", truth.asks)):
            for i in range(depth):
                want = levels[i] if i < len(levels) else (None, None)
                assert (row[f"{side}[{i}].price"], row[f"{side}[{i}].amount"]) == want
    return len(rows)


def test_snapshots_on_a_1s_grid_are_the_true_book_of_that_instant(midnight: MergedStore) -> None:
    assert _derive(midnight, DAY2.isoformat(), "--depth", "25", "--interval", "1s") == 0
    path = midnight.root / canonical_key("binance", "depth", "BTCUSDT", DAY2, "snapshots.parquet")

    rows = _check_against_truth(midnight, path, 25, S)
    # day 2 continues day 1's book: the grid starts at midnight and ends at its last event
    last_event = midnight.rec.truths[-1].local_ts
    first = pq.read_table(path).column("timestamp")[0].as_py() * 1000
    assert first == MIDNIGHT
    assert rows == (last_event - MIDNIGHT) // S + 1
    meta = pq.read_schema(path).metadata
    assert meta[b"booktape.depth"] == b"25"
    levels = path.with_name("levels.parquet").read_bytes()
    assert meta[b"booktape.source_sha256"].decode() == hashlib.sha256(levels).hexdigest()


def test_deep_and_fine_grids_leave_missing_levels_empty(
    midnight: MergedStore, tmp_path: Path
) -> None:
    out = tmp_path / "day1.parquet"
    assert _derive(midnight, DAY1.isoformat(), "--depth", "70", "--interval", "250ms",
                   "-o", str(out)) == 0  # fmt: skip

    rows = _check_against_truth(midnight, out, 70, 250 * MS)
    table = pq.read_table(out)
    assert table.column("bids[69].price").null_count > 0  # the book has about 60 levels a side
    # day 1's book starts with the snapshot taken 1 ms after event 1
    image_ts = midnight.rec.truths[1].local_ts + MS
    assert table.column("timestamp")[0].as_py() * 1000 == -(-image_ts // (250 * MS)) * 250 * MS
    assert rows > 100
    assert all(t * 1000 < MIDNIGHT for t in table.column("timestamp").to_pylist())


def test_the_same_day_gives_the_same_bytes(midnight: MergedStore, tmp_path: Path) -> None:
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    assert (
        _derive(midnight, DAY2.isoformat(), "--depth", "5", "--interval", "2s", "-o", str(a)) == 0
    )
    assert (
        _derive(midnight, DAY2.isoformat(), "--depth", "5", "--interval", "2s", "-o", str(b)) == 0
    )

    assert a.read_bytes() == b.read_bytes()


def test_a_gap_day_snapshots_hold_the_stale_book_until_the_reanchor(gapped: MergedStore) -> None:
    assert _derive(gapped, "2024-06-01", "--depth", "3", "--interval", "1s") == 0
    key = canonical_key("binance", "depth", "BTCUSDT", gapped.dates[0], "snapshots.parquet")
    rows = pq.read_table(gapped.root / key).to_pylist()
    (gap,) = gapped.gaps(gapped.dates[0])["unrecoverable"]  # type: ignore[misc]

    truth_by_id = {t.update_id: t for t in gapped.rec.truths}
    for row in rows:
        truth = truth_by_id[row["update_id"]]  # never a book that did not exist
        assert row["bids[0].price"] == truth.bids[0][0]
        g = row["timestamp"] * 1000
        if g < gap["from_ts"] or g >= gap["to_ts"]:
            assert truth == gapped.rec.truth_at(g)
    last_event = gapped.rec.truths[-1].local_ts
    assert last_event - S < rows[-1]["timestamp"] * 1000 <= last_event


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--interval", "0s"], 2),
        (["--interval", "1x"], 2),
        (["--depth", "0"], 2),
        (["--date", "2024-05-09"], 1),
    ],
)
def test_mistakes_get_one_line_and_an_exit_code(
    midnight: MergedStore, args: list[str], code: int
) -> None:
    date = args[1] if args[0] == "--date" else DAY2.isoformat()
    extra = [] if args[0] == "--date" else args
    assert _derive(midnight, date, *extra) == code


def test_intervals() -> None:
    assert parse_interval("100ms") == 100 * MS
    assert parse_interval("1m") == 60 * S
    assert main(["derive", "trades"]) == 2


def test_a_fine_grid_of_a_continuing_day_starts_at_midnight(
    midnight: MergedStore, tmp_path: Path
) -> None:
    out = tmp_path / "fine.parquet"
    # day 2 opens with day 1's closing book, stamped 97 ms before midnight
    assert _derive(midnight, DAY2.isoformat(), "--depth", "2", "--interval", "20ms",
                   "-o", str(out)) == 0  # fmt: skip

    _check_against_truth(midnight, out, 2, 20 * MS)
    assert pq.read_table(out).column("timestamp")[0].as_py() * 1000 == MIDNIGHT


def test_a_damaged_day_is_one_error_not_a_traceback(
    midnight: MergedStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "copy"
    shutil.copytree(midnight.root, root)
    key = canonical_key("binance", "depth", "BTCUSDT", DAY2, "levels.parquet")
    (root / key).write_bytes(b"not parquet")
    store = MergedStore(root, midnight.rec, midnight.dates)

    assert _derive(store, DAY2.isoformat()) == 1
    assert "cannot be read" in capsys.readouterr().err
    with pytest.raises(DayReadError):
        list(booktape.replay(str(root), "binance", "BTCUSDT", DAY2, DAY2 + dt.timedelta(days=1)))
    (root / key).unlink()
    with pytest.raises(DayReadError, match="missing"):
        booktape.read_levels(str(root), "binance", "BTCUSDT", DAY2, DAY2 + dt.timedelta(days=1))
