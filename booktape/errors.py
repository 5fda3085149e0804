"""The booktape exception tree.

Every error booktape raises on purpose derives from :class:`BooktapeError`; third-party
errors are translated at the I/O boundary (``raise ... from exc``) into the most specific
class here, so callers never need to import botocore or aiohttp to handle a failure::

    BooktapeError
    ├── ConfigError            bad configuration or CLI usage (exit 2)
    ├── InvalidNameError       a symbol/region/collector/date that cannot go into a key
    ├── KeyLayoutError         an object key that does not follow the layout
    ├── FrameError             a malformed exchange frame or REST body
    ├── BookError              an order-book operation that cannot be applied
    ├── CodecError             a raw record object that cannot be read or written
    │   └── CorruptObjectError     the object is damaged (names the object)
    └── StoreError             an object store operation failed
        ├── ObjectNotFoundError    the key does not exist
        ├── StoreAccessError       credentials refused / permission denied (not retried)
        ├── StoreIntegrityError    checksum or ETag mismatch on a write
        └── StoreUnavailableError  transient failures that outlived the retries
"""

from __future__ import annotations


class BooktapeError(Exception):
    """Base class of every error booktape raises on purpose."""


class ConfigError(BooktapeError):
    """Bad configuration or CLI usage; the CLI prints one line and exits 2."""


class InvalidNameError(BooktapeError, ValueError):
    """A name (symbol, region, collector, exchange, channel, date) is not allowed in a key."""


class KeyLayoutError(BooktapeError, ValueError):
    """An object key does not follow the raw or canonical layout."""


class FrameError(BooktapeError, ValueError):
    """A malformed exchange frame or REST body."""


class BookError(BooktapeError):
    """An order-book operation that cannot be applied (e.g. a malformed level)."""


class CodecError(BooktapeError):
    """A raw record object cannot be written or read."""


class CorruptObjectError(CodecError):
    """A raw record object is damaged; ``name`` says which one."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


class StoreError(BooktapeError):
    """An object store operation failed."""


class ObjectNotFoundError(StoreError, KeyError):
    """The requested key does not exist in the store."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else "object not found"


class StoreAccessError(StoreError):
    """The store refused the credentials or the permission; retrying will not help."""


class StoreIntegrityError(StoreError):
    """A write was not stored intact (checksum or ETag mismatch)."""


class StoreUnavailableError(StoreError):
    """The store kept failing with transient errors after the capped retries."""
