"""``booktape export hdf5``: read back with plain h5py, exactly as the old files were read.

Ground truth: the TrueMarket books and price points the raw chunks were written from.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from booktape.cli import main
from booktape.stores import LocalStore
from merger.coinbase import merge_coinbase_day
from tests.merger.coinbase_fixtures import (
    MS,
    PRODUCT,
    T0,
    TrueMarket,
    book_body,
    book_snap,
    chunk,
    make_market,
)
from tests.merger.test_coinbase import DATE, MISSING, NOW, SLOTS, expected_pick, fill, raw_objects


def name_of(i: int) -> str:
    """The group of slot i: 10:00:00 + 10 s * i as HHMM:SS."""
    seconds = 10 * 3600 + 10 * i
    return f"{seconds // 3600:02d}{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrueMarket, Path]:
    market = make_market(SLOTS)
    root = tmp_path_factory.mktemp("store")
    store = LocalStore(root)

    async def go() -> None:
        await fill(store, raw_objects(market))
        await merge_coinbase_day(store, DATE, now_ns=NOW)

    asyncio.run(go())
    return market, root


def export(root: Path, out: Path, *extra: str) -> int:
    return main(["export", "hdf5", "--store", str(root), "--date", "2024-05-01",
                 "--product", PRODUCT, "-o", str(out), *extra])  # fmt: skip


def test_hdf5_read_with_plain_h5py_equals_the_true_books(
    merged: tuple[TrueMarket, Path], tmp_path: Path
) -> None:
    market, root = merged
    out = tmp_path / "2024-05-01.h5"

    assert export(root, out) == 0

    present = [i for i in range(SLOTS) if i not in MISSING]
    with h5py.File(out, "r") as f:
        assert sorted(f.keys()) == sorted(name_of(i) for i in present)
        for i in present:
            _, sequence = expected_pick(market, i)
            book = market.books[sequence]
            assert f[name_of(i)].attrs["sequence"] == sequence
            asks = [(float(p), float(s)) for p, s, _ in book.asks]
            bids = [(float(p), float(s)) for p, s, _ in book.bids]
            assert f[name_of(i)]["asks"][0:5].tolist() == asks[:5]
            assert f[name_of(i)]["asks"][:]["price"].tolist() == [p for p, _ in asks]
            assert f[name_of(i)]["asks"][:]["size"].tolist() == [s for _, s in asks]
            assert f[name_of(i)]["bids"][:].tolist() == bids
            assert f[name_of(i)]["asks"].dtype.names == ("price", "size")
            for cur in ("BTC", "ETH"):
                for kind in ("buy", "sell", "spot"):
                    value = f[name_of(i)]["price-points"][cur][kind]
                    assert value.shape == ()
                    assert value[()] == float(market.prices[(cur, i, kind)])
        assert f["1000:20"]["price-points"]["ETH"]["buy"][()] == float(
            market.prices[("ETH", 2, "buy")]
        )
        assert f.attrs["product"] == PRODUCT
        assert f.attrs["level"] == 3


def test_float32_rounds_btc_prices_to_the_wrong_cent(
    merged: tuple[TrueMarket, Path], tmp_path: Path
) -> None:
    market, root = merged
    out = tmp_path / "f32.h5"

    assert export(root, out, "--float32") == 0

    with h5py.File(out, "r") as f:
        _, sequence = expected_pick(market, 0)
        exact = [float(p) for p, _, _ in market.books[sequence].asks]
        got = f["1000:00"]["asks"][:]["price"]
        assert got.dtype == np.float32
        assert got.tolist() == [float(np.float32(p)) for p in exact]
        wrong_cent = [p for p, g in zip(exact, got.tolist(), strict=True) if round(g, 2) != p]
        assert wrong_cent  # prices near 150000 USD: float32 steps are 1.5625 cents
        assert f["1000:00"]["price-points"]["BTC"]["spot"].dtype == np.float32


def test_export_of_a_day_not_merged_fails_with_one_line(
    merged: tuple[TrueMarket, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, root = merged
    out = tmp_path / "x.h5"
    base = ["export", "hdf5", "--store", str(root), "-o", str(out)]

    other_day = main([*base, "--date", "2024-05-02", "--product", PRODUCT])
    other_product = main([*base, "--date", "2024-05-01", "--product", "ETH-USD"])
    bad_date = main([*base, "--date", "2024-13-01"])

    err = capsys.readouterr().err.strip().splitlines()
    assert (other_day, other_product, bad_date) == (1, 1, 2)
    assert len(err) == 3
    assert "no Coinbase product is merged on 2024-05-02: run booktape merge" in err[0]
    assert "ETH-USD 2024-05-01 is not merged" in err[1]
    assert "--date" in err[2]
    assert not out.exists()


def test_export_without_product_takes_the_only_one(
    merged: tuple[TrueMarket, Path], tmp_path: Path
) -> None:
    _, root = merged
    out = tmp_path / "only.h5"

    assert main(["export", "hdf5", "--store", str(root), "--date", "2024-05-01", "-o",
                 str(out)]) == 0  # fmt: skip

    with h5py.File(out, "r") as f:
        assert f.attrs["product"] == PRODUCT


def test_slots_closer_than_a_second_cannot_take_hhmm_ss_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    market = make_market(2)
    store = LocalStore(tmp_path / "store")
    step = 500 * MS
    for i in range(2):
        slot = T0 + i * step
        body = book_body(market.books[market.sequences[i]], slot)
        key, data = chunk("book", PRODUCT, "eu.c1", [book_snap(slot, slot, slot + MS, body)],
                          interval_ns=step)  # fmt: skip
        asyncio.run(store.put(key, data))
    asyncio.run(merge_coinbase_day(store, DATE, now_ns=NOW))
    out = tmp_path / "x.h5"

    code = export(tmp_path / "store", out)

    assert code == 1
    assert "two slots are named 1000:00" in capsys.readouterr().err
    assert not out.exists()
    assert not list(tmp_path.glob(".x.h5*"))


def test_export_is_byte_identical_when_run_again_later(
    merged: tuple[TrueMarket, Path], tmp_path: Path
) -> None:
    _, root = merged
    first, second = tmp_path / "first.h5", tmp_path / "second.h5"
    assert export(root, first) == 0
    time.sleep(1.1)  # HDF5 object timestamps have a resolution of one second
    assert export(root, second) == 0
    assert first.read_bytes() == second.read_bytes()
