"""``booktape export tardis``: a merged day as Tardis.dev incremental_book_L2 CSV.

The CSV is read back the way Tardis's documentation tells its users to rebuild a book (reset
on is_snapshot after updates, amount 0 removes, group rows by local_timestamp) and the book
is compared with the simulator's truth.
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

from booktape.cli import main
from merger.export_tardis import tardis_exchange
from tests.read.conftest import DAY1, DAY2, MergedStore
from tests.read.market import MS, Truth

HEADER = ["exchange", "symbol", "timestamp", "local_timestamp", "is_snapshot", "side", "price",
          "amount"]  # fmt: skip
Book = dict[str, dict[float, float]]


def _export(store: MergedStore, date: str, out: Path) -> list[dict[str, str]]:
    code = main(["export", "tardis", "--store", str(store.root), "--exchange", "binance",
                 "--symbol", "btcusdt", "--date", date, "-o", str(out)])  # fmt: skip
    assert code == 0
    with gzip.open(out, "rt", newline="") as f:
        text = f.read()
    assert text.splitlines()[0] == ",".join(HEADER)
    return list(csv.DictReader(io.StringIO(text)))


def _tardis_books(rows: list[dict[str, str]]) -> list[tuple[int, Book]]:
    """(local_timestamp, book) after each group of rows sharing a local_timestamp."""
    book: Book = {"bid": {}, "ask": {}}
    out: list[tuple[int, Book]] = []
    previous_snapshot = False
    for n, row in enumerate(rows):
        snapshot = row["is_snapshot"] == "true"
        if snapshot and not previous_snapshot:
            book = {"bid": {}, "ask": {}}
        previous_snapshot = snapshot
        price, amount = float(row["price"]), float(row["amount"])
        if amount == 0:
            book[row["side"]].pop(price, None)
        else:
            book[row["side"]][price] = amount
        last = n + 1 == len(rows)
        if last or rows[n + 1]["local_timestamp"] != row["local_timestamp"]:
            out.append((int(row["local_timestamp"]), {s: dict(v) for s, v in book.items()}))
    return out


def _truth_book(truth: Truth) -> Book:
    return {"bid": dict(truth.bids), "ask": dict(truth.asks)}


def test_a_tardis_reader_rebuilds_the_true_book_after_every_message(
    midnight: MergedStore, tmp_path: Path
) -> None:
    rows = _export(midnight, DAY1.isoformat(), tmp_path / "day1.csv.gz")
    books = _tardis_books(rows)

    truths = {t.local_ts // 1000: t for t in midnight.rec.truths}
    checked = 0
    for local_us, book in books:
        if local_us in truths:  # every message but the snapshot
            assert book == _truth_book(truths[local_us])
            checked += 1
    day1 = [t for t in midnight.rec.truths if t.local_ts // 86_400_000_000_000 == 19844]
    assert checked == len(day1) - 2  # all but events 0 and 1: inside the first snapshot
    assert {r["exchange"] for r in rows} == {"binance"}
    assert {r["symbol"] for r in rows} == {"BTCUSDT"}


def test_timestamps_are_microseconds_and_snapshots_fall_back_to_local_time(
    midnight: MergedStore, tmp_path: Path
) -> None:
    rows = _export(midnight, DAY2.isoformat(), tmp_path / "day2.csv.gz")

    snapshot = [r for r in rows if r["is_snapshot"] == "true"]
    deltas = [r for r in rows if r["is_snapshot"] == "false"]
    assert snapshot == rows[: len(snapshot)]  # the day opens with the image
    assert all(r["timestamp"] == r["local_timestamp"] for r in snapshot)
    # the simulator sends E = the window's end in ms; the event arrives 3 ms later
    assert all(int(r["timestamp"]) == int(r["local_timestamp"]) - 3 * MS // 1000 for r in deltas)
    assert all(int(r["timestamp"]) % 1000 == 0 for r in deltas)
    assert _tardis_books(rows)[-1][1] == _truth_book(midnight.rec.truths[-1])


def test_a_gap_is_exported_as_a_second_snapshot(gapped: MergedStore, tmp_path: Path) -> None:
    rows = _export(gapped, "2024-06-01", tmp_path / "gap.csv.gz")

    starts = [i for i, r in enumerate(rows) if r["is_snapshot"] == "true"
              and (i == 0 or rows[i - 1]["is_snapshot"] == "false")]  # fmt: skip
    assert len(starts) == 2
    assert _tardis_books(rows)[-1][1] == _truth_book(gapped.rec.truths[-1])


def test_plain_csv_and_the_futures_names(midnight: MergedStore, tmp_path: Path) -> None:
    out = tmp_path / "day.csv"
    assert main(["export", "tardis", "--store", str(midnight.root), "--symbol", "BTCUSDT",
                 "--date", DAY2.isoformat(), "-o", str(out)]) == 0  # fmt: skip
    assert out.read_text().startswith(",".join(HEADER) + "\nbinance,BTCUSDT,")
    assert tardis_exchange("binance-usdm") == "binance-futures"
    assert tardis_exchange("binance-coinm") == "binance-delivery"


def test_mistakes_get_one_line_and_nothing_is_written(
    midnight: MergedStore, tmp_path: Path, capsys: object
) -> None:
    out = tmp_path / "x.csv.gz"
    base = ["export", "tardis", "--store", str(midnight.root), "--symbol", "BTCUSDT"]
    assert main([*base, "--date", "2024-05-09", "-o", str(out)]) == 1  # not merged
    assert main([*base, "--date", "2024-13-01", "-o", str(out)]) == 2
    assert main([*base, "--date", DAY1.isoformat()]) == 2  # no -o
    assert main([*base, "--exchange", "coinbase", "--date", "2024-05-01", "-o", str(out)]) == 2
    assert not out.exists()
