"""A local exchange: Binance spot WS+REST with fault injection and replay.

Modules, one concept each:

- ``symbols``: listed symbols (tick, lot, assets); ``market``: the pure market model
  (books, update ids, change log), stepped in 10 ms slots;
- ``streams``: stream names and per-connection diff-depth batching (pure);
- ``wire``: Binance's bytes (8-decimal strings, events, REST bodies, error frames);
- ``requests``: SUBSCRIBE/UNSUBSCRIBE/LIST_SUBSCRIPTIONS/SET_PROPERTY/GET_PROPERTY;
- ``connection``: one WebSocket connection (pings, deadlines, limits, send queue, log);
- ``rest`` and ``ratelimit``: ``/api/v3`` endpoints (and ``/fapi``/``dapi`` depth when
  replaying futures), request weight, 429 and 418, WebSocket connection attempts;
- ``faults``: what can go wrong; ``region``: one port per region, which can go down;
- ``replay``: serving a real recording (``recordings`` reads the formats);
- ``app``: :class:`Simulator`; ``control``: the HTTP control API; ``cli``: `booktape sim`.

Lifecycle events are logged to ``simulator.*`` loggers with bound fields (``extra``);
the package installs no handler (``booktape sim`` configures JSON lines on stderr).
"""
