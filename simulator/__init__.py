"""A local exchange: Binance spot WS+REST with fault injection and replay."""
