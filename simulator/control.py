"""The control API: ground truth and fault injection over HTTP (JSON), on its own port.

Reading:

- ``GET /info`` — the ready line (the same object `booktape sim` prints first).
- ``GET /truth/{SYMBOL}`` — the true book now: ``{"symbol","lastUpdateId","bids","asks"}``
  with every level, best first (replay: the rolled-forward book).
- ``GET /coinbase/truth/{product}[?sequence=N]`` — the Coinbase level-3 book now, or as
  served at sequence N: ``{"sequence","time","bids","asks"}``, entries as the exchange's.
- ``GET /connections[?region=eu&closed=1]`` — open (and recently closed) connections:
  id, region, path, remote, streams, combined, opened_ns, closed_ns, close_reason,
  sent_frames, stalled.
- ``GET /connections/{id}/log`` — what the connection was sent, in order:
  ``{"id":..,"frames":[{"t":ns,"kind":"text|binary|ping|close","data":..}]}``; text frames
  verbatim as strings, other payloads base64 (``"b64": true``). Needs ``--send-log``.

Faults (``POST``, JSON body; ``region`` omitted or null = every region; answers
``{"ok":true,"connections":n}``):

- ``/faults/region_down`` ``{"seconds": 5, "region": "eu"}``
- ``/faults/drop`` ``{"region": .., "connection": id, "abrupt": true}``
- ``/faults/stall`` ``{"region": .., "connection": id, "seconds": 10}`` (null = until dropped)
- ``/faults/unstall`` ``{"region": .., "connection": id}``
- ``/faults/skip_ids`` ``{"connection": id, "count": 5}``
- ``/faults/malformed`` ``{"connection": id, "kind": "invalid_json|truncated|binary|huge_number"}``
- ``/faults/rest_errors`` ``{"status": 503, "count": 3, "region": ..}`` (429 or 5xx)
- ``/faults/latency`` ``{"ws_ms": 200, "rest_ms": 500, "region": ..}``
- ``/faults/server_shutdown`` ``{"delay": 5, "region": ..}``
- ``/faults/clear`` ``{"region": ..}``

Bad requests get 400 ``{"error": "..."}``; an unknown connection or region 404.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from simulator.connection import LoggedFrame
from simulator.faults import Malformed

if TYPE_CHECKING:
    from simulator.app import Simulator


def _json(doc: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json")


def _frame(entry: LoggedFrame) -> dict[str, object]:
    if entry.kind == "text":
        return {"t": entry.t_ns, "kind": entry.kind, "data": entry.data.decode("utf-8", "replace")}
    return {
        "t": entry.t_ns,
        "kind": entry.kind,
        "b64": True,
        "data": base64.b64encode(entry.data).decode("ascii"),
    }


def _need(body: dict[str, Any], key: str) -> Any:
    if body.get(key) is None:
        raise ValueError(f"{key!r} is required")
    return body[key]


def build_control_app(sim: Simulator) -> web.Application:
    """The control application bound to one simulator."""

    async def info(_: web.Request) -> web.Response:
        return _json(sim.ready_info())

    async def truth(request: web.Request) -> web.Response:
        try:
            return _json(sim.truth(request.match_info["symbol"]))
        except KeyError:
            return _json({"error": "unknown symbol"}, 404)

    async def coinbase_truth(request: web.Request) -> web.Response:
        raw = request.query.get("sequence")
        try:
            book = sim.coinbase_truth(
                request.match_info["product"], int(raw) if raw is not None else None
            )
        except (KeyError, ValueError):
            return _json({"error": "unknown product or sequence"}, 404)
        return _json(
            {
                "sequence": book.sequence,
                "time": book.time,
                "bids": [list(e) for e in book.bids],
                "asks": [list(e) for e in book.asks],
            }
        )

    async def connections(request: web.Request) -> web.Response:
        region = request.query.get("region")
        closed = request.query.get("closed", "") in ("1", "true")
        return _json([c.info() for c in sim.connections(region, include_closed=closed)])

    async def connection_log(request: web.Request) -> web.Response:
        try:
            conn_id = int(request.match_info["conn_id"])
            frames = sim.send_log(conn_id)
        except (KeyError, ValueError):
            return _json({"error": "unknown connection"}, 404)
        return _json({"id": conn_id, "frames": [_frame(f) for f in frames]})

    async def fault(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            body: Any = await request.json(loads=orjson.loads) if request.can_read_body else {}
        except orjson.JSONDecodeError:
            return _json({"error": "body is not JSON"}, 400)
        if not isinstance(body, dict):
            return _json({"error": "body must be a JSON object"}, 400)
        region = body.get("region")
        connection = body.get("connection")
        touched = 0
        try:
            if name == "region_down":
                await sim.region_down(float(_need(body, "seconds")), region)
            elif name == "drop":
                touched = sim.drop(region, connection, bool(body.get("abrupt", True)))
            elif name == "stall":
                seconds = body.get("seconds")
                touched = sim.stall(None if seconds is None else float(seconds), region, connection)
            elif name == "unstall":
                touched = sim.unstall(region, connection)
            elif name == "skip_ids":
                touched = sim.skip_ids(int(body.get("count", 5)), region, connection)
            elif name == "malformed":
                touched = sim.send_malformed(
                    Malformed(body.get("kind", "invalid_json")), region, connection
                )
            elif name == "rest_errors":
                sim.rest_errors(int(_need(body, "status")), int(body.get("count", 1)), region)
            elif name == "latency":
                sim.latency(float(body.get("ws_ms", 0)), float(body.get("rest_ms", 0)), region)
            elif name == "server_shutdown":
                delay = body.get("delay")
                touched = sim.server_shutdown(None if delay is None else float(delay), region)
            elif name == "clear":
                sim.clear_faults(region)
            else:
                return _json({"error": f"unknown fault {name!r}"}, 404)
        except KeyError as exc:
            return _json({"error": f"not found: {exc.args[0]}"}, 404)
        except (TypeError, ValueError) as exc:
            return _json({"error": str(exc)}, 400)
        return _json({"ok": True, "connections": touched})

    app = web.Application()
    app.router.add_get("/info", info)
    app.router.add_get("/truth/{symbol}", truth)
    app.router.add_get("/coinbase/truth/{product}", coinbase_truth)
    app.router.add_get("/connections", connections)
    app.router.add_get("/connections/{conn_id}/log", connection_log)
    app.router.add_post("/faults/{name}", fault)
    return app
