"""Structured logging: one JSON object a line, rendered with orjson.

Only the CLI calls :func:`configure`; the library never installs handlers of its own.
Bind context with ``extra={"symbol": ..., "region": ...}``: every extra field becomes a
key of the line. Values named like credentials are never written.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Any

import orjson

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_SECRET_WORDS = ("secret", "password", "token", "credential", "authorization")


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line: ts, level, logger, msg and the bound extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_"):
                continue
            secret = any(word in key.lower() for word in _SECRET_WORDS)
            line[key] = "[redacted]" if secret else value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure(level: str = "info", stream: IO[str] | None = None) -> None:
    """Send every booktape log line to ``stream`` (stderr) as JSON."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
