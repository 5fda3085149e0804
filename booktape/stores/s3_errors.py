"""How S3Store treats failures: which are transient, how they are retried, what they become.

Pure pieces, tested without a server: :func:`is_retryable` says whether an error is worth
another attempt (connection errors, timeouts, 5xx, throttling); :class:`RetryPolicy` gives
capped, jittered exponential delays; :func:`call_with_retries` applies them with an
injectable ``sleep`` and random source; :func:`translate` maps what is left to the
:mod:`booktape.errors` tree.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from botocore import exceptions as bex

from booktape.errors import (
    ConfigError,
    ObjectNotFoundError,
    StoreAccessError,
    StoreError,
    StoreIntegrityError,
    StoreUnavailableError,
)

T = TypeVar("T")
log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_RETRY_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequests",
    "RequestLimitExceeded", "BandwidthLimitExceeded", "RequestTimeout", "RequestTimeoutException",
    "InternalError", "ServiceUnavailable",
    "IncompleteBody",  # the upload was cut short in transit: sending it again is the cure
})  # fmt: skip
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_ACCESS_CODES = frozenset({
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
    "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "403",
})  # fmt: skip
_INTEGRITY_CODES = frozenset({
    "BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch",
})  # fmt: skip
_TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    bex.EndpointConnectionError,
    bex.ConnectTimeoutError,
    bex.ProxyConnectionError,
    bex.HTTPClientError,  # ReadTimeoutError, ConnectionClosedError, ResponseStreamingError
    bex.IncompleteReadError,
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    ConnectionError,
    TimeoutError,  # also asyncio.TimeoutError
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped, jittered exponential backoff: attempt ``n`` failed -> wait about base*2^(n-1)."""

    max_attempts: int = 6
    base_s: float = 0.2
    cap_s: float = 5.0
    # One attempt may not take longer than this: a frozen server otherwise holds a PUT
    # forever (botocore waits for "100 Continue" outside aiohttp's read timeout).
    attempt_timeout_s: float | None = 120.0

    def __post_init__(self) -> None:
        bad_timeout = self.attempt_timeout_s is not None and self.attempt_timeout_s <= 0
        if self.max_attempts < 1 or self.base_s < 0 or self.cap_s < self.base_s or bad_timeout:
            raise ConfigError(
                f"invalid retry policy {self}: need max_attempts >= 1, 0 <= base <= cap"
            )

    def delay_s(self, failed_attempts: int, rand: float) -> float:
        """Wait before the next attempt; ``rand`` in [0, 1) spreads it over [d/2, d)."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** (failed_attempts - 1))
        return ceiling * (0.5 + rand / 2)


def error_code(exc: BaseException) -> tuple[str, int | None]:
    """The S3 error code and HTTP status of a botocore ClientError (else ``("", None)``)."""
    if not isinstance(exc, bex.ClientError):
        return "", None
    response: Mapping[str, Any] = exc.response or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code, status if isinstance(status, int) else None


def is_retryable(exc: BaseException) -> bool:
    """True for transient failures: connection errors, timeouts, 5xx, throttling."""
    if isinstance(exc, bex.ClientError):
        code, status = error_code(exc)
        return code in _RETRY_CODES or status in _RETRY_STATUS
    if isinstance(exc, bex.SSLError):
        return False  # certificate problems do not heal by retrying
    return isinstance(exc, _TRANSIENT_EXCEPTIONS)


async def call_with_retries(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    what: str,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
) -> T:
    """Await ``fn()``, retrying per :func:`is_retryable` and ``policy``.

    A non-retryable error is re-raised as is; running out of attempts raises
    StoreUnavailableError from the last error.
    """
    for attempt in range(1, policy.max_attempts + 1):
        try:
            async with asyncio.timeout(policy.attempt_timeout_s):
                return await fn()
        except Exception as exc:
            if not is_retryable(exc):
                raise
            if attempt == policy.max_attempts:
                raise StoreUnavailableError(
                    f"{what}: still failing after {attempt} attempts: {_describe(exc)}"
                ) from exc
            delay = policy.delay_s(attempt, rand())
            log.debug(  # the caller reports outages; one line per retry would flood
                "store request failed, retrying",
                extra={"what": what, "attempt": attempt, "delay_s": round(delay, 3),
                       "error": _describe(exc)},
            )  # fmt: skip
            await sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _describe(exc: BaseException) -> str:
    code, status = error_code(exc)
    if code or status:
        return f"{code or 'HTTP'} ({status})"
    return f"{type(exc).__name__}: {exc}"


def translate(exc: Exception, what: str) -> StoreError:
    """Map a non-retryable botocore error to the most specific StoreError."""
    code, status = error_code(exc)
    if isinstance(exc, bex.ClientError):
        detail = f"{what}: {code or 'HTTP error'} ({status})"
        if code == "NoSuchBucket":
            return StoreError(f"{detail}: the bucket does not exist")
        if code in _NOT_FOUND_CODES or status == 404:
            return ObjectNotFoundError(f"{what}: no such object")
        if code in _ACCESS_CODES or status == 403:
            return StoreAccessError(f"{detail}: check the AWS credentials and permissions")
        if code in _INTEGRITY_CODES:
            return StoreIntegrityError(f"{detail}: the server received different bytes")
        return StoreError(detail)
    if isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
        return StoreAccessError(
            f"{what}: no usable AWS credentials (set them in the environment, the shared "
            "config/credentials files or an instance role)"
        )
    if isinstance(exc, bex.CredentialRetrievalError):
        return StoreAccessError(f"{what}: {exc}")
    return StoreError(f"{what}: {type(exc).__name__}: {exc}")
