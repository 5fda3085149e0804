"""The simulator's configuration: one frozen pydantic model, Binance's values by default.

Every timer is settable so tests can run a 24 h lifetime or a 60 s pong deadline in a
fraction of a second. Durations are float seconds (``batch_scale`` multiplies the 100 ms and
1000 ms depth windows).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from booktape.binance import MAX_INCOMING_PER_SECOND, MAX_STREAMS_PER_CONNECTION
from booktape.binance import WEIGHT_LIMIT_PER_MINUTE as WEIGHT_LIMIT
from booktape.coinbase import validate_product
from booktape.errors import ConfigError
from simulator.market import FIRST_UPDATE_ID

DAY_S = 86_400.0
MAX_CONNECTION_ATTEMPTS = 300  # Binance: WebSocket connection attempts per IP ...
CONNECTION_ATTEMPT_WINDOW_S = 300.0  # ... per 5 minutes


class SimConfig(BaseModel):
    """Everything a :class:`simulator.app.Simulator` needs; defaults are Binance's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # --- where -------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)  # first region's port; 0 = free ports
    regions: tuple[str, ...] = ("eu",)
    control_port: int | None = Field(default=0, ge=0, le=65535)  # None = no control API

    # --- what --------------------------------------------------------------------------
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    products: tuple[str, ...] = ("BTC-USD", "ETH-USD")  # Coinbase books (built on first use)
    seed: int = 0
    first_update_id: int = FIRST_UPDATE_ID
    # Override every modelled symbol's book depth and activity (None = the symbol's own):
    # small books let a test start hundreds of symbols in well under a second.
    levels_per_side: int | None = Field(default=None, ge=10)
    activity: float | None = Field(default=None, gt=0)
    change_log_capacity: int = Field(default=300_000, ge=1000)  # changes kept per symbol
    # how often the model catches up with the clock; None = only when read (REST, truth,
    # subscriptions): the market then stands still between reads (exact ground-truth tests)
    advance_interval: float | None = Field(default=0.05, gt=0)
    replay: tuple[Path, ...] = ()  # recordings to serve instead of the model
    speed: float = Field(default=1.0, gt=0)  # replay speed-up
    replay_waits_for_subscriber: bool = True  # start the replay at the first subscriber

    # --- Coinbase (simulator.coinbase) ---------------------------------------------------
    coinbase_orders_per_side: int = Field(default=3000, ge=10)  # resting orders at the start
    coinbase_activity: float = Field(default=20.0, gt=0)  # book events a second per product
    coinbase_rate: float = Field(default=10.0, gt=0)  # public limit: requests a second per IP
    coinbase_burst: int = Field(default=15, ge=1)
    coinbase_history: int = Field(default=32, ge=1)  # served books kept by sequence

    # --- WebSocket timers and limits ----------------------------------------------------
    ping_interval: float = Field(default=20.0, gt=0)
    pong_timeout: float = Field(default=60.0, gt=0)  # close without a matching pong this long
    max_lifetime: float = Field(default=DAY_S, gt=0)  # close a connection this old
    shutdown_delay: float = Field(default=600.0, ge=0)  # serverShutdown event -> close
    batch_scale: float = Field(default=1.0, gt=0)  # multiplies the 100/1000 ms depth windows
    max_incoming_per_second: int = Field(default=MAX_INCOMING_PER_SECOND, ge=1)
    max_streams: int = Field(default=MAX_STREAMS_PER_CONNECTION, ge=1)
    # connection attempts per IP and region in a sliding window; beyond: HTTP 429
    max_connection_attempts: int = Field(default=MAX_CONNECTION_ATTEMPTS, ge=1)
    connection_attempt_window: float = Field(default=CONNECTION_ATTEMPT_WINDOW_S, gt=0)
    send_queue_frames: int = Field(default=256, ge=1)  # beyond: the slow consumer is closed

    # --- REST limits -------------------------------------------------------------------
    weight_limit: int = Field(default=WEIGHT_LIMIT, ge=1)  # per IP and window
    rate_limit_window: float = Field(default=60.0, gt=0)  # seconds; windows aligned on the clock
    retry_after: float | None = Field(default=None, gt=0)  # None = until the window ends
    ban_base: float = Field(default=120.0, gt=0)  # the first 418 ban; doubles per repeat offence
    ban_max: float = Field(default=3 * DAY_S, gt=0)

    # --- ground truth ------------------------------------------------------------------
    send_log: bool = False  # keep what each connection was sent
    send_log_frames: int = Field(default=100_000, ge=1)  # per connection, the newest kept
    closed_connections_kept: int = Field(default=1000, ge=0)  # for logs of closed connections

    @field_validator("regions")
    @classmethod
    def _regions(cls, regions: tuple[str, ...]) -> tuple[str, ...]:
        if not regions:
            raise ValueError("at least one region")
        for name in regions:
            if not name or not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"region {name!r} must match [A-Za-z0-9_-]+")
        if len(set(regions)) != len(regions):
            raise ValueError("regions must be distinct")
        return regions

    @field_validator("products")
    @classmethod
    def _products(cls, products: tuple[str, ...]) -> tuple[str, ...]:
        upper = tuple(p.strip().upper() for p in products if p.strip())
        for product in upper:
            try:
                validate_product(product)
            except ConfigError as exc:
                raise ValueError(str(exc)) from exc
        return upper

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, symbols: tuple[str, ...]) -> tuple[str, ...]:
        upper = tuple(s.strip().upper() for s in symbols if s.strip())
        for symbol in upper:  # COIN-M's have an underscore: BTCUSD_PERP, BTCUSD_250926
            if not symbol.replace("_", "").isalnum() or not symbol.isascii():
                raise ValueError(f"symbol {symbol!r} must be ASCII letters, digits and '_'")
        return upper
