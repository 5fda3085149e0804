"""Stream names and diff-depth batching per connection (pure).

A connection's subscription to ``<sym>@depth@100ms`` (or ``<sym>@depth``, 1000 ms) is a
:class:`DepthBatcher`: at the end of each of its windows it aggregates every change since
its previous event (the last value per level), exactly as Binance does. Each connection has
its own window phase, so two connections see different ``U``/``u`` boundaries over the same
update ids; a window without changes sends nothing; the first event after subscribing
starts at the first change after the subscription.

Stream names follow Binance's acceptance rules: a syntactically invalid name is refused
(``Invalid request: invalid stream``); a well-formed name for an unknown symbol or an
unsupported stream type is accepted and simply never delivers anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from simulator.market import SymbolModel
from simulator.wire import LevelFormatter, combined, depth_event

_STREAM = re.compile(r"^(?:[A-Za-z0-9_.\-]+|![A-Za-z0-9_]+)(?:@[A-Za-z0-9_]+)+$")
DEPTH_INTERVALS_MS = {"depth": 1000, "depth@100ms": 100}


def is_valid_stream_name(name: str) -> bool:
    """Whether Binance accepts the name's syntax (not whether it delivers anything)."""
    return len(name) <= 200 and _STREAM.match(name) is not None


@dataclass(frozen=True, slots=True)
class DepthStream:
    """A diff-depth stream: ``symbol`` upper case, ``interval_ms`` 100 or 1000."""

    name: str
    symbol: str
    interval_ms: int


def parse_depth_stream(name: str) -> DepthStream | None:
    """The diff-depth stream a name denotes, or None (other stream types, bad case)."""
    symbol, _, kind = name.partition("@")
    if not symbol or symbol != symbol.lower() or kind not in DEPTH_INTERVALS_MS:
        return None
    return DepthStream(name, symbol.upper(), DEPTH_INTERVALS_MS[kind])


class SlowConsumerError(Exception):
    """A connection's cursor fell out of the change log: it could not keep up."""


class DepthBatcher:
    """One connection's subscription to one diff-depth stream of the market model."""

    __slots__ = ("_combined", "_fmt", "_model", "cursor", "pending_skip", "stream")

    def __init__(
        self, model: SymbolModel, fmt: LevelFormatter, stream: DepthStream, combined_frames: bool
    ) -> None:
        self.stream = stream
        self._model = model
        self._fmt = fmt
        self._combined = combined_frames
        self.cursor = model.update_id  # the last id this connection has been sent
        self.pending_skip = 0  # changes to leave out of the next event (a fault)

    def set_combined(self, combined_frames: bool) -> None:
        self._combined = combined_frames

    def build(self, event_ms: int) -> bytes | None:
        """The frame for the window ending now, or None when nothing changed.

        Raises :class:`SlowConsumerError` when the changes since the cursor are gone.
        """
        model = self._model
        head = model.update_id
        if head <= self.cursor:
            return None
        try:
            keys, qtys = model.changes(self.cursor, head)
        except LookupError as exc:
            raise SlowConsumerError(str(exc)) from exc
        first = self.cursor + 1
        if self.pending_skip:
            skip = min(self.pending_skip, len(keys) - 1)
            if skip <= 0:  # a single change: leave it out and skip on in the next window
                self.pending_skip -= len(keys)
                self.cursor = head
                return None
            self.pending_skip -= skip
            keys, qtys = keys[skip:], qtys[skip:]
            first += skip
        latest = dict(zip(keys, qtys, strict=True))
        bids = sorted(((k >> 1, q) for k, q in latest.items() if not k & 1), reverse=True)
        asks = sorted((k >> 1, q) for k, q in latest.items() if k & 1)
        self.cursor = head
        payload = depth_event(
            self._fmt,
            symbol=model.spec.symbol,
            event_ms=event_ms,
            first_id=first,
            last_id=head,
            bids=bids,
            asks=asks,
        )
        return combined(self.stream.name, payload) if self._combined else payload
