"""Reconnecting politely: "retryable or fatal?", capped jittered backoff, attempt pacing.

- :func:`classify_connect_error` is the one place that decides whether a failure to open
  (or keep) a websocket connection is worth another attempt. Network errors, timeouts,
  5xx, 429 and close codes are; an upgrade refused with any other 4xx (HTTP 400 for a bad
  stream name, 404 for a wrong path) is a bug or a configuration mistake and raises
  :class:`FeedFatalError` so that the service exits instead of looping forever.
- :class:`Backoff`: exponential from ``base_s`` to ``cap_s`` with "full jitter" (a uniform
  draw in ``[d/2, d]``), reset after a connection proved healthy.
- :class:`AttemptPacer`: a sliding-window limit on connection attempts for the whole
  process (Binance: 300 per 5 minutes per IP; the settings keep a margin under it).
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from booktape.errors import BooktapeError

ATTEMPT_WINDOW_S = 300.0  # Binance counts connection attempts per 5 minutes


class FeedFatalError(BooktapeError):
    """The exchange refused what we asked for in a way retrying cannot fix (exit non-zero)."""


@dataclass(frozen=True, slots=True)
class Retry:
    """A retryable failure; ``after_s`` is the server's Retry-After, if it sent one."""

    reason: str
    after_s: float | None = None


def _retry_after(status_headers: object) -> float | None:
    get = getattr(status_headers, "get", None)
    value = get("Retry-After") if callable(get) else None
    if isinstance(value, str) and value.strip().isdigit():
        return float(value.strip())
    return None


def classify_connect_error(exc: BaseException) -> Retry:
    """Decide what a connection failure means: a :class:`Retry`, or raise FeedFatalError.

    Anything that is not a network, protocol or timeout error (a ``TypeError``, say) is
    not caught by the caller and so is never retried.
    """
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if status in (408, 418, 429) or status >= 500:
            return Retry(f"HTTP {status}", _retry_after(exc.response.headers))
        body = exc.response.body[:200].decode("utf-8", "replace") if exc.response.body else ""
        raise FeedFatalError(
            f"websocket upgrade refused with HTTP {status} ({body.strip() or 'no body'}):"
            " check --ws-url and the symbols"
        ) from exc
    if isinstance(exc, ConnectionClosed):
        code = exc.rcvd.code if exc.rcvd is not None else 1006
        return Retry(f"closed {code}")
    if isinstance(exc, InvalidHandshake | OSError | TimeoutError | asyncio.TimeoutError):
        return Retry(f"{type(exc).__name__}: {exc}")
    raise exc


def fatal_in(group: BaseExceptionGroup[BaseException]) -> FeedFatalError | None:
    """The first FeedFatalError in a (nested) exception group from a TaskGroup."""
    for exc in group.exceptions:
        if isinstance(exc, FeedFatalError):
            return exc
        if isinstance(exc, BaseExceptionGroup) and (found := fatal_in(exc)) is not None:
            return found
    return None


class Backoff:
    """Capped exponential backoff with jitter: ``base_s * 2**n`` up to ``cap_s``."""

    def __init__(
        self, base_s: float = 0.5, cap_s: float = 30.0, rand: random.Random | None = None
    ) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.failures = 0
        self._rand = rand or random.Random()

    def next_delay(self) -> float:
        """The wait before the next attempt; each call counts one more failure."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(self.failures, 30))
        self.failures += 1
        return self._rand.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.failures = 0


class AttemptPacer:
    """At most ``limit`` connection attempts in any ``window_s`` (monotonic clock)."""

    def __init__(
        self,
        limit: int,
        window_s: float = ATTEMPT_WINDOW_S,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._now = monotonic or (lambda: asyncio.get_running_loop().time())
        self._attempts: deque[float] = deque()
        self._lock = asyncio.Lock()

    def wait_s(self) -> float:
        """How long the next attempt has to wait (0 when it may go now)."""
        now = self._now()
        while self._attempts and self._attempts[0] <= now - self.window_s:
            self._attempts.popleft()
        if len(self._attempts) < self.limit:
            return 0.0
        return self._attempts[0] + self.window_s - now

    async def acquire(self) -> None:
        """Wait for a free attempt in the window and count it."""
        async with self._lock:
            while True:
                wait = self.wait_s()
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            self._attempts.append(self._now())
