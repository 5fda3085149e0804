"""A websockets client connection that hands the reader its data messages in batches.

``websockets`` parses every frame with a generator, wraps it in a ``Frame``, queues it in an
assembler and wakes one ``recv()`` per message: ~5 µs a frame before the collector does
anything with it. :class:`BatchConnection` keeps ``websockets`` for everything but the
incoming data frames: the opening handshake, pings and keep-alive, the closing handshake,
sending requests. After the handshake it parses the server's frames itself, straight from
the bytes ``data_received`` gets, and :meth:`BatchConnection.recv_batch` returns every
complete message received so far in one call.

RFC 6455, as a client with no extension negotiated (``compression=None``):

- server frames must be unmasked, with the reserved bits clear and a known opcode; a
  control frame must be final and carry at most 125 bytes; otherwise the connection is
  failed with 1002 (protocol error);
- text and binary messages may be fragmented (a first frame, continuation frames, the
  last one final) with control frames in between; a continuation without a start, or a
  new message inside a fragmented one, is a protocol error; a message over ``max_size``
  bytes fails the connection with 1009 (too big), checked from the frame headers before
  the payload is buffered;
- control frames (ping, pong, close) are handed, byte for byte, to the ``websockets``
  protocol, which answers pings, acknowledges pongs of its keep-alive and runs the closing
  handshake; from a close frame on, every further byte goes to it too (it discards them).

Messages are returned as bytes, text or binary (the positions of binary ones are listed
apart); text is not checked for UTF-8 here (the collector keeps a frame that is not JSON as a
``bad`` record). Reading is paused while ``max_queue`` messages wait for the reader, and
resumed when it takes them. After the last message, ``recv_batch`` raises
``ConnectionClosed`` as ``recv()`` does, once the TCP connection is closed (after
``close_timeout`` it is aborted).
"""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ProtocolError
from websockets.frames import CloseCode
from websockets.protocol import State

_HANDSHAKE, _FAST, _PASS = 0, 1, 2  # who parses the incoming bytes: see data_received


class BatchConnection(ClientConnection):
    """A client connection whose data messages are read with :meth:`recv_batch`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_arrival = 0.0  # loop time of the last bytes from the server
        self._mode = _HANDSHAKE
        self._head = bytearray()  # the handshake response so far (until its blank line)
        self._pieces: list[bytes] = []  # received bytes of an incomplete frame
        self._pending = 0  # their length
        self._need = 0  # bytes of that frame needed before parsing again
        self._frag: list[bytes] | None = None  # a fragmented message being received
        self._frag_binary = False
        self._frag_size = 0
        self._frames: list[bytes] = []  # complete messages not yet taken by the reader
        self._binary: list[int] = []  # indexes in _frames of binary messages
        self._ended = False  # no message will follow (close frame, failure, lost)
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    # --- the reader's side -----------------------------------------------------------

    async def recv_batch(self) -> tuple[list[bytes], list[int]]:
        """Every message received so far (waits for one), and which of them are binary.

        Raises ConnectionClosed after the last message once the connection is closed.
        """
        while not self._frames:
            if self._ended:
                await self._closed()
            waiter = self._waiter = self.loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        frames, binary = self._frames, self._binary
        self._frames, self._binary = [], []
        if self._paused:
            self._paused = False
            self.transport.resume_reading()
        return frames, binary

    async def _closed(self) -> None:
        lost = self.connection_lost_waiter
        if not lost.done():
            try:
                async with asyncio.timeout(self.close_timeout):
                    await asyncio.shield(lost)
            except TimeoutError:
                self.transport.abort()
                await asyncio.shield(lost)
        raise self.close_exc

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _end(self) -> None:
        self._ended = True
        self._wake()

    # --- incoming bytes --------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.last_arrival = self.loop.time()
        if self._mode == _FAST:
            self._parse(data)
        elif self._mode == _HANDSHAKE:
            self._handshake(data)
        else:
            super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._end()

    def _handshake(self, data: bytes) -> None:
        """Give ``websockets`` the HTTP response (up to its blank line: a 101 has no body)
        and parse what follows it ourselves."""
        head = self._head
        start = len(head)
        head += data
        end = head.find(b"\r\n\r\n", max(0, start - 3))
        if end < 0:
            super().data_received(data)
            return
        cut = end + 4 - start
        super().data_received(data[:cut])
        self._head = bytearray()
        rest = data[cut:]
        if self.protocol.state is State.OPEN:
            self._mode = _FAST
            if rest:
                self._parse(rest)
        else:  # refused: websockets reads the body and reports the failure
            self._mode = _PASS
            if rest:
                super().data_received(rest)

    def _parse(self, data: bytes) -> None:
        """Split ``data`` (after what is left of the previous call) into frames."""
        if self._pieces:
            self._pieces.append(data)
            self._pending += len(data)
            if self._pending < self._need:
                return
            data = b"".join(self._pieces)
            self._pieces = []
        frames = self._frames
        before = len(frames)
        max_size = self.protocol.max_message_size
        pos, n, need = 0, len(data), 0
        while True:
            left = n - pos
            if left < 2:
                need = 2
                break
            b0, b1 = data[pos], data[pos + 1]
            length = b1 & 0x7F
            if length < 126:
                start = pos + 2
            elif length == 126:
                if left < 4:
                    need = 4
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                start = pos + 4
            else:
                if left < 10:
                    need = 10
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                start = pos + 10
            if max_size is not None and length > max_size:
                self._fail(CloseCode.MESSAGE_TOO_BIG, f"frame of {length} bytes over {max_size}")
                break
            end = start + length
            if end > n:
                need = end - pos
                break
            if b0 == 0x81 and b1 < 0x80 and self._frag is None:  # a whole unmasked text message
                frames.append(data[start:end])
            elif not self._frame(b0, b1, data, pos, start=start, end=end):
                break  # failed or closed: the rest is not ours
            pos = end
        if self._mode == _FAST and pos < n:
            self._pieces = [data[pos:]]
            self._pending, self._need = n - pos, need
        if len(frames) > before:
            self._wake()
            high = self.max_queue_high
            if not self._paused and high is not None and len(frames) >= high:
                self._paused = True
                self.transport.pause_reading()

    def _frame(self, b0: int, b1: int, data: bytes, pos: int, *, start: int, end: int) -> bool:
        """Any frame but a whole text message; False when we stop parsing."""
        if b1 & 0x80:
            return self._fail(CloseCode.PROTOCOL_ERROR, "incorrect masking")
        if b0 & 0x70:
            return self._fail(CloseCode.PROTOCOL_ERROR, "reserved bits must be 0")
        fin, opcode = b0 & 0x80, b0 & 0x0F
        if opcode >= 8:
            if opcode > 10:
                return self._fail(CloseCode.PROTOCOL_ERROR, f"invalid opcode {opcode}")
            if not fin:
                return self._fail(CloseCode.PROTOCOL_ERROR, "fragmented control frame")
            if end - start > 125:
                return self._fail(CloseCode.PROTOCOL_ERROR, "control frame too long")
            super().data_received(data[pos:end])  # ping, pong or close: websockets' job
            if opcode == 8:
                self._mode = _PASS
                self._end()
                if end < len(data):
                    super().data_received(data[end:])
                return False
            return True
        if opcode in {1, 2}:
            if self._frag is not None:
                return self._fail(CloseCode.PROTOCOL_ERROR, "expected a continuation frame")
            if fin:
                if opcode == 2:
                    self._binary.append(len(self._frames))
                self._frames.append(data[start:end])
            else:
                self._frag, self._frag_binary = [data[start:end]], opcode == 2
                self._frag_size = end - start
            return True
        if opcode != 0:
            return self._fail(CloseCode.PROTOCOL_ERROR, f"invalid opcode {opcode}")
        if self._frag is None:
            return self._fail(CloseCode.PROTOCOL_ERROR, "unexpected continuation frame")
        self._frag.append(data[start:end])
        self._frag_size += end - start
        max_size = self.protocol.max_message_size
        if max_size is not None and self._frag_size > max_size:
            return self._fail(CloseCode.MESSAGE_TOO_BIG, f"message over {max_size} bytes")
        if fin:
            if self._frag_binary:
                self._binary.append(len(self._frames))
            self._frames.append(b"".join(self._frag))
            self._frag = None
        return True

    def _fail(self, code: CloseCode, reason: str) -> bool:
        """Fail the connection (RFC 6455 7.1.7): send a close frame, read nothing more."""
        self._mode = _PASS
        self._pieces = []
        self.set_connection_exc(ProtocolError(reason))
        if self.protocol.state is State.OPEN:
            self.protocol.fail(code, reason)
            try:
                self.send_data()
            except Exception as exc:  # as websockets' own data_received
                self.set_connection_exc(exc)
            if self.close_deadline is None and self.close_timeout is not None:
                self.close_deadline = self.loop.time() + self.close_timeout
        self._end()
        return False
