"""Binance's REST request-weight limit per IP, with 429 back-off and escalating 418 bans.

Pure: the caller passes the time (float seconds on any clock) with each request.

- Weight is counted in fixed windows aligned on the clock (Binance's ``REQUEST_WEIGHT``
  ``6000 / 1 MINUTE`` resets at each minute; ``X-MBX-USED-WEIGHT-1M`` shows the count).
- A request that would go over the limit gets 429 with ``Retry-After`` (seconds to the end
  of the window, or the configured value); its weight is not counted.
- Calling again before that Retry-After has passed is not backing off: the IP is banned
  (418, ``Retry-After`` = the ban). Bans double per offence, from ``ban_base`` (2 minutes
  on Binance) up to ``ban_max`` (3 days). Every request during a ban gets 418.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum


class Verdict(IntEnum):
    OK = 200
    TOO_MANY = 429
    BANNED = 418


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    used: int  # weight used in the current window, this request included if allowed
    retry_after: int  # seconds (0 when allowed)
    banned_until: float = 0.0  # clock time the ban ends (418 only)


@dataclass(slots=True)
class _IpState:
    window: int = -1
    used: int = 0
    backoff_until: float = 0.0  # after a 429: calls before this are offences
    offences: int = 0
    banned_until: float = 0.0


class WeightLimiter:
    """Per-IP request-weight accounting."""

    def __init__(
        self,
        limit: int,
        window_s: float,
        retry_after: float | None = None,
        ban_base: float = 120.0,
        ban_max: float = 3 * 86_400.0,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._retry_after = retry_after
        self._ban_base = ban_base
        self._ban_max = ban_max
        self._ips: dict[str, _IpState] = {}

    def used(self, ip: str, now: float) -> int:
        state = self._ips.get(ip)
        if state is None or state.window != math.floor(now / self.window_s):
            return 0
        return state.used

    def check(self, ip: str, weight: int, now: float) -> Decision:
        """Account one request of ``weight`` from ``ip`` at ``now``."""
        state = self._ips.setdefault(ip, _IpState())
        window = math.floor(now / self.window_s)
        if state.window != window:
            state.window, state.used = window, 0
        if state.banned_until > now:
            return Decision(Verdict.BANNED, state.used, _ceil(state.banned_until - now),
                            state.banned_until)
        if state.backoff_until > now:
            state.offences += 1
            ban = min(self._ban_base * 2 ** (state.offences - 1), self._ban_max)
            state.banned_until = now + ban
            state.backoff_until = 0.0
            return Decision(Verdict.BANNED, state.used, _ceil(ban), state.banned_until)
        if state.used + weight > self.limit:
            wait = (self._retry_after if self._retry_after is not None
                    else (window + 1) * self.window_s - now)
            state.backoff_until = now + wait
            return Decision(Verdict.TOO_MANY, state.used, _ceil(wait))
        state.used += weight
        return Decision(Verdict.OK, state.used, 0)


def _ceil(seconds: float) -> int:
    return max(1, math.ceil(seconds - 1e-9))
