"""The S3 failure policy, without a server: what is retried, how long we wait, what it becomes."""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp
import pytest
from botocore import exceptions as bex

from booktape.errors import (
    ConfigError,
    ObjectNotFoundError,
    StoreAccessError,
    StoreError,
    StoreIntegrityError,
    StoreUnavailableError,
)
from booktape.stores import RetryPolicy
from booktape.stores.s3 import multipart_etag
from booktape.stores.s3_errors import call_with_retries, is_retryable, translate


def client_error(code: str, status: int) -> bex.ClientError:
    response = {
        "Error": {"Code": code, "Message": "from the server"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return bex.ClientError(response, "PutObject")


class FakeClock:
    """Records the waits instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


class Flaky:
    """Raises the given errors in turn, then returns "done"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


@pytest.mark.parametrize(
    "exc",
    [
        client_error("SlowDown", 503),
        client_error("InternalError", 500),
        client_error("", 502),
        client_error("RequestTimeout", 400),
        client_error("Throttling", 400),
        client_error("IncompleteBody", 400),
        client_error("", 429),
        bex.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        bex.ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"),
        bex.ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        bex.ConnectionClosedError(endpoint_url="http://127.0.0.1:1"),
        bex.ResponseStreamingError(error="reset"),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("truncated"),
        TimeoutError(),
        ConnectionResetError(),
    ],
    ids=lambda e: (
        type(e).__name__
        + (f"-{e.response['Error']['Code']}" if isinstance(e, bex.ClientError) else "")
    ),
)
def test_transient_failures_are_retryable(exc: Exception) -> None:
    assert is_retryable(exc)


@pytest.mark.parametrize(
    "exc",
    [
        client_error("AccessDenied", 403),
        client_error("SignatureDoesNotMatch", 403),
        client_error("NoSuchKey", 404),
        client_error("BadDigest", 400),
        client_error("NotImplemented", 501),
        bex.NoCredentialsError(),
        bex.SSLError(endpoint_url="https://x", error="certificate verify failed"),
        bex.ParamValidationError(report="bad"),
        ValueError("a bug"),
    ],
    ids=lambda e: (
        type(e).__name__
        + (f"-{e.response['Error']['Code']}" if isinstance(e, bex.ClientError) else "")
    ),
)
def test_permanent_failures_are_not_retryable(exc: Exception) -> None:
    assert not is_retryable(exc)


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    policy = RetryPolicy(max_attempts=10, base_s=0.2, cap_s=5.0)

    lows = [policy.delay_s(n, 0.0) for n in range(1, 9)]
    highs = [policy.delay_s(n, 0.999999) for n in range(1, 9)]

    assert lows == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.5, 2.5, 2.5])
    assert highs == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0], rel=1e-5)


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"base_s": -1.0}, {"base_s": 2.0, "cap_s": 1.0}]
)
def test_nonsense_policies_are_config_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


async def test_transient_errors_are_retried_then_succeed() -> None:
    clock = FakeClock()
    op = Flaky(client_error("SlowDown", 503), bex.ReadTimeoutError(endpoint_url="u"))

    result = await call_with_retries(
        op, RetryPolicy(), what="put", sleep=clock.sleep, rand=lambda: 0.5
    )

    assert result == "done"
    assert op.calls == 3
    assert clock.waits == pytest.approx([0.15, 0.3])


async def test_retries_stop_after_max_attempts_with_the_cause_attached() -> None:
    clock = FakeClock()
    last = client_error("SlowDown", 503)
    op = Flaky(*[client_error("SlowDown", 503) for _ in range(5)], last)

    with pytest.raises(StoreUnavailableError, match="6 attempts: SlowDown") as caught:
        await call_with_retries(op, RetryPolicy(), what="put", sleep=clock.sleep, rand=lambda: 0.0)

    assert op.calls == 6
    assert caught.value.__cause__ is last
    assert len(clock.waits) == 5
    assert sum(clock.waits) < 5.0  # default policy: a few seconds at most


async def test_permanent_errors_are_raised_at_once() -> None:
    clock = FakeClock()
    denied = client_error("AccessDenied", 403)
    op = Flaky(denied)

    with pytest.raises(bex.ClientError) as caught:
        await call_with_retries(op, RetryPolicy(), what="put", sleep=clock.sleep)

    assert caught.value is denied
    assert op.calls == 1
    assert clock.waits == []


async def test_cancellation_is_not_retried() -> None:
    clock = FakeClock()

    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await call_with_retries(cancelled, RetryPolicy(), what="get", sleep=clock.sleep)
    assert clock.waits == []


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (client_error("NoSuchKey", 404), ObjectNotFoundError),
        (client_error("404", 404), ObjectNotFoundError),
        (client_error("AccessDenied", 403), StoreAccessError),
        (client_error("InvalidAccessKeyId", 403), StoreAccessError),
        (client_error("SignatureDoesNotMatch", 403), StoreAccessError),
        (client_error("403", 403), StoreAccessError),
        (client_error("BadDigest", 400), StoreIntegrityError),
        (client_error("InvalidDigest", 400), StoreIntegrityError),
        (client_error("NoSuchBucket", 404), StoreError),
        (client_error("InvalidArgument", 400), StoreError),
        (bex.NoCredentialsError(), StoreAccessError),
        (bex.ParamValidationError(report="bad"), StoreError),
    ],
)
def test_errors_are_translated_to_the_booktape_tree(
    exc: Exception, expected: type[StoreError]
) -> None:
    translated = translate(exc, "put 'k' in s3://b/p")

    assert type(translated) is expected
    assert str(translated).startswith("put 'k' in s3://b/p")


def test_multipart_etag_is_the_md5_of_the_part_md5s() -> None:
    parts = [b"a" * 10, b"b" * 3]
    digests = [hashlib.md5(p).digest() for p in parts]

    assert multipart_etag(digests) == hashlib.md5(b"".join(digests)).hexdigest() + "-2"


async def test_an_attempt_that_never_answers_times_out_and_is_retried() -> None:
    calls = 0

    async def frozen_server() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.Event().wait()  # a frozen server: no answer, no error
        return b""

    async def no_wait(_: float) -> None:
        return None

    policy = RetryPolicy(max_attempts=3, attempt_timeout_s=0.05)
    with pytest.raises(StoreUnavailableError, match="3 attempts"):
        await call_with_retries(frozen_server, policy, what="put", sleep=no_wait)

    assert calls == 3
