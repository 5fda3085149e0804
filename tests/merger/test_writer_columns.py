"""levels.parquet columns built in bulk: every price and quantity is Python's float() of
its exchange string, whatever the spelling, and rows keep their items' ids and labels.

Ground truth: ``float()`` of the strings given and the items' own fields.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from merger.model import BookImage, StreamEvent
from merger.writer import LEVELS_FILE, DayWriter
from tests.merger.test_writer import event

DECIMALS = st.builds(
    lambda i, f, z: f"{i}.{f}{'0' * z}" if f else str(i),
    st.integers(0, 10**9),
    st.from_regex(r"[0-9]{0,12}", fullmatch=True),
    st.integers(0, 6),
)


def write(tmp: Path, items: list[BookImage | StreamEvent]) -> dict[str, list[object]]:
    writer = DayWriter(tmp, exchange="binance", channel="depth", symbol="BTCUSDT",
                       date="2024-05-01", keep_book=False)  # fmt: skip
    writer.add_all(items)
    writer.close()
    return pq.read_table(tmp / LEVELS_FILE).to_pydict()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(DECIMALS, DECIMALS), min_size=1, max_size=30))
def test_columns_are_float_of_each_string(
    tmp_path_factory: pytest.TempPathFactory, levels: list[tuple[str, str]]
) -> None:
    tmp = tmp_path_factory.mktemp("w")
    image = BookImage(1, 9, (("5", "1"),), (), "us.c1", "start")
    items: list[BookImage | StreamEvent] = [
        image,
        event(10, 12, [list(x) for x in levels], [["7.5", "0.00000000"]]),
    ]

    cols = write(tmp, items)

    assert cols["price"] == [5.0] + [float(p) for p, _ in levels] + [7.5]
    assert cols["qty"] == [1.0] + [float(q) for _, q in levels] + [0.0]
    assert cols["side"] == ["bid"] * (1 + len(levels)) + ["ask"]
    assert cols["is_snapshot"] == [True] + [False] * (len(levels) + 1)
    assert cols["last_update_id"] == [9] + [12] * (len(levels) + 1)
    assert cols["source"] == ["us.c1"] + ["eu.c1"] * (len(levels) + 1)


def test_spellings_arrow_does_not_read_are_converted_like_python(tmp_path: Path) -> None:
    odd = [["1_000.5", "2"], [" 7", "1E+2"], ["8.25", "3e-8"]]
    items: list[BookImage | StreamEvent] = [
        BookImage(1, 9, (), (), "us.c1", "start"),
        event(10, 12, odd, []),
    ]

    cols = write(tmp_path, items)

    assert cols["price"] == [1000.5, 7.0, 8.25]
    assert cols["qty"] == [2.0, 100.0, 3e-8]


def test_a_level_string_holding_a_comma_is_refused_like_float_does(tmp_path: Path) -> None:
    writer = DayWriter(tmp_path, exchange="binance", channel="depth", symbol="BTCUSDT",
                       date="2024-05-01", keep_book=False)  # fmt: skip
    writer.add(BookImage(1, 9, (), (), "us.c1", "start"))

    with pytest.raises(ValueError, match="1,5"):
        writer.add(event(10, 12, [["1,5", "2"]], []))
    writer.abort()
