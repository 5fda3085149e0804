"""The collector's settings: one pydantic-settings model.

Precedence: command-line flags > ``BOOKTAPE_*`` environment variables > the TOML file
given with ``--config`` > defaults. Unknown keys, bad names and bad URLs are refused with
one clear line (:class:`~booktape.errors.ConfigError`; the CLI exits 2). Nothing else in
the collector reads ``os.environ``; credentials never pass through here (the store uses
the standard AWS chain).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from booktape.binance import SPECS, Market
from booktape.coinbase import DAY_NS, PRICES_BASE, REST_BASE
from booktape.errors import ConfigError, InvalidNameError
from booktape.keys import validate_name

ALL = "ALL"
GiB = 1 << 30
MiB = 1 << 20


def _split(value: object) -> object:
    """Accept ``"A,B"`` (flags, env) as well as a list (TOML)."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _base_url(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    if not value.startswith(("ws://", "wss://", "http://", "https://")):
        raise ValueError(f"{what} must be a base URL such as ws://127.0.0.1:9001, got {value!r}")
    return value.rstrip("/")


class CollectorSettings(BaseSettings):
    """Every collector setting, with its default (the README lists them)."""

    model_config = SettingsConfigDict(
        env_prefix="BOOKTAPE_", extra="forbid", frozen=True, populate_by_name=True
    )

    # --- what and where ------------------------------------------------------------
    exchange: Literal["binance", "coinbase"] = "binance"
    market: Market = Market.SPOT
    symbols: Annotated[tuple[str, ...], NoDecode] = ()  # or ("ALL",)
    region: str
    collector: str
    store: str
    ws_url: str | None = None  # base URL; default: the market's Binance host
    rest_url: str | None = None  # base URL; default: the market's Binance host
    s3_endpoint_url: str | None = None
    http_port: int | None = Field(default=None, ge=0, le=65535)  # health and metrics
    http_host: str = "127.0.0.1"

    # --- websocket -----------------------------------------------------------------
    depth_speed_ms: int = 100  # @depth@100ms; 1000 = @depth
    streams_per_connection: int = Field(default=200, ge=1, le=1024)
    connect_attempts_per_5min: int = Field(default=250, ge=1, le=300)
    lifetime_min_s: float = Field(default=20 * 3600, gt=0)  # rotation ahead of the 24 h cut
    lifetime_max_s: float = Field(default=23 * 3600, gt=0)
    stale_after_s: float = Field(default=30.0, gt=0)  # no frame and no ping: replace it
    symbols_refresh_s: float = Field(default=3600.0, gt=0)  # for symbols = ALL

    # --- snapshots -----------------------------------------------------------------
    snapshot_limit: int = Field(default=1000, ge=1, le=5000)
    snapshot_interval_s: float = Field(default=1800.0, gt=0)
    weight_share: float = Field(default=0.5, gt=0, le=1)  # of the per-IP weight limit

    # --- chunks, spool, uploads ----------------------------------------------------
    spool_dir: Path = Path("spool")
    spool_max_bytes: int = Field(default=10 * GiB, ge=MiB)
    rotation_s: float = Field(default=60.0, gt=0)
    chunk_max_bytes: int = Field(default=64 * MiB, ge=1024)
    queue_items: int = Field(default=10_000, ge=10)
    upload_concurrency: int = Field(default=4, ge=1, le=64)
    shutdown_deadline_s: float = Field(default=20.0, gt=0)

    # --- coinbase ------------------------------------------------------------------
    products: Annotated[tuple[str, ...], NoDecode] = ()
    level: Literal[1, 2, 3] = 2
    prices: Annotated[tuple[str, ...], NoDecode] = ()
    interval_s: float = Field(default=60.0, gt=0)  # the grid; must divide a day
    prices_url: str | None = None  # v2 prices API base; default https://api.coinbase.com

    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("symbols", "products", "prices", mode="before")
    @classmethod
    def _lists(cls, value: object) -> object:
        return _split(value)

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if value == (ALL,):
            return value
        return tuple(validate_name("symbol", s).upper() for s in value)

    @field_validator("products", "prices")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(validate_name("product", s).upper() for s in value)

    @field_validator("region", "collector")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_name("name", value)

    @field_validator("ws_url")
    @classmethod
    def _ws(cls, value: str | None) -> str | None:
        return _base_url(value, "ws_url")

    @field_validator("rest_url", "prices_url", "s3_endpoint_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        return _base_url(value, "URL")

    @field_validator("store")
    @classmethod
    def _store(cls, value: str) -> str:
        from booktape.stores import open_store  # noqa: PLC0415 - validation only

        open_store(value)  # does no I/O; raises ConfigError on a bad URL
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CollectorSettings:
        if self.exchange == "binance" and not self.symbols:
            raise ValueError("binance needs --symbols (a list, or ALL)")
        if self.exchange == "coinbase" and not self.products:
            raise ValueError("coinbase needs --products")
        if self.exchange == "coinbase":
            interval_ns = round(self.interval_s * 1e9)
            if interval_ns <= 0 or DAY_NS % interval_ns:
                raise ValueError(f"interval of {self.interval_s} s must divide a day (e.g. 60s)")
        if self.lifetime_min_s > self.lifetime_max_s:
            raise ValueError("lifetime_min_s must not exceed lifetime_max_s")
        if self.market is Market.SPOT and self.depth_speed_ms not in (100, 1000):
            raise ValueError("spot depth_speed_ms is 100 or 1000")
        if self.market.is_futures and self.depth_speed_ms not in (0, 100, 250, 500):
            raise ValueError("futures depth_speed_ms is 0, 100, 250 or 500")
        if self.snapshot_limit > SPECS[self.market].max_depth_limit:
            raise ValueError(f"snapshot_limit exceeds {SPECS[self.market].max_depth_limit}")
        return self

    # --- derived -------------------------------------------------------------------

    @property
    def exchange_name(self) -> str:
        """The exchange segment of object keys (``binance-usdm`` ...)."""
        return SPECS[self.market].exchange if self.exchange == "binance" else "coinbase"

    @property
    def ws_base(self) -> str:
        return self.ws_url or SPECS[self.market].ws_base

    @property
    def rest_base(self) -> str:
        return self.rest_url or SPECS[self.market].rest_base

    @property
    def coinbase_rest_base(self) -> str:
        """The Coinbase Exchange API base (``--rest-url`` for ``--exchange coinbase``)."""
        return self.rest_url or REST_BASE

    @property
    def prices_base(self) -> str:
        return self.prices_url or PRICES_BASE

    @property
    def source(self) -> str:
        return f"{self.region}.{self.collector}"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            doc = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    section = doc.get("collector", doc)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [collector] must be a table")
    return {key.replace("-", "_"): value for key, value in section.items()}


def _one_line(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "config"
    message = str(error["msg"]).removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {message}{more}"


def load_settings(flags: dict[str, Any], config_file: Path | None = None) -> CollectorSettings:
    """Build the settings: flags > BOOKTAPE_* env > TOML file > defaults.

    Flags whose value is None are treated as not given. Raises ConfigError with one line.
    """
    given = {key: value for key, value in flags.items() if value is not None}
    from_file = _read_toml(config_file) if config_file is not None else {}

    class _Settings(CollectorSettings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return init_settings, env_settings, InitSettingsSource(settings_cls, from_file)

    try:
        return _Settings(**given)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from exc
    except InvalidNameError as exc:
        raise ConfigError(str(exc)) from exc
