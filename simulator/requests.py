"""Live requests on a market-data connection: SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS,
SET_PROPERTY and GET_PROPERTY, with Binance's replies and error frames.

Binance's rules, as documented and as observed:

- ``id``: a 64-bit signed integer, an alphanumeric string of at most 36 characters, or
  ``null``; anything else (or no ``id``) is ``Invalid request: request ID must be an
  unsigned integer`` (code 2).
- a syntactically invalid stream name gets ``Invalid request: invalid stream`` (code 2)
  and the connection is closed (1008); a well-formed name for an unknown symbol is
  accepted (``{"result":null,...}``) and never delivers anything.
- subscribing beyond ``max_streams`` (1024) is refused with an error frame and nothing is
  subscribed.
- invalid JSON gets code 3 (no ``id``: it could not be read).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import orjson
from aiohttp import WSCloseCode

from simulator.config import SimConfig
from simulator.streams import is_valid_stream_name
from simulator.wire import (
    BAD_ID,
    INVALID_STREAM,
    PROPERTY_NOT_STRING,
    TOO_MANY_PARAMS,
    RequestId,
    invalid_json,
    missing_method,
    unknown_method,
    ws_error,
    ws_result,
)

_INT64 = (-(2**63), 2**63 - 1)


class Session(Protocol):
    """The connection state a request acts on."""

    combined: bool

    @property
    def streams(self) -> Mapping[str, object]: ...

    @property
    def config(self) -> SimConfig: ...

    def subscribe(self, names: list[str]) -> None: ...

    def unsubscribe(self, names: list[str]) -> None: ...

    def offer(self, data: bytes, binary: bool = False) -> None: ...

    def close(self, code: int, reason: str, abrupt: bool = False) -> None: ...


def _valid_id(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return _INT64[0] <= value <= _INT64[1]
    return isinstance(value, str) and len(value) <= 36 and value.isalnum()


def handle_request(session: Session, text: str) -> None:
    """Answer one text frame sent by the client."""
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        session.offer(ws_error(3, invalid_json(exc.colno), with_id=False))
        return
    if not isinstance(doc, dict):
        session.offer(ws_error(2, missing_method(len(text)), with_id=False))
        return
    request_id = doc.get("id")
    if "id" not in doc or not _valid_id(request_id):
        session.offer(ws_error(2, BAD_ID, with_id=False))
        return
    rid: RequestId = request_id  # checked above: int, str or None
    method = doc.get("method")
    if not isinstance(method, str):
        session.offer(ws_error(2, missing_method(len(text)), rid))
        return
    params = doc.get("params", [])
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        _streams_request(session, method, params, rid)
    elif method == "LIST_SUBSCRIPTIONS":
        if params:
            session.offer(ws_error(2, TOO_MANY_PARAMS, rid))
        else:
            session.offer(ws_result(list(session.streams), rid))
    elif method in ("SET_PROPERTY", "GET_PROPERTY"):
        _property_request(session, method, params, rid)
    else:
        column = text.find(method) + len(method) + 1
        session.offer(ws_error(2, unknown_method(method, column), rid))


def _streams_request(session: Session, method: str, params: object, rid: RequestId) -> None:
    if not isinstance(params, list) or not all(
        isinstance(p, str) and is_valid_stream_name(p) for p in params
    ):
        session.offer(ws_error(2, INVALID_STREAM, rid))
        session.close(WSCloseCode.POLICY_VIOLATION, "invalid stream")
        return
    names = [str(p) for p in params]
    if method == "UNSUBSCRIBE":
        session.unsubscribe(names)
        session.offer(ws_result(None, rid))
        return
    total = len(set(session.streams) | set(names))
    if total > session.config.max_streams:
        msg = f"Invalid request: too many streams (at most {session.config.max_streams})"
        session.offer(ws_error(2, msg, rid))
        return
    session.subscribe(names)
    session.offer(ws_result(None, rid))


def _property_request(session: Session, method: str, params: object, rid: RequestId) -> None:
    if not isinstance(params, list) or not params:
        session.offer(ws_error(2, PROPERTY_NOT_STRING, rid))
        return
    name = params[0]
    if not isinstance(name, str):
        session.offer(ws_error(2, PROPERTY_NOT_STRING, rid))
        return
    if name != "combined":
        session.offer(ws_error(0, "Unknown property", rid))
        return
    if method == "GET_PROPERTY":
        session.offer(ws_result(session.combined, rid))
        return
    if len(params) != 2:
        session.offer(ws_error(2, TOO_MANY_PARAMS if len(params) > 2 else PROPERTY_NOT_STRING, rid))
        return
    if not isinstance(params[1], bool):
        session.offer(ws_error(1, "Invalid value type: expected Boolean", rid))
        return
    session.combined = params[1]
    session.offer(ws_result(None, rid))
