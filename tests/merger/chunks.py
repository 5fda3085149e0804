"""Build raw chunks (codec + key layout) the way a collector writes them, for merger tests."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence

from booktape.binance import Market, parse_depth_header
from booktape.codec import DataRecord, Header, Msg, Snap
from booktape.errors import FrameError
from booktape.keys import NS_PER_DAY, RawKey
from booktape.objects import RecordWriter

LIMIT_PATH = "/api/v3/depth?symbol={symbol}&limit={limit}"


def ids_of(records: Sequence[DataRecord], market: Market) -> tuple[int, int]:
    """(first U, last u) of the depth events among ``records``; (0, 0) without any."""
    ids: list[tuple[int, int]] = []
    for record in records:
        if isinstance(record, Msg):
            try:
                head = parse_depth_header(record.raw, market)
            except FrameError:
                continue
            ids.append((head.first_id, head.last_id))
    return (ids[0][0], ids[-1][1]) if ids else (0, 0)


def chunk(
    exchange: str,
    symbol: str,
    source: str,
    records: Sequence[DataRecord],
    *,
    market: Market = Market.SPOT,
    header: Header | None = None,
    flush_every: int = 0,
) -> tuple[str, bytes]:
    """One object (key, bytes) holding ``records``; ``header`` overrides the matching one."""
    region, collector = source.split(".")
    first, last = ids_of(records, market)
    key = RawKey.from_recv(exchange, "depth", symbol, region, collector, records[0].t, first, last)
    out = io.BytesIO()
    writer = RecordWriter(
        out, header or Header(exchange, "depth", symbol, region, collector, host="test")
    )
    for n, record in enumerate(records, 1):
        writer.write_record(record)
        if flush_every and n % flush_every == 0:
            writer.flush()
    writer.close()
    return key.key, out.getvalue()


def rotate(records: Iterable[DataRecord], per_chunk: int) -> Iterator[list[DataRecord]]:
    """Split records into chunks of ``per_chunk``, and always at UTC midnight."""
    current: list[DataRecord] = []
    for record in records:
        if current and (
            len(current) >= per_chunk or current[0].t // NS_PER_DAY != record.t // NS_PER_DAY
        ):
            yield current
            current = []
        current.append(record)
    if current:
        yield current


def snap(t: int, body: bytes, symbol: str, *, limit: int = 1000, status: int = 200) -> Snap:
    request = LIMIT_PATH.format(symbol=symbol, limit=limit)
    return Snap(t, t - 1_000_000, "rest", request, body, {"status": status})
