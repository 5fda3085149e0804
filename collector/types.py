"""What the collector's parts pass to each other.

Feeds (the exchange side) turn what they receive into :class:`Item` values: one encoded
record line (``booktape.codec.encode_*``) for one symbol, with the ids the chunk key
needs. They hand items to a :class:`RecordSink`, whose ``put`` waits when the bounded
queue behind it is full (backpressure reaches the socket reader, never the store).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)
class Item:
    """One record for one symbol's chunk (not frozen: made per frame, and a frozen
    dataclass takes 4x as long to build)."""

    symbol: str
    line: bytes  # one record line ending with b"\n" (booktape.codec.encode_*)
    recv_ns: int  # the record's local time ("t")
    first_id: int | None = None  # U of a depth event, for the chunk key
    last_id: int | None = None  # u of a depth event, for the chunk key
    channel: str = "depth"  # the key's channel: depth (Binance), book or prices (Coinbase)


class RecordSink(Protocol):
    """Where feeds put records; bounded, so ``put`` and ``put_many`` may wait."""

    async def put(self, item: Item) -> None: ...

    async def put_many(self, items: list[Item], *, checked: bool = False) -> None:
        """Put ``items`` in order (one wait for a whole batch of frames).

        ``checked``: the caller vouches that every item holds what
        :func:`collector.chunks.check_item` checks (one line ending with its only newline,
        receive time and ids in range) and names a stream whose names are valid, so the
        sink need not check them again (the connection's fast path, per frame)."""
