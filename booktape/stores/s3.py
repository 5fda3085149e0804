"""S3Store: objects under ``s3://bucket/prefix`` on AWS S3 or an S3-compatible server.

Integrity: every PUT and UploadPart carries ``Content-MD5`` (the server rejects a body that
does not match) and the returned ETag is compared with the MD5 we computed (single PUT:
hex MD5; multipart: MD5 of the part digests plus ``-N``). Objects above
``S3Config.multipart_threshold`` are uploaded in parts; a failed upload is aborted.

Retries are ours (botocore's are set to a single attempt), see :mod:`.s3_errors`; errors
come out as :mod:`booktape.errors` classes (``raise ... from exc``).

Credentials come only from the standard AWS chain (environment, shared config, IMDS...).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aioboto3
from aiobotocore.config import AioConfig
from botocore import exceptions as bex

from booktape.errors import (
    ConfigError,
    ObjectNotFoundError,
    StoreError,
    StoreIntegrityError,
)
from booktape.stores.base import (
    AtomicFile,
    BaseStore,
    ObjectInfo,
    check_key,
    check_prefix,
    is_valid_key,
    oserror_to_store_error,
)
from booktape.stores.s3_errors import (
    RetryPolicy,
    call_with_retries,
    error_code,
    translate,
)

T = TypeVar("T")

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
MAX_PARTS = 10_000
MAX_SINGLE_PUT = 5 * 1024 * MiB
_KMS = frozenset({"aws:kms", "aws:kms:dsse"})  # with SSE-KMS the ETag is not the MD5


def multipart_etag(part_digests: list[bytes]) -> str:
    """The ETag S3 gives a multipart object: MD5 of the parts' binary MD5s, ``-N``."""
    joined = hashlib.md5(b"".join(part_digests), usedforsecurity=False).hexdigest()
    return f"{joined}-{len(part_digests)}"


def _md5(data: bytes) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _etag(response: Mapping[str, Any]) -> str:
    return str(response.get("ETag", "")).strip('"')


def _ns(value: Any) -> int | None:
    return int(value.timestamp() * 1_000_000_000) if value is not None else None


@dataclass(frozen=True, slots=True)
class S3Config:
    """Tuning for S3Store; defaults suit AWS and S3-compatible servers."""

    region: str | None = None  # None: from the AWS chain (AWS_REGION, profile...)
    multipart_threshold: int = 64 * MiB
    part_size: int = 16 * MiB
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    list_page_size: int = 1000
    max_pool_connections: int = 10

    def __post_init__(self) -> None:
        if not MIN_PART_SIZE <= self.part_size <= MAX_SINGLE_PUT:
            raise ConfigError(f"S3 part size must be 5 MiB..5 GiB, not {self.part_size}")
        if not MIN_PART_SIZE <= self.multipart_threshold <= MAX_SINGLE_PUT:
            raise ConfigError(
                f"S3 multipart threshold must be 5 MiB..5 GiB, not {self.multipart_threshold}"
            )
        if not 1 <= self.list_page_size <= 1000:
            raise ConfigError(f"S3 list page size must be 1..1000, not {self.list_page_size}")
        if self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise ConfigError("S3 timeouts must be positive")


def resolve_endpoint(explicit: str | None, environ: Mapping[str, str]) -> str | None:
    """The endpoint to use: the explicit one, else AWS_ENDPOINT_URL(_S3), else AWS's own."""
    endpoint = explicit or environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return None
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
        shown = f"{parts.scheme}://{parts.hostname or ''}"
        raise ConfigError(
            f"invalid S3 endpoint URL {shown!r}: expected http(s)://host[:port] without credentials"
        )
    return endpoint


class S3Store(BaseStore):
    """Objects under ``prefix`` in ``bucket``; one aioboto3 client, opened on first use."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        path_style: bool | None = None,
        config: S3Config | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = check_prefix(prefix.strip("/")).strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.endpoint_url = resolve_endpoint(endpoint_url, os.environ)
        self.path_style = self.endpoint_url is not None if path_style is None else path_style
        self.config = config or S3Config()
        self._client: Any = None
        self._stack: AsyncExitStack | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    async def _get_client(self) -> Any:
        async with self._lock:
            if self._closed:
                raise StoreError(f"{self.url}: the store is closed")
            if self._client is None:
                cfg = self.config
                botocore_config = AioConfig(
                    connect_timeout=cfg.connect_timeout_s,
                    read_timeout=cfg.read_timeout_s,
                    retries={"total_max_attempts": 1, "mode": "standard"},  # retries are ours
                    s3={"addressing_style": "path" if self.path_style else "virtual"},
                    max_pool_connections=cfg.max_pool_connections,
                    request_checksum_calculation="when_required",  # we send Content-MD5
                    response_checksum_validation="when_required",
                )
                stack = AsyncExitStack()
                try:
                    session = aioboto3.Session(region_name=cfg.region)
                    self._client = await stack.enter_async_context(
                        session.client("s3", endpoint_url=self.endpoint_url, config=botocore_config)
                    )
                except bex.BotoCoreError as exc:
                    await stack.aclose()
                    raise translate(exc, f"{self.url}: cannot create the S3 client") from exc
                self._stack = stack
            return self._client

    async def _call(self, op: str, key: str, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``fn(client)`` with retries; translate what escapes."""
        what = f"{op} {key!r} in {self.url}"
        client = await self._get_client()
        try:
            return await call_with_retries(lambda: fn(client), self.config.retry, what=what)
        except StoreError:
            raise
        except (bex.BotoCoreError, bex.ClientError) as exc:
            raise translate(exc, what) from exc
        except OSError as exc:
            raise oserror_to_store_error(exc, what) from exc

    async def _request(self, op: str, key: str, method: str, **params: Any) -> Any:
        """One client call (``method`` of the aioboto3 S3 client) through :meth:`_call`."""
        return await self._call(op, key, lambda client: getattr(client, method)(**params))

    async def put(self, key: str, data: bytes) -> ObjectInfo:
        """One PUT with Content-MD5, or a multipart upload above the threshold."""
        check_key(key)
        if len(data) > self.config.multipart_threshold:

            async def read(offset: int, size: int) -> bytes:
                return data[offset : offset + size]

            return await self._put_multipart(key, len(data), read)
        return await self._put_single(key, data)

    async def put_file(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        """Upload a local file; multipart (read one part at a time) above the threshold."""
        check_key(key)
        source = Path(path)
        try:
            size = (await asyncio.to_thread(source.stat)).st_size
            if size <= self.config.multipart_threshold:
                return await self._put_single(key, await asyncio.to_thread(source.read_bytes))
            with await asyncio.to_thread(open, source, "rb") as f:

                def read_at(offset: int, n: int) -> bytes:
                    f.seek(offset)
                    return f.read(n)

                async def read(offset: int, n: int) -> bytes:
                    return await asyncio.to_thread(read_at, offset, n)

                return await self._put_multipart(key, size, read)
        except OSError as exc:
            raise oserror_to_store_error(exc, f"put {key!r} from {source}") from exc

    async def _put_single(
        self, key: str, data: bytes, *, content_md5: str | None = None
    ) -> ObjectInfo:
        """PUT ``data``; ``content_md5`` overrides the digest sent (tests use a wrong one)."""
        digest = await asyncio.to_thread(_md5, data) if len(data) > MiB else _md5(data)
        md5_b64 = content_md5 or _b64(digest)
        response = await self._request(
            "put", key, "put_object", Bucket=self.bucket, Key=self._full(key), Body=data,
            ContentMD5=md5_b64,
        )  # fmt: skip
        etag = _etag(response)
        if etag != digest.hex() and response.get("ServerSideEncryption") not in _KMS:
            raise StoreIntegrityError(
                f"put {key!r} in {self.url}: ETag {etag!r} is not the MD5 {digest.hex()} we sent"
            )
        return ObjectInfo(key, len(data), etag, None)

    async def _put_multipart(
        self, key: str, size: int, read: Callable[[int, int], Awaitable[bytes]]
    ) -> ObjectInfo:
        full = self._full(key)
        part_size = max(self.config.part_size, -(-size // MAX_PARTS))
        created = await self._request(
            "start multipart upload", key, "create_multipart_upload", Bucket=self.bucket, Key=full
        )
        upload_id: str = created["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            digests: list[bytes] = []
            whole = hashlib.md5(usedforsecurity=False)
            for number, offset in enumerate(range(0, size, part_size), start=1):
                chunk = await read(offset, part_size)
                if len(chunk) != min(part_size, size - offset):
                    raise StoreError(f"put {key!r} in {self.url}: the source changed during upload")
                digest = await asyncio.to_thread(_md5, chunk)
                whole.update(chunk)
                response = await self._request(
                    f"upload part {number} of", key, "upload_part", Bucket=self.bucket, Key=full,
                    UploadId=upload_id, PartNumber=number, Body=chunk, ContentMD5=_b64(digest),
                )  # fmt: skip
                if (
                    _etag(response) != digest.hex()
                    and response.get("ServerSideEncryption") not in _KMS
                ):
                    raise StoreIntegrityError(
                        f"put {key!r} in {self.url}: part {number} ETag {_etag(response)!r} "
                        f"is not the MD5 {digest.hex()} we sent"
                    )
                parts.append({"PartNumber": number, "ETag": response["ETag"]})
                digests.append(digest)
            expected = multipart_etag(digests)
            etag = await self._complete(key, upload_id, parts, expected, whole.hexdigest())
        except BaseException:
            await self._abort(key, upload_id)
            raise
        if etag != expected:
            raise StoreIntegrityError(
                f"put {key!r} in {self.url}: multipart ETag {etag!r}, expected {expected!r}"
            )
        return ObjectInfo(key, size, etag, None)

    async def _complete(
        self, key: str, upload_id: str, parts: list[dict[str, Any]], expected: str, whole_md5: str
    ) -> str:
        """Complete the upload; if a retry finds it already completed, check the object."""
        attempts = 0

        async def complete(client: Any) -> Any:
            nonlocal attempts
            attempts += 1
            try:
                return await client.complete_multipart_upload(
                    Bucket=self.bucket, Key=self._full(key), UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )  # fmt: skip
            except bex.ClientError as exc:
                if attempts > 1 and error_code(exc)[0] == "NoSuchUpload":
                    return None  # an earlier attempt completed it but its answer was lost
                raise

        response = await self._call("complete multipart upload of", key, complete)
        if response is not None:
            return _etag(response)
        info = await self.head(key)  # servers report either ETag form for the object
        if info is None or info.etag not in (expected, whole_md5):
            raise StoreIntegrityError(f"put {key!r} in {self.url}: the completed upload is missing")
        return expected

    async def _abort(self, key: str, upload_id: str) -> None:
        """Best effort: a failure here must not hide the error that caused the abort."""
        with suppress(Exception):
            client = await self._get_client()
            await client.abort_multipart_upload(
                Bucket=self.bucket, Key=self._full(key), UploadId=upload_id
            )

    async def get(self, key: str) -> bytes:
        """GET the whole object (retried as a whole)."""
        check_key(key)

        async def fetch(client: Any) -> bytes:
            response = await client.get_object(Bucket=self.bucket, Key=self._full(key))
            body = response["Body"]
            async with body:  # its __aenter__ returns the raw aiohttp response
                return bytes(await body.read())

        return await self._call("get", key, fetch)

    async def get_file(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        """Stream the object into a temp file next to ``path``, then rename it into place."""
        check_key(key)
        dest = Path(path)

        async def fetch(client: Any) -> ObjectInfo:
            response = await client.get_object(Bucket=self.bucket, Key=self._full(key))
            out = await asyncio.to_thread(AtomicFile, dest, dest.parent)
            try:
                body = response["Body"]
                async with body:
                    async for chunk in body.iter_chunks(MiB):
                        await asyncio.to_thread(out.write, chunk)
                if out.size != response["ContentLength"]:
                    raise bex.IncompleteReadError(
                        actual_bytes=out.size, expected_bytes=response["ContentLength"]
                    )
                await asyncio.to_thread(out.commit)
            except BaseException:
                out.discard()  # removes the temp file: one quick unlink
                raise
            return ObjectInfo(key, out.size, _etag(response), _ns(response.get("LastModified")))

        return await self._call("get", key, fetch)

    async def head(self, key: str) -> ObjectInfo | None:
        """HEAD the object; None on 404."""
        check_key(key)
        try:
            response = await self._request(
                "head", key, "head_object", Bucket=self.bucket, Key=self._full(key)
            )
        except ObjectNotFoundError:
            return None
        return ObjectInfo(
            key, int(response["ContentLength"]), _etag(response), _ns(response.get("LastModified"))
        )

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """ListObjectsV2, page by page (each page retried); checks that keys come sorted."""
        check_prefix(prefix)
        base = f"{self.prefix}/" if self.prefix else ""
        token: str | None = None
        previous: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "Bucket": self.bucket,
                "Prefix": base + prefix,
                "MaxKeys": self.config.list_page_size,
            }
            if token:
                kwargs["ContinuationToken"] = token
            page = await self._request("list", prefix, "list_objects_v2", **kwargs)
            for obj in page.get("Contents", ()):
                key = str(obj["Key"])[len(base) :]
                if previous is not None and key <= previous:
                    raise StoreError(
                        f"list {prefix!r} in {self.url}: the server returned keys out of order"
                    )
                previous = key
                if is_valid_key(key):
                    yield ObjectInfo(
                        key, int(obj["Size"]), _etag(obj), _ns(obj.get("LastModified"))
                    )
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated"):
                return
            if not token:
                raise StoreError(f"list {prefix!r} in {self.url}: truncated page without a token")

    async def delete(self, key: str) -> None:
        """DELETE the object; a missing object is fine."""
        check_key(key)
        with suppress(ObjectNotFoundError):
            await self._request(
                "delete", key, "delete_object", Bucket=self.bucket, Key=self._full(key)
            )

    async def close(self) -> None:
        """Close the client (idempotent); the store cannot be used afterwards."""
        async with self._lock:
            self._closed = True
            stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()
