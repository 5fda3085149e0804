"""``--symbols ALL``: the market's trading symbols from exchangeInfo, and listing changes.

:func:`fetch_trading_symbols` asks ``GET {rest_base}{exchangeInfo path}`` (through the
feed's weight budget) for every symbol whose status is ``TRADING``;
:func:`diff_listing` says which symbols a new listing adds and which it removes (pure).
A 4xx other than 418/429 (a wrong ``--rest-url`` path, say) is fatal; anything else is a
:class:`ListingUnavailableError` the caller retries later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass

import aiohttp

from booktape.binance import SPECS, Market, exchange_info_weight, trading_symbols
from booktape.errors import BooktapeError, FrameError
from collector.backoff import Backoff, FeedFatalError
from collector.metrics import Metrics
from collector.snapshots import WeightBudget

log = logging.getLogger("collector.symbols")


class ListingUnavailableError(BooktapeError):
    """exchangeInfo could not be read this time (network, 5xx, 429/418, bad body)."""


@dataclass(frozen=True, slots=True)
class ListingChange:
    """What a new listing changes: symbols to subscribe and symbols to close (sorted)."""

    added: tuple[str, ...]
    removed: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


def diff_listing(current: Collection[str], listed: Collection[str]) -> ListingChange:
    """Compare the symbols recorded now with the symbols trading now."""
    now, new = set(current), set(listed)
    return ListingChange(tuple(sorted(new - now)), tuple(sorted(now - new)))


async def fetch_trading_symbols(
    *,
    market: Market,
    rest_base: str,
    session: aiohttp.ClientSession,
    budget: WeightBudget,
    metrics: Metrics,
    clock_ns: Callable[[], int],
    timeout_s: float = 30.0,
    retry: Backoff | None = None,
) -> list[str]:
    """Every ``TRADING`` symbol of ``market``; raises FeedFatalError, or
    ListingUnavailableError when ``retry`` is None (else waits ``retry``'s delays and
    tries again until it works).
    """
    while True:
        try:
            return await _fetch(
                market=market,
                rest_base=rest_base,
                session=session,
                budget=budget,
                metrics=metrics,
                clock_ns=clock_ns,
                timeout_s=timeout_s,
            )
        except ListingUnavailableError as exc:
            if retry is None:
                raise
            log.warning("listing unavailable", extra={"error": str(exc)})
            await asyncio.sleep(retry.next_delay())


async def _fetch(
    *,
    market: Market,
    rest_base: str,
    session: aiohttp.ClientSession,
    budget: WeightBudget,
    metrics: Metrics,
    clock_ns: Callable[[], int],
    timeout_s: float,
) -> list[str]:
    url = rest_base + SPECS[market].exchange_info_path
    await budget.acquire(exchange_info_weight(market))
    try:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with session.get(url, timeout=timeout) as response:
            body = await response.read()
            status, headers = response.status, response.headers
    except (aiohttp.ClientError, TimeoutError) as exc:
        metrics.rest_responses.labels("error").inc()
        raise ListingUnavailableError(f"exchangeInfo: {exc!r}") from exc
    budget.observe(status, headers, clock_ns())
    metrics.rest_responses.labels(str(status)).inc()
    if 400 <= status < 500 and status not in (418, 429):
        raise FeedFatalError(
            f"exchangeInfo at {url} answered HTTP {status}: {body[:200]!r}; check --rest-url"
        )
    if status != 200:
        raise ListingUnavailableError(f"exchangeInfo answered HTTP {status}")
    try:
        symbols = trading_symbols(body)
    except FrameError as exc:
        raise ListingUnavailableError(str(exc)) from exc
    log.info("listing read", extra={"symbols": len(symbols), "market": str(market)})
    return symbols
