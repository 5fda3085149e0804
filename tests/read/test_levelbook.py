"""The reader's float book and event cutting, against a plain dict model (property-based)."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from booktape.levelbook import LevelBook, event_chunks
from booktape.read import LEVELS_SCHEMA

Row = tuple[str, float, float]  # side, price, qty
Event = tuple[bool, list[Row]]  # is_snapshot, rows

prices = st.sampled_from([float(p) / 4 for p in range(380, 420)])
rows = st.lists(
    st.tuples(st.sampled_from(["bid", "ask"]), prices, st.sampled_from([0.0, 0.5, 1.25, 3.0])),
    min_size=1,
    max_size=12,
)


@st.composite
def days(draw: st.DrawFn) -> list[Event]:
    """Events that open with an image; later images only after deltas, never two in a row."""
    events: list[Event] = [(True, draw(rows))]
    for _ in range(draw(st.integers(0, 25))):
        image = not events[-1][0] and draw(st.integers(0, 6)) == 0
        events.append((image, draw(rows)))
    return events


def _table(events: list[Event]) -> pa.Table:
    cols: dict[str, list[object]] = {name: [] for name in LEVELS_SCHEMA.names}
    for n, (image, event_rows) in enumerate(events):
        for side, price, qty in event_rows:
            for name, value in (("local_ts", 1000 + n), ("exchange_ts", 0 if image else n),
                                ("prev_update_id", 10 * n), ("first_update_id", 10 * n),
                                ("last_update_id", 10 * n), ("side", side), ("price", price),
                                ("qty", qty if not image or qty else 1.0),
                                ("is_snapshot", image), ("source", "eu.c1")):  # fmt: skip
                cols[name].append(value)
    return pa.Table.from_pydict(cols, schema=LEVELS_SCHEMA)


def _model(events: list[Event], depth: int) -> list[tuple[int, list[object], list[object]]]:
    book: dict[str, dict[float, float]] = {"bid": {}, "ask": {}}
    out: list[tuple[int, list[object], list[object]]] = []
    for n, (image, event_rows) in enumerate(events):
        if image:
            book = {"bid": {}, "ask": {}}
        for side, price, raw_qty in event_rows:
            qty = raw_qty if not image or raw_qty else 1.0  # an image has no zero levels
            if qty == 0:
                book[side].pop(price, None)
            else:
                book[side][price] = qty
        bids = sorted(book["bid"].items(), reverse=True)[:depth]
        asks = sorted(book["ask"].items())[:depth]
        out.append((10 * n, list(bids), list(asks)))
    return out


@settings(max_examples=150, deadline=None)
@given(events=days(), batch=st.integers(1, 9), depth=st.integers(1, 6))
def test_any_batch_cut_replays_like_the_dict_model(
    events: list[Event], batch: int, depth: int
) -> None:
    table = _table(events)
    book = LevelBook()
    seen: list[tuple[int, list[object], list[object]]] = []
    for chunk in event_chunks(table.to_batches(max_chunksize=batch)):
        for j in range(chunk.events):
            book.apply_event(chunk, j)
            assert chunk.local_ts[j] == 1000 + len(seen)
            seen.append((chunk.last_update_id[j], *book.top(depth)))

    assert seen == _model(events, depth)
