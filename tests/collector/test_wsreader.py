"""collector.wsreader: the batch frame reader against a raw RFC 6455 server on loopback.

The server here is hand-written (asyncio streams, frames built byte by byte), so the test
does not trust the code under test nor websockets' parser: what it sent is the truth.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from collector.wsreader import BatchConnection

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CONT, CLOSE, PING, PONG = 1, 2, 0, 8, 9, 10


def frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = False
) -> bytes:
    """One frame as a server would write it (unmasked unless ``mask``)."""
    head = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    m = 0x80 if mask else 0
    if n < 126:
        out = struct.pack("!BB", head, m | n)
    elif n < 1 << 16:
        out = struct.pack("!BBH", head, m | 126, n)
    else:
        out = struct.pack("!BBQ", head, m | 127, n)
    if mask:
        key = b"\x01\x02\x03\x04"
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        out += key
    return out + payload


async def read_client_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(opcode, unmasked payload) of the next frame from the client."""
    b0, b1 = await reader.readexactly(2)
    assert b1 & 0x80, "a client frame must be masked"
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    key = await reader.readexactly(4)
    data = await reader.readexactly(n)
    return b0 & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(data))


Scenario = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def server(scenario: Scenario, *, first: bytes = b"") -> AsyncIterator[str]:
    """A websocket server on 127.0.0.1 that runs ``scenario`` after the handshake;
    ``first`` is written together with the 101 response."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n" + first
        )
        try:
            await scenario(reader, writer)
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/stream"
    finally:
        srv.close()
        await srv.wait_closed()


async def read_all(
    url: str, *, max_size: int = 1 << 20, max_queue: int = 16, slow: bool = False
) -> tuple[list[bytes], list[int], ConnectionClosed]:
    """Every message until the connection closes, the indexes of binary ones, the close."""
    messages: list[bytes] = []
    binary: list[int] = []
    async with asyncio.timeout(10):
        ws = await connect(
            url, create_connection=BatchConnection, compression=None, max_size=max_size,
            max_queue=max_queue, close_timeout=2, ping_interval=None,
        )  # fmt: skip
        assert isinstance(ws, BatchConnection)
        while True:
            try:
                got, bins = await ws.recv_batch()
            except ConnectionClosed as exc:
                return messages, binary, exc
            binary += [len(messages) + i for i in bins]
            messages += got
            if slow:
                await asyncio.sleep(0.01)


async def test_messages_arrive_whole_in_order_however_framed_and_split() -> None:
    big = b"B" * 70_000  # 64-bit length
    mid = b'{"m":"' + b"x" * 294 + b'"}'  # 16-bit length
    seen: list[tuple[int, bytes]] = []

    async def scenario(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            frame(TEXT, b"ab", fin=False) + frame(PING, b"p1") + frame(CONT, b"cd", fin=False)
        )
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(frame(PONG, b"unsolicited") + frame(CONT, b"ef") + frame(BINARY, b"\x00\xff"))
        writer.write(frame(TEXT, big))
        for i, byte in enumerate(frame(TEXT, mid)):  # one byte at a time
            writer.write(bytes([byte]))
            if i % 50 == 0:
                await writer.drain()
                await asyncio.sleep(0.001)
        writer.write(
            frame(BINARY, b"x", fin=False) + frame(CONT, b"y", fin=False) + frame(CONT, b"z")
        )
        writer.write(frame(TEXT, b"") + frame(CLOSE, struct.pack("!H", 1000) + b"bye"))
        writer.write(frame(TEXT, b"after the close: never delivered"))
        await writer.drain()
        while True:
            opcode, data = await read_client_frame(reader)
            seen.append((opcode, data))
            if opcode == CLOSE:
                return

    async with server(scenario, first=frame(TEXT, b"first")) as url:
        messages, binary, closed = await read_all(url)

    assert messages == [b"first", b"abcdef", b"\x00\xff", big, mid, b"xyz", b""]
    assert binary == [2, 5]
    assert (PONG, b"p1") in seen  # websockets answered the ping
    assert seen[-1] == (CLOSE, struct.pack("!H", 1000) + b"bye")  # and the close
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1000


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (frame(TEXT, b"masked", mask=True), 1002),
        (frame(TEXT, b"rsv", rsv=0x40), 1002),
        (frame(3, b"opcode 3"), 1002),
        (frame(CONT, b"no start"), 1002),
        (frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"), 1002),
        (frame(PING, b"p", fin=False), 1002),
        (frame(PING, b"p" * 126), 1002),
        (frame(TEXT, b"t" * 1001), 1009),
        (frame(TEXT, b"t" * 600, fin=False) + frame(CONT, b"t" * 600), 1009),
    ],
)
async def test_a_protocol_violation_fails_the_connection(bad: bytes, code: int) -> None:
    seen: list[tuple[int, bytes]] = []

    async def scenario(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(TEXT, b"before") + bad + frame(TEXT, b"after"))
        await writer.drain()
        seen.append(await read_client_frame(reader))

    async with server(scenario) as url:
        messages, _, closed = await read_all(url, max_size=1000)

    assert messages == [b"before"]
    assert seen[0][0] == CLOSE
    assert struct.unpack("!H", seen[0][1][:2])[0] == code
    assert closed.rcvd is None  # failed by us, not closed by the server
    assert closed.sent is not None
    assert closed.sent.code == code


async def test_reading_pauses_for_a_slow_reader_and_loses_nothing() -> None:
    sent = [b'{"n":%d,"pad":"%s"}' % (i, b"p" * (i % 300)) for i in range(3000)]

    async def scenario(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for message in sent:
            writer.write(frame(TEXT, message))
        writer.write(frame(CLOSE, struct.pack("!H", 1001)))
        await writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await read_client_frame(reader)

    async with server(scenario) as url:
        messages, binary, closed = await read_all(url, max_queue=8, slow=True)

    assert messages == sent
    assert binary == []
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1001


async def test_a_server_that_just_drops_the_connection_ends_it_after_the_messages() -> None:
    async def scenario(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(TEXT, b"one") + frame(TEXT, b"two") + frame(TEXT, b"half")[:4])
        await writer.drain()

    async with server(scenario) as url:
        messages, _, closed = await read_all(url)

    assert messages == [b"one", b"two"]
    assert closed.rcvd is None
    assert closed.sent is None
