"""Object stores behind one Protocol: a local directory, S3, or memory (for tests).

``open_store(url)`` picks the backend from the URL:

- ``/abs/path``, ``rel/path`` or ``file:///abs/path`` -> :class:`LocalStore`
- ``s3://bucket/prefix`` -> :class:`S3Store` (credentials from the standard AWS chain)
- ``memory://name`` -> :class:`MemoryStore` shared by that name within the process
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from booktape.errors import ConfigError, InvalidNameError
from booktape.stores.base import ObjectInfo, Store, check_key, check_prefix
from booktape.stores.local import LocalStore
from booktape.stores.memory import MemoryStore, clear_shared
from booktape.stores.s3 import S3Config, S3Store
from booktape.stores.s3_errors import RetryPolicy

__all__ = [
    "LocalStore",
    "MemoryStore",
    "ObjectInfo",
    "RetryPolicy",
    "S3Config",
    "S3Store",
    "Store",
    "check_key",
    "check_prefix",
    "clear_shared",
    "open_store",
]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SCHEME_TYPO = re.compile(r"^(file|s3|memory):(?!//)", re.IGNORECASE)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_MEMORY_NAME = re.compile(r"[A-Za-z0-9_-]*")
_FORMS = "use a directory path, file:///abs/path, s3://bucket/prefix or memory://name"


def open_store(
    url: str,
    *,
    s3_endpoint_url: str | None = None,
    s3_path_style: bool | None = None,
    s3_config: S3Config | None = None,
) -> Store:
    """Open the store named by ``url``; a bad URL raises ConfigError with one clear line.

    ``s3_endpoint_url`` (else ``AWS_ENDPOINT_URL``) and ``s3_path_style`` (default: path
    style when an endpoint is set) only apply to ``s3://`` URLs. Opening does no I/O.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"empty store URL: {_FORMS}")
    match = _SCHEME.match(url)
    if match is None:
        if typo := _SCHEME_TYPO.match(url):
            scheme = typo.group(1).lower()
            raise ConfigError(f"store URL {url!r} lacks '//': write {scheme}://...")
        if "\n" in url or "\0" in url:
            raise ConfigError(f"invalid store path {url!r}")
        return LocalStore(url)
    scheme = match.group(1).lower()
    parts = urlsplit(url)
    shown = f"{scheme}://{parts.hostname or ''}{parts.path}"  # never echo user:password@
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"store URL {shown!r} must not contain credentials: use the standard AWS chain"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"store URL {shown!r} must not have a query or fragment")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"file URL {url!r} must be file:///abs/path (no host)")
        if not parts.path.startswith("/"):
            raise ConfigError(f"file URL {url!r} needs an absolute path: file:///abs/path")
        return LocalStore(unquote(parts.path))
    if scheme == "s3":
        bucket = parts.netloc
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise ConfigError(
                f"store URL {shown!r}: {bucket!r} is not a valid bucket name "
                "(3-63 characters of a-z, 0-9, '.', '-')"
            )
        prefix = parts.path.strip("/")
        try:
            check_prefix(prefix)
        except InvalidNameError as exc:
            raise ConfigError(f"store URL {shown!r}: bad prefix: {exc}") from None
        return S3Store(
            bucket, prefix, endpoint_url=s3_endpoint_url, path_style=s3_path_style, config=s3_config
        )
    if scheme == "memory":
        name = parts.netloc + parts.path
        if not _MEMORY_NAME.fullmatch(name):
            raise ConfigError(f"store URL {url!r}: memory store names match [A-Za-z0-9_-]*")
        return MemoryStore(name, shared=True)
    raise ConfigError(f"unsupported store URL scheme {scheme!r} in {shown!r}: {_FORMS}")
