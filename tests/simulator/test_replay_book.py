"""The replayed REST book, fed by hand: every recorded snapshot re-anchors it (no sockets).

The frames and the first snapshot are real (cryptofeed spot NKNUSDT). The later snapshots
are cut from the book the real data rebuilds (its top levels only, so a re-anchored book
is told apart from a rolled one by its depth), at ids a little behind the frames already
replayed, as a real snapshot lags the stream.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from booktape.binance import Market, decode_depth, decode_snapshot, parse_depth_header
from booktape.book import OrderBook
from simulator.recordings import RecordedFrame, RecordedSnapshot, load_recording
from simulator.replay import RollingBook, is_diff_depth


@pytest.fixture
def nknusdt(real_data: Path) -> tuple[RecordedSnapshot, list[RecordedFrame]]:
    folder = real_data / "cryptofeed"
    recording = load_recording([folder / "BINANCE.ws.1.0", folder / "BINANCE.http.0.0"])
    (snapshot,) = [s for s in recording.snapshots if s.symbol == "NKNUSDT"]
    return snapshot, recording.depth_frames("NKNUSDT")


def _last_id(frame: RecordedFrame) -> int:
    return parse_depth_header(frame.frame).last_id


def _cut(first: RecordedSnapshot, frames: list[RecordedFrame], upto: int) -> RecordedSnapshot:
    """A 5-level snapshot of the real book as of ``frames[upto]``."""
    book = OrderBook()
    book.load_snapshot(decode_snapshot(first.body))
    for frame in frames:
        event = decode_depth(frame.frame)
        assert book.update_id is not None
        if event.header.last_id > book.update_id:
            book.apply(event)
        if event.header.last_id >= _last_id(frames[upto]):
            break
    bids, asks = book.top(5)
    body = orjson.dumps({"lastUpdateId": book.update_id, "bids": bids, "asks": asks})
    return RecordedSnapshot(frames[upto].recv_ns, "NKNUSDT", body)


def _state(book: RollingBook) -> tuple[int, int]:
    """(lastUpdateId, bid levels) of the body served now."""
    body = book.body(1000)
    assert body is not None
    doc = orjson.loads(body)
    return doc["lastUpdateId"], len(doc["bids"])


def test_every_snapshot_reanchors_and_a_gap_waits_for_the_next_one(
    nknusdt: tuple[RecordedSnapshot, list[RecordedFrame]],
) -> None:
    first, frames = nknusdt
    second, third = _cut(first, frames, 40), _cut(first, frames, 80)
    book = RollingBook("NKNUSDT", Market.SPOT, first)

    assert book.body(1000) == first.body  # before any snapshot is reached: the first one
    book.on_frame(frames[0].frame)
    assert book.body(1000) == first.body
    book.on_snapshot(first)
    for frame in frames[1:44]:  # the replay passes the second snapshot's data...
        book.on_frame(frame.frame)
    rolled_id, rolled_depth = _state(book)
    assert rolled_id == _last_id(frames[43])
    assert rolled_depth > 100  # rolled from the first, deep snapshot

    book.on_snapshot(second)  # ...then its receive time: re-anchor, replay the 3 frames past it
    assert _state(book)[0] == _last_id(frames[43])
    assert _state(book)[1] <= 5 + 3 * 20  # the 5-level snapshot plus what 3 frames added

    for frame in frames[45:84]:  # frames[44] is lost: a recorded gap
        book.on_frame(frame.frame)
    assert book.book is None
    assert book.body(1000) == second.body  # the anchor is served until the next snapshot
    book.on_snapshot(third)
    assert _state(book)[0] == _last_id(frames[83])


def test_a_snapshot_older_than_the_frames_kept_is_served_as_it_is(
    nknusdt: tuple[RecordedSnapshot, list[RecordedFrame]],
) -> None:
    first, frames = nknusdt
    book = RollingBook("NKNUSDT", Market.SPOT, first)
    stale = _cut(first, frames, 10)
    book.on_snapshot(first)
    for frame in frames[1:30]:
        book.on_frame(frame.frame)
    book.on_snapshot(_cut(first, frames, 25))
    book.on_snapshot(stale)  # older than the frames kept since the last anchor
    assert book.book is None
    assert book.body(1000) == stale.body
    assert book.body(3) == orjson.dumps(
        {k: v[:3] if k != "lastUpdateId" else v for k, v in orjson.loads(stale.body).items()}
    )


def test_only_diff_depth_streams_feed_the_book() -> None:
    assert is_diff_depth("btcusdt@depth")
    assert is_diff_depth("btcusdt@depth@100ms")
    assert is_diff_depth("btcusdt@depth@0ms")
    assert not is_diff_depth("btcusdt@depth20@100ms")
    assert not is_diff_depth("btcusdt@bookTicker")
