"""Binance's per-IP limits: REST request weight (429, then escalating 418 bans) and
WebSocket connection attempts.

Pure: the caller passes the time (float seconds on any clock) with each request.

Request weight (:class:`WeightLimiter`):

- Weight is counted in fixed windows aligned on the clock (Binance's ``REQUEST_WEIGHT``
  ``6000 / 1 MINUTE`` resets at each minute; ``X-MBX-USED-WEIGHT-1M`` shows the count).
- A request that would go over the limit gets 429 with ``Retry-After`` (seconds to the end
  of the window, or the configured value); its weight is not counted.
- Calling again before that Retry-After has passed is not backing off: the IP is banned
  (418, ``Retry-After`` = the ban). Bans double per offence, from ``ban_base`` (2 minutes
  on Binance) up to ``ban_max`` (3 days). Every request during a ban gets 418.

Connection attempts (:class:`AttemptLimiter`): at most ``limit`` WebSocket connection
attempts per IP in any sliding window of ``window_s`` (Binance: 300 per 5 minutes). An
attempt beyond it is refused, with the seconds until the oldest counted attempt leaves the
window; refused attempts are not counted, so that wait is exact.
"""

from __future__ import annotations

import math
from collections import deque
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
    new: bool = False  # this request started a back-off (429) or a ban (418): worth a log


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
            return Decision(
                Verdict.BANNED, state.used, _ceil(state.banned_until - now), state.banned_until
            )
        if state.backoff_until > now:
            state.offences += 1
            ban = min(self._ban_base * 2 ** (state.offences - 1), self._ban_max)
            state.banned_until = now + ban
            state.backoff_until = 0.0
            return Decision(Verdict.BANNED, state.used, _ceil(ban), state.banned_until, new=True)
        if state.used + weight > self.limit:
            wait = (
                self._retry_after
                if self._retry_after is not None
                else (window + 1) * self.window_s - now
            )
            new = state.backoff_until <= now
            state.backoff_until = now + wait
            return Decision(Verdict.TOO_MANY, state.used, _ceil(wait), new=new)
        state.used += weight
        return Decision(Verdict.OK, state.used, 0)


class AttemptLimiter:
    """Per-IP WebSocket connection attempts in a sliding window."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._attempts: dict[str, deque[float]] = {}
        self._refusing: set[str] = set()  # IPs refused since their last admitted attempt

    def admit(self, ip: str, now: float) -> tuple[int, bool]:
        """Count an attempt: ``(0, False)`` if admitted, else ``(retry_after_s, first)``
        where ``first`` is True for the first refusal since the IP was last admitted.
        """
        attempts = self._attempts.setdefault(ip, deque())
        while attempts and attempts[0] <= now - self.window_s:
            attempts.popleft()
        if len(attempts) < self.limit:
            attempts.append(now)
            self._refusing.discard(ip)
            return 0, False
        first = ip not in self._refusing
        self._refusing.add(ip)
        return _ceil(attempts[0] + self.window_s - now), first


def _ceil(seconds: float) -> int:
    return max(1, math.ceil(seconds - 1e-9))
