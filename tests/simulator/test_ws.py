"""WebSocket streams over the wire: shapes, the book they rebuild, live requests."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import aiohttp
import orjson
import pytest

from booktape.binance import (
    decode_depth,
    decode_snapshot,
    first_splice_index,
    is_continuous,
    is_stale,
    parse_depth_header,
    splices,
)
from booktape.book import OrderBook, Side
from simulator.app import Simulator
from tests.simulator.conftest import base, fast_config, get_json, next_reply, next_text

STREAM = "btcusdt@depth@100ms"


async def test_raw_and_combined_frames_parse_like_the_real_ones(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    async with (
        http.ws_connect(f"{base(sim)}/ws/{STREAM}") as raw,
        http.ws_connect(f"{base(sim)}/stream?streams={STREAM}") as wrapped,
    ):
        raw_frame = await next_text(raw)
        wrapped_frame = await next_text(wrapped)
    assert raw_frame.startswith(b'{"e":"depthUpdate","E":')
    assert wrapped_frame.startswith(b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate",')
    for frame in (raw_frame, wrapped_frame):
        event = decode_depth(frame)
        assert event.header.symbol == "BTCUSDT"
        assert event.bids or event.asks


def _inside(
    levels: list[tuple[str, str]], side: Side, floor: Decimal, ceiling: Decimal
) -> list[tuple[str, str]]:
    if side is Side.BID:
        return [lv for lv in levels if Decimal(lv[0]) >= floor]
    return [lv for lv in levels if Decimal(lv[0]) <= ceiling]


async def _apply_until(ws: aiohttp.ClientWebSocketResponse, book: OrderBook, last_id: int) -> None:
    while book.update_id != last_id:
        event = decode_depth(await next_text(ws))
        assert book.update_id is not None
        if is_stale(book.update_id, event.header.last_id):
            continue
        assert splices(book.update_id, event.header.prev_id, event.header.last_id)
        book.apply(event)


async def test_snapshot_plus_stream_rebuilds_the_true_book(http: aiohttp.ClientSession) -> None:
    async with (
        Simulator(fast_config(advance_interval=0.01)) as sim,
        http.ws_connect(f"{base(sim)}/stream?streams={STREAM}") as ws,
    ):
        buffered = [await next_text(ws), await next_text(ws)]  # >= 2 events, then snapshot
        status, _, _ = await get_json(
            http, f"{base(sim, 'binance_rest')}/api/v3/depth", symbol="BTCUSDT", limit="1000"
        )
        assert status == 200
        async with http.get(
            f"{base(sim, 'binance_rest')}/api/v3/depth",
            params={"symbol": "BTCUSDT", "limit": "1000"},
        ) as response:
            snapshot = decode_snapshot(await response.read())
        book = OrderBook()
        book.load_snapshot(snapshot)
        while (
            first_splice_index(snapshot.last_update_id, [parse_depth_header(f) for f in buffered])
            is None
        ):
            buffered.append(await next_text(ws))
        start = first_splice_index(
            snapshot.last_update_id, [parse_depth_header(f) for f in buffered]
        )
        assert start is not None
        for frame in buffered[start:]:
            book.apply(decode_depth(frame))
        floor, ceiling = Decimal(snapshot.bids[-1][0]), Decimal(snapshot.asks[-1][0])
        for _ in range(4):
            await asyncio.sleep(0.3)
            sim.pause_market()
            truth = sim.truth("BTCUSDT")
            assert truth["lastUpdateId"] is not None
            await _apply_until(ws, book, truth["lastUpdateId"])
            bids = [(p, q) for p, q in truth["bids"]]
            asks = [(p, q) for p, q in truth["asks"]]
            assert book.best_bid() == bids[0]
            assert book.best_ask() == asks[0]
            for side, levels in ((Side.BID, bids), (Side.ASK, asks)):
                assert _inside(book.levels(side), side, floor, ceiling) == _inside(
                    levels, side, floor, ceiling
                )
            sim.resume_market()


async def test_two_connections_cut_different_windows_over_the_same_book(
    http: aiohttp.ClientSession,
) -> None:
    async with Simulator(fast_config(advance_interval=0.01)) as sim:
        rest = f"{base(sim, 'binance_rest')}/api/v3/depth"
        async with (
            http.ws_connect(f"{base(sim)}/ws/{STREAM}") as one,
            http.ws_connect(f"{base(sim)}/ws/{STREAM}") as two,
        ):
            await asyncio.sleep(0.05)
            sim.pause_market()
            async with http.get(rest, params={"symbol": "BTCUSDT", "limit": "5000"}) as response:
                snapshot = decode_snapshot(await response.read())
            sim.resume_market()
            books = [OrderBook(), OrderBook()]
            bounds: list[set[int]] = [set(), set()]
            target: list[int] = []
            reached = [asyncio.Event(), asyncio.Event()]
            for book in books:
                book.load_snapshot(snapshot)

            async def follow(ws: aiohttp.ClientWebSocketResponse, index: int) -> None:
                previous = None
                while True:
                    event = decode_depth(await next_text(ws))
                    if previous is not None:
                        assert is_continuous(previous, event.header.prev_id)
                    previous = event.header.last_id
                    bounds[index].add(event.header.last_id)
                    if not is_stale(snapshot.last_update_id, event.header.last_id):
                        books[index].apply(event)
                    if target and books[index].update_id == target[0]:
                        reached[index].set()

            tasks = [asyncio.create_task(follow(ws, i)) for i, ws in enumerate((one, two))]
            await asyncio.sleep(1.5)
            sim.pause_market()
            truth_id = sim.truth("BTCUSDT")["lastUpdateId"]
            assert truth_id is not None
            target.append(truth_id)
            for book, event in zip(books, reached, strict=True):
                if book.update_id == target[0]:
                    event.set()
            async with asyncio.timeout(5):
                await asyncio.gather(*(event.wait() for event in reached))
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    assert bounds[0] != bounds[1]
    assert books[0].levels(Side.BID) == books[1].levels(Side.BID)
    assert books[0].levels(Side.ASK) == books[1].levels(Side.ASK)


async def test_live_requests_get_binance_replies(http: aiohttp.ClientSession) -> None:
    async with (
        Simulator(fast_config(max_incoming_per_second=100)) as sim,
        http.ws_connect(f"{base(sim)}/ws") as ws,
    ):
        await ws.send_str('{"method":"SUBSCRIBE","params":["btcusdt@depth@100ms"],"id":1}')
        assert await next_reply(ws) == {"result": None, "id": 1}
        assert decode_depth(await next_text(ws)).header.stream is None  # raw frames
        await ws.send_str('{"method":"LIST_SUBSCRIPTIONS","id":3}')
        assert await next_reply(ws) == {"result": ["btcusdt@depth@100ms"], "id": 3}
        await ws.send_str('{"method":"SET_PROPERTY","params":["combined",true],"id":5}')
        assert await next_reply(ws) == {"result": None, "id": 5}
        await ws.send_str('{"method":"GET_PROPERTY","params":["combined"],"id":"two"}')
        assert await next_reply(ws) == {"result": True, "id": "two"}
        while parse_depth_header(frame := await next_text(ws)).stream is None:
            pass
        assert frame.startswith(b'{"stream":"btcusdt@depth@100ms","data":')
        await ws.send_str('{"method":"UNSUBSCRIBE","params":["btcusdt@depth@100ms"],"id":312}')
        assert await next_reply(ws) == {"result": None, "id": 312}
        await ws.send_str('{"method":"LIST_SUBSCRIPTIONS","id":4}')
        assert await next_reply(ws) == {"result": [], "id": 4}
        await ws.send_str('{"method":"SUBSCRIBE","params":["nosuchcoin@depth"],"id":6}')
        assert await next_reply(ws) == {"result": None, "id": 6}  # accepted, silent

        await ws.send_str("{not json")
        reply = await next_reply(ws)
        assert reply["error"]["code"] == 3
        assert "Invalid JSON" in reply["error"]["msg"]
        await ws.send_str('{"method":"SUBSCRIBE","params":[],"id":1.5}')
        assert await next_reply(ws) == {
            "error": {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"}
        }
        await ws.send_str('{"method":"SUBSCRIB","params":[],"id":7}')
        reply = await next_reply(ws)
        assert reply["id"] == 7
        assert reply["error"]["code"] == 2
        assert "unknown variant `SUBSCRIB`" in reply["error"]["msg"]
        await ws.send_str('{"params":[],"id":8}')
        reply = await next_reply(ws)
        assert "missing field `method`" in reply["error"]["msg"]
        await ws.send_str('{"method":"GET_PROPERTY","params":["colour"],"id":9}')
        assert await next_reply(ws) == {"error": {"code": 0, "msg": "Unknown property"}, "id": 9}
        await ws.send_str('{"method":"SET_PROPERTY","params":["combined","yes"],"id":10}')
        assert (await next_reply(ws))["error"]["code"] == 1

        await ws.send_str('{"method":"SUBSCRIBE","params":["@@@lixo###"],"id":11}')
        assert await next_reply(ws) == {
            "error": {"code": 2, "msg": "Invalid request: invalid stream"},
            "id": 11,
        }
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert msg.data == 1008


async def test_subscribing_past_1024_streams_is_refused(http: aiohttp.ClientSession) -> None:
    names = [f"coin{i}usdt@depth" for i in range(1024)]
    async with Simulator(fast_config()) as sim, http.ws_connect(f"{base(sim)}/ws") as ws:
        await ws.send_str(orjson.dumps({"method": "SUBSCRIBE", "params": names, "id": 1}).decode())
        assert await next_reply(ws) == {"result": None, "id": 1}
        await ws.send_str('{"method":"SUBSCRIBE","params":["btcusdt@depth"],"id":2}')
        reply = await next_reply(ws)
        assert reply["id"] == 2
        assert "too many streams" in reply["error"]["msg"]
        await ws.send_str('{"method":"LIST_SUBSCRIPTIONS","id":3}')
        assert len((await next_reply(ws))["result"]) == 1024
    async with Simulator(fast_config(max_streams=2)) as small:
        too_many = "/".join(["btcusdt@depth", "btcusdt@depth@100ms", "ethusdt@depth"])
        status, _, _ = await get_json(
            http, f"{base(small, 'binance_rest')}/stream", streams=too_many
        )
        assert status == 400


async def test_an_invalid_stream_in_the_url_fails_the_upgrade(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(f"{base(sim)}/ws/@@@lixo")
    assert refused.value.status == 400
    async with http.ws_connect(f"{base(sim)}/ws/nosuchcoin@depth") as silent:
        with pytest.raises(TimeoutError):  # accepted, and nothing ever comes
            await silent.receive(timeout=0.5)
