"""Listed symbols: exchange facts (tick, lot, assets) and the scale of their simulated market.

Amounts inside the simulator are integers in 1e-8 units (``E8``), the precision of every
Binance spot decimal string; :func:`parse_e8` reads such a string exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

E8 = 100_000_000


def parse_e8(text: str) -> int:
    """A decimal string (at most 8 decimals kept) as an integer count of 1e-8."""
    whole, _, frac = text.partition(".")
    return int(whole) * E8 + int((frac + "00000000")[:8])


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """A symbol's exchange facts and the scale of its simulated market."""

    symbol: str  # upper case, e.g. "BTCUSDT"
    base_asset: str
    quote_asset: str
    tick_size: str  # PRICE_FILTER tickSize, e.g. "0.01000000"
    step_size: str  # LOT_SIZE stepSize, e.g. "0.00001000"
    start_price: str  # the initial mid, a decimal string
    levels_per_side: int = 5000  # target book depth (the model keeps it near this)
    activity: float = 1.0  # multiplier of the update-id rate (1.0 = BTCUSDT-like)

    @property
    def tick_e8(self) -> int:
        return parse_e8(self.tick_size)

    @property
    def lot_e8(self) -> int:
        return parse_e8(self.step_size)


_QUOTES = ("USDT", "USDC", "FDUSD", "TUSD", "BUSD", "BTC", "ETH", "BNB", "EUR", "TRY")


def _spec(symbol: str, step: str, price: str, levels: int, activity: float) -> SymbolSpec:
    base = symbol.removesuffix("USDT")
    return SymbolSpec(symbol, base, "USDT", "0.01000000", step, price, levels, activity)


KNOWN_SPECS: dict[str, SymbolSpec] = {
    "BTCUSDT": _spec("BTCUSDT", "0.00001000", "60000.00", 5000, 1.0),
    "ETHUSDT": _spec("ETHUSDT", "0.00010000", "3000.00", 4000, 0.8),
    "BNBUSDT": _spec("BNBUSDT", "0.00100000", "550.00", 3000, 0.4),
    "SOLUSDT": _spec("SOLUSDT", "0.00100000", "150.00", 3000, 0.5),
}


def default_spec(symbol: str) -> SymbolSpec:
    """The spec of a known symbol, or sensible defaults (price ~10, tick 0.0001)."""
    symbol = symbol.upper()
    if symbol in KNOWN_SPECS:
        return KNOWN_SPECS[symbol]
    quote = next((q for q in _QUOTES if symbol.endswith(q) and len(symbol) > len(q)), "USDT")
    base = symbol[: -len(quote)] if symbol.endswith(quote) else symbol
    return SymbolSpec(symbol, base, quote, "0.00010000", "0.10000000", "10.0000", 3000, 0.3)
