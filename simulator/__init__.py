"""A local exchange: Binance spot WS+REST with fault injection and replay.

Modules, one concept each:

- ``market``: the pure market model (books, update ids, change log), stepped in 10 ms slots;
- ``streams``: stream names and per-connection diff-depth batching (pure);
- ``wire``: Binance's bytes (8-decimal strings, events, REST bodies, error frames);
- ``requests``: SUBSCRIBE/UNSUBSCRIBE/LIST_SUBSCRIPTIONS/SET_PROPERTY/GET_PROPERTY;
- ``connection``: one WebSocket connection (pings, deadlines, limits, send queue, log);
- ``rest`` and ``ratelimit``: ``/api/v3`` endpoints, request weight, 429 and 418;
- ``faults``: what can go wrong; ``region``: one port per region, which can go down;
- ``replay``: serving a real recording (``recordings`` reads the formats);
- ``app``: :class:`Simulator`; ``control``: the HTTP control API; ``cli``: `booktape sim`.
"""
