"""The collector's per-frame path written out for speed: the same records, checks and cuts.

- ``FeedConnection._records``: a batch read from the socket gives exactly the records the
  codec's general encoders give for its frames (a batch holding a binary message included),
  one ``break`` where a symbol's ids jump, and the feed sees each depth event once and the
  batch's newest exchange time once;
- ``ChunkWriter.check`` (``Pipeline.put_many``) refuses what :func:`check_item` and the
  name rules refuse, before anything is queued;
- ``ChunkWriter.route_many`` (the spool writer) cuts chunks on time, size and UTC date as
  the rules say and returns the bytes it routed.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from booktape.binance import Market
from booktape.codec import Conn, decode_line, encode_bad, encode_header, encode_msg
from booktape.errors import CodecError, InvalidNameError
from booktape.keys import MAX_ID, NS_PER_DAY
from booktape.stores import MemoryStore
from collector.chunks import ChunkWriter, OpenChunk, check_item
from collector.connection import ConnectionOptions, FeedConnection
from collector.metrics import Metrics
from collector.pipeline import Pipeline
from collector.spool import Spool
from collector.types import Item
from tests.collector.conftest import FAST, SEC, T0, conn_item, depth_frame, pipeline_settings
from tests.collector.feed_fixtures import ListSink

MS = 1_000_000
RECV = T0 + 5 * SEC


class Recorder:
    """A feed listener that writes down what the connection tells it."""

    def __init__(self) -> None:
        self.depth: list[tuple[str, int]] = []
        self.batches: list[tuple[int, int]] = []
        self.breaks: list[str] = []

    def on_depth(self, conn: FeedConnection, symbol: str, prev_id: int) -> None:
        self.depth.append((symbol, prev_id))

    def on_frames(self, conn: FeedConnection, recv_ns: int, newest_event_ms: int) -> None:
        self.batches.append((recv_ns, newest_event_ms))

    def on_break(self, conn: FeedConnection, symbol: str) -> None:
        self.breaks.append(symbol)

    def on_shutdown_notice(self, conn: FeedConnection) -> None:
        raise AssertionError("no shutdown notice in these batches")


def connection(listener: Recorder, sink: object = None) -> FeedConnection:
    options = ConnectionOptions(
        ws_base="ws://127.0.0.1:1", market=Market.SPOT, depth_speed_ms=100,
        stale_after_s=30.0, region="eu",
    )  # fmt: skip
    return FeedConnection(
        "c9",
        ["BTCUSDT", "ETHUSDT"],
        options=options,
        sink=sink,  # type: ignore[arg-type]  # _records does not touch the sink
        metrics=Metrics(),
        listener=listener,
        clock_ns=time.time_ns,
    )


def with_time(frame: bytes, event_ms: int) -> bytes:
    return frame.replace(b'"E":1767225600000', b'"E":%d' % event_ms)


@pytest.mark.parametrize("binary_at", [None, 1])
def test_a_batch_gives_the_general_encoders_records_and_one_break(binary_at: int | None) -> None:
    frames = [
        with_time(depth_frame("BTCUSDT", 1, 10, pad=300), 1767225600300),
        with_time(depth_frame("ETHUSDT", 5, 6), 1767225600900),  # the newest event
        with_time(depth_frame("BTCUSDT", 11, 20), 1767225600100),  # continues 1-10
        with_time(depth_frame("BTCUSDT", 31, 40), 1767225600200),  # 21-30 missing: a break
    ]
    binary: list[int] = []
    if binary_at is not None:  # a binary message in the batch: kept as a bad record
        frames.insert(binary_at, b"\x00\x01not text")
        binary.append(binary_at)
    listener = Recorder()
    conn = connection(listener)

    items, checked = conn._records(frames, binary, RECV)

    # The fast path vouches for its items only when every item is one of its own (and the
    # vouching is true: each passes the sink's check).
    assert checked is (binary_at is None)
    for one in items:
        check_item(one)
    depth = [f for n, f in enumerate(frames) if n not in binary]
    expected = [encode_msg(RECV, "c9", f) for f in depth]
    got = [i.line for i in items if i.first_id is not None]
    assert got == expected  # byte for byte what the codec's general path writes
    assert [(i.symbol, i.first_id, i.last_id) for i in items if i.first_id is not None] == [
        ("BTCUSDT", 1, 10), ("ETHUSDT", 5, 6), ("BTCUSDT", 11, 20), ("BTCUSDT", 31, 40),
    ]  # fmt: skip
    breaks = [decode_line(i.line) for i in items if b'"ev":"break"' in i.line]
    assert len(breaks) == 1
    assert isinstance(breaks[0], Conn)
    assert breaks[0].info == {"expected_prev": 20, "got_prev": 30, "U": 31, "u": 40}
    bad = [i for i in items if i.first_id is None and b'"ev"' not in i.line]
    if binary_at is None:
        assert bad == []
    else:
        line = encode_bad(RECV, "c9", frames[binary_at], binary=True)
        assert sorted(i.symbol for i in bad) == ["BTCUSDT", "ETHUSDT"]
        assert all(i.line == line for i in bad)
    assert all(i.recv_ns == RECV for i in items)
    assert listener.depth == [("BTCUSDT", 0), ("ETHUSDT", 4), ("BTCUSDT", 10), ("BTCUSDT", 30)]
    assert listener.breaks == ["BTCUSDT"]
    assert listener.batches == [(RECV, 1767225600900)]  # once, with the newest E
    track = conn.tracks["BTCUSDT"]
    assert (track.last_id, track.run_first_prev, track.run_events) == (40, 30, 1)
    registry = conn._metrics.registry  # the first batch brings the frame metrics up to date

    def metric(name: str, symbol: str) -> float | None:
        return registry.get_sample_value(name, {"symbol": symbol})

    btc = [f for f in depth if b'"s":"BTCUSDT"' in f]
    assert metric("booktape_frames_total", "BTCUSDT") == len(btc) == 3
    assert metric("booktape_frame_bytes_total", "BTCUSDT") == sum(len(f) for f in btc)
    assert metric("booktape_last_update_id", "BTCUSDT") == 40
    assert metric("booktape_last_update_id", "ETHUSDT") == 6
    assert metric("booktape_last_frame_timestamp_seconds", "BTCUSDT") == RECV / 1e9
    assert track.frames == track.frame_bytes == 0  # handed over


def test_a_batch_without_depth_events_tells_the_feed_nothing() -> None:
    listener = Recorder()
    conn = connection(listener)

    items, checked = conn._records([b'{"result":null,"id":1}'], [], RECV)

    assert sorted(i.symbol for i in items) == ["BTCUSDT", "ETHUSDT"]  # a reply: every symbol
    assert listener.depth == listener.batches == []
    assert not checked  # not the fast path's own items: the sink checks them


async def test_the_fast_path_vouches_only_for_symbols_it_subscribed_to() -> None:
    sink = ListSink()
    conn = connection(Recorder(), sink)
    ours = depth_frame("BTCUSDT", 1, 10)
    foreign = depth_frame("XRPUSDT", 1, 10)  # a stream this connection did not ask for
    too_big = depth_frame("BTCUSDT", 11, 20).replace(b'"u":20', b'"u":%d' % (MAX_ID + 1))

    assert conn._records([ours], [], RECV)[1]
    items, checked = conn._records([foreign], [], RECV)
    assert not checked
    assert [(i.symbol, i.first_id) for i in items] == [("XRPUSDT", 1)]  # still recorded
    items, checked = conn._records([too_big], [], RECV)
    assert not checked  # an id out of range leaves the fast path; the sink refuses it
    with pytest.raises(CodecError, match="receive time"):
        conn._records([ours], [], MAX_ID + 1)  # refused once for the whole batch

    await conn.unsubscribe(["BTCUSDT"], "delisted")  # not open: no request, just forgotten
    assert [c.ev for c in sink.conns("BTCUSDT")] == ["close"]
    assert conn._records([depth_frame("BTCUSDT", 11, 20)], [], RECV)[1] is False


def make_writer(tmp_path: Path, max_bytes: int = 1 << 20) -> ChunkWriter:
    return ChunkWriter(
        Spool(tmp_path / "spool"), exchange="binance", region="eu", collector="c1", host="h1",
        rotation_s=60.0, chunk_max_bytes=max_bytes,
    )  # fmt: skip


def item(symbol: str, t: int, first: int, last: int, pad: int = 0) -> Item:
    return Item(symbol, encode_msg(t, "c1", depth_frame(symbol, first, last, pad)), t, first, last)


BAD_ITEMS = [
    Item("BTCUSDT", b'{"k":"msg"}', T0),  # no newline
    Item("BTCUSDT", b"{}\n{}\n", T0),  # two lines
    Item("BTCUSDT", b"\n{}", T0),  # the newline not at the end
    Item("BTCUSDT", b"{}\n", -1),
    Item("BTCUSDT", b"{}\n", MAX_ID + 1),
    Item("BTCUSDT", b"{}\n", True),  # type: ignore[arg-type]
    Item("BTCUSDT", b"{}\n", float(T0)),  # type: ignore[arg-type]
    Item("BTCUSDT", b"{}\n", T0, first_id=-5, last_id=3),
    Item("BTCUSDT", b"{}\n", T0, first_id=1, last_id=MAX_ID + 1),
    Item("BTCUSDT", b"{}\n", T0, first_id="1", last_id=3),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("bad", BAD_ITEMS)
async def test_put_many_refuses_a_bad_item_before_queueing_any(tmp_path: Path, bad: Item) -> None:
    pipeline = Pipeline(pipeline_settings(tmp_path), MemoryStore(), Metrics(), options=FAST)
    good = conn_item("BTCUSDT", T0)

    with pytest.raises(CodecError):
        await pipeline.put_many([good, bad, good])

    assert pipeline.health().queue_depth == 0


@pytest.mark.parametrize(
    "bad", [Item("BTC.USDT", b"{}\n", T0), Item("BTCUSDT", b"{}\n", T0, channel="book")]
)
async def test_put_many_refuses_a_bad_name(tmp_path: Path, bad: Item) -> None:
    pipeline = Pipeline(pipeline_settings(tmp_path), MemoryStore(), Metrics(), options=FAST)

    with pytest.raises(InvalidNameError):
        await pipeline.put_many([conn_item("BTCUSDT", T0), bad])

    assert pipeline.health().queue_depth == 0


def test_route_many_cuts_on_time_size_and_date(tmp_path: Path) -> None:
    writer = make_writer(tmp_path, max_bytes=2048)
    midnight = T0 + NS_PER_DAY
    items = [
        item("BTCUSDT", T0 + 1 * SEC, 1, 10),
        item("ETHUSDT", T0 + 2 * SEC, 5, 6),
        item("BTCUSDT", T0 + 59 * SEC, 11, 20),
        item("BTCUSDT", T0 + 60 * SEC, 21, 30),  # the minute is over: cut 1-20
        *(item("ETHUSDT", T0 + 3 * SEC + n * MS, 7 + n, 7 + n, pad=600) for n in range(4)),
        item("BTCUSDT", midnight - 100 * MS, 31, 40),  # another day (same minute grid)
    ]
    cut: list[OpenChunk] = []

    routed = writer.route_many(items, cut)

    assert routed == sum(len(i.line) for i in items)
    described = [(c.header.symbol, c.first_recv_ns, c.records, c.first_id, c.last_id) for c in cut]
    assert described[0] == ("BTCUSDT", T0 + 1 * SEC, 2, 1, 20)  # on time
    eth_items = [i for i in items if i.symbol == "ETHUSDT"]
    size = len(encode_header(writer.header("depth", "ETHUSDT")[0]))
    fit = 0
    while size + len(eth_items[fit].line) <= 2048:
        size += len(eth_items[fit].line)
        fit += 1
    assert 1 < fit < len(eth_items)  # the case under test: a cut on size
    eth = [d for d in described if d[0] == "ETHUSDT"]
    assert eth[0] == ("ETHUSDT", T0 + 2 * SEC, fit, 5, eth_items[fit - 1].last_id)
    assert all(c.size <= 2048 for c in cut)
    assert described[-1] == ("BTCUSDT", T0 + 60 * SEC, 1, 21, 30)  # on the date
    btc = writer.chunks[("depth", "BTCUSDT")]
    assert (btc.first_recv_ns, btc.records, btc.first_id, btc.last_id) == (
        midnight - 100 * MS, 1, 31, 40,
    )  # fmt: skip
    header = encode_header(btc.header)
    assert btc.pending == [header, items[-1].line]
    assert btc.size == len(header) + len(items[-1].line)
    records = sum(c.records for c in [*cut, *writer.chunks.values()])
    assert records == len(items)
