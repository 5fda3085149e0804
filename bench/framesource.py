"""A loopback Binance stand-in that pushes depth frames as fast as a client reads them.

Raw asyncio, no websockets library on the sending side: after a real HTTP/1.1 upgrade
handshake it writes pre-encoded, unmasked text frames in large batches, so the source is
never the bottleneck of a collector benchmark. It speaks just enough of Binance's spot
protocol for the collector:

- ``GET /stream?streams=<sym>@depth@100ms/...`` (combined streams) upgrades to a websocket
  that carries ``{"stream":..,"data":{depthUpdate}}`` frames for its symbols, round robin;
  client pings get pongs, ``SUBSCRIBE``/``UNSUBSCRIBE`` get ``{"result":null,"id":..}``,
  a close frame is answered and ends the connection;
- ``GET /api/v3/depth?symbol=..`` answers a REST snapshot (keep-alive).

The payloads are real spot depth frames (sizes and level counts as recorded), renamed per
symbol. With ``--frames recorded`` (the default) the symbols take, in turn, one of the five
spot streams recorded in ../shared/data/real: BTCUSDT (hftbacktest, ~1.6 kB a frame) and
NKNUSDT, BLZETH, LRCBTC, RUNEEUR (cryptofeed's sample, ~170-210 bytes with the combined
wrapper), so one symbol in five sends BTCUSDT-sized frames (a heavier mix than Binance's
~1,500 spot symbols, most of which are far quieter than BTCUSDT); with ``--frames btcusdt``
every symbol sends BTCUSDT's.

With ``--rate`` the frames due go out together at each ``--tick`` of the wall clock (0.1 s
by default), at the same instants on every connection. That is how Binance sends
``@depth@100ms`` streams: in cryptofeed's capture, every symbol's event time ``E`` has the
same remainder modulo 100 ms (drifting 68 -> 72 ms over 30 s), and two symbols' frames on
one connection arrive within 0.3 ms of each other. Without ``--rate`` the source sends as
fast as the client reads.

Update ids are continuous per connection and track the clock in microseconds (``u =
max(U, now_us)``), and a new connection starts 10 s in the past: a rotation's successor
therefore always covers the old connection's last id, and a snapshot (``lastUpdateId =
now_us``) is always fresh.

    python -m bench.framesource [--rate FRAMES_PER_S_PER_CONNECTION] [--tick 0.1]
        [--frames recorded|btcusdt]
    # prints {"port": N}
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import re
import struct
import sys
import time
from collections.abc import Iterator
from itertools import cycle
from urllib.parse import parse_qs, urlsplit

from bench.common import recorded_depth, recorded_spot_depth

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TAIL = re.compile(rb'"u":\d+')
_BATCH_BYTES = 256 * 1024
_BACKFILL_US = 10_000_000  # a new connection's first event starts this far in the past
TICK_S = 0.1  # with a rate cap: Binance's @depth@100ms tick (see the module docstring)


def ws_header(length: int, opcode: int = 0x1) -> bytes:
    """The header of one unmasked, final server frame."""
    if length < 126:
        return struct.pack("!BB", 0x80 | opcode, length)
    if length < 1 << 16:
        return struct.pack("!BBH", 0x80 | opcode, 126, length)
    return struct.pack("!BBQ", 0x80 | opcode, 127, length)


def templates(frames: list[bytes]) -> list[bytes]:
    """What follows ``"u":<id>`` in each recorded event: its level lists and closing brace."""
    tails = []
    for frame in frames:
        match = _TAIL.search(frame)
        if match is not None:
            tails.append(frame[match.end() :] + b"}")  # + the combined wrapper's brace
    return tails


FRAME_MIXES = ("recorded", "btcusdt")


def frame_pools(mix: str) -> list[list[bytes]]:
    """The tails (see :func:`templates`) of each recorded stream the symbols take in turn."""
    if mix == "btcusdt":
        return [templates(recorded_depth()[0])]
    if mix == "recorded":
        return [templates(frames) for frames in recorded_spot_depth().values()]
    raise ValueError(f"unknown frame mix {mix!r}: one of {FRAME_MIXES}")


class Streams:
    """The frames of one connection: its symbols round robin, ids continuous per symbol;
    symbol ``i`` (in the order added) replays pool ``i mod len(pools)`` in a loop."""

    def __init__(self, pools: list[list[bytes]], symbols: list[str]) -> None:
        self._pools = pools
        self._added = 0
        self.symbols: dict[str, tuple[bytes, bytes, Iterator[bytes]]] = {}
        self._last: dict[str, int] = {}
        self.add(symbols)

    def add(self, symbols: list[str]) -> None:
        start = time.time_ns() // 1000 - _BACKFILL_US
        for symbol in symbols:
            if symbol in self.symbols:
                continue
            lower = symbol.lower().encode()
            prefix = b'{"stream":"%s@depth@100ms","data":{"e":"depthUpdate","E":' % lower
            mid = b',"s":"%s","U":' % symbol.upper().encode()
            self.symbols[symbol] = (prefix, mid, cycle(self._pools[self._added % len(self._pools)]))
            self._added += 1
            self._last[symbol] = start

    def remove(self, symbols: list[str]) -> None:
        for symbol in symbols:
            self.symbols.pop(symbol, None)
            self._last.pop(symbol, None)

    def batch(self, max_frames: int) -> tuple[bytes, int]:
        """Up to ``_BATCH_BYTES`` of encoded frames (at most ``max_frames``)."""
        now_us = time.time_ns() // 1000
        event_ms = now_us // 1000
        parts: list[bytes] = []
        size = frames = 0
        last = self._last
        while size < _BATCH_BYTES and frames < max_frames:
            for symbol, (prefix, mid, tails) in self.symbols.items():
                first = last[symbol] + 1
                final = first if first > now_us else now_us
                last[symbol] = final
                body = b'%s%d%s%d,"u":%d%s' % (prefix, event_ms, mid, first, final, next(tails))
                parts.append(ws_header(len(body)))
                parts.append(body)
                size += len(body)
                frames += 1
            if not self.symbols:
                break
        return b"".join(parts), frames


class FrameSource:
    """The server; ``rate`` caps frames per second per connection (0: as fast as read)."""

    def __init__(self, rate: float = 0.0, frames: str = "recorded", tick_s: float = TICK_S) -> None:
        self._pools = frame_pools(frames)
        snapshot = recorded_depth()[1]
        self._snapshot_rest = snapshot[re.match(rb'\{"lastUpdateId":\d+', snapshot).end() :]  # type: ignore[union-attr]
        self.rate = rate
        self.tick_s = tick_s
        self.sent = 0

    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
        return await asyncio.start_server(self._handle, host, port, limit=1 << 22)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                path = request_line.split(" ")[1]
                headers = {}
                for line in header_lines:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                if headers.get("upgrade", "").lower() == "websocket":
                    await self._websocket(path, headers, reader, writer)
                    return
                self._rest(path, writer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _rest(self, path: str, writer: asyncio.StreamWriter) -> None:
        url = urlsplit(path)
        if url.path.endswith("/depth") and parse_qs(url.query).get("symbol"):
            status = b"200 OK"
            body = b'{"lastUpdateId":%d%s' % (time.time_ns() // 1000, self._snapshot_rest)
        else:
            status, body = b"404 Not Found", b'{"code":-1,"msg":"not served by bench"}'
        writer.write(
            b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"X-MBX-USED-WEIGHT-1M: 1\r\n\r\n%s" % (status, len(body), body)
        )

    async def _websocket(
        self,
        path: str,
        headers: dict[str, str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        key = headers["sec-websocket-key"].encode()
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())  # RFC 6455's accept key
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept
        )
        query = parse_qs(urlsplit(path).query).get("streams", [""])[0]
        symbols = [s.split("@", 1)[0].upper() for s in query.split("/") if s]
        streams = Streams(self._pools, symbols)
        writer.transport.set_write_buffer_limits(high=1 << 20)
        pump = asyncio.create_task(self._pump(streams, writer))
        try:
            await self._read_client(streams, reader, writer)
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await pump

    async def _pump(self, streams: Streams, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        start, sent = loop.time(), 0
        while True:
            limit = 1 << 30
            if self.rate > 0:
                due = int((loop.time() - start) * self.rate) - sent
                if due <= 0:  # the rest at the next tick of the wall clock (all connections')
                    await asyncio.sleep(self.tick_s - time.time() % self.tick_s)
                    continue
                limit = due
            data, frames = streams.batch(limit)
            sent += frames
            self.sent += frames
            writer.write(data)
            await writer.drain()

    async def _read_client(
        self, streams: Streams, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Client frames are masked; answer pings, requests and the close."""
        while True:
            b0, b1 = await reader.readexactly(2)
            length = b1 & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await reader.readexactly(8))
            mask = await reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
            raw = await reader.readexactly(length)
            payload = bytes(c ^ mask[i % 4] for i, c in enumerate(raw))
            opcode = b0 & 0x0F
            if opcode == 0x9:  # ping
                writer.write(ws_header(len(payload), 0xA) + payload)
            elif opcode == 0x8:  # close
                writer.write(ws_header(len(payload[:2]), 0x8) + payload[:2])
                await writer.drain()
                return
            elif opcode == 0x1:
                request = json.loads(payload)
                names = [p.split("@", 1)[0].upper() for p in request.get("params", [])]
                if request.get("method") == "SUBSCRIBE":
                    streams.add(names)
                elif request.get("method") == "UNSUBSCRIBE":
                    streams.remove(names)
                reply = b'{"result":null,"id":%d}' % int(request.get("id", 0))
                writer.write(ws_header(len(reply)) + reply)


async def _main(rate: float, frames: str, tick_s: float) -> None:
    source = FrameSource(rate, frames, tick_s)
    server = await source.serve()
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": port}), flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.framesource", description=__doc__)
    p.add_argument("--rate", type=float, default=0.0, help="frames/s per connection, 0: max")
    p.add_argument("--frames", choices=FRAME_MIXES, default="recorded", help="the frame mix")
    p.add_argument(
        "--tick", type=float, default=TICK_S, help="with --rate: send what is due every TICK s"
    )
    args = p.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.rate, args.frames, args.tick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
