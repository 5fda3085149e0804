"""`booktape sim`: run the simulator until SIGINT/SIGTERM.

The FIRST stdout line, flushed as soon as every port listens, is one JSON object::

    {"binance_ws": "ws://127.0.0.1:P", "binance_rest": "http://127.0.0.1:P",
     "coinbase_rest": "http://127.0.0.1:P", "control": "http://127.0.0.1:C",
     "regions": {"eu": {"binance_ws": .., "binance_rest": .., "coinbase_rest": ..}, ...}}

After that line, logs go to stderr as JSON lines (:func:`booktape.log.configure`; level
from ``--log-level``, default info): regions, connections, faults, limits and bans, replay
progress; never one line per frame. Usage errors print one line on stderr and exit 2.
Also runnable as ``python -m simulator.cli``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

import orjson
from pydantic import ValidationError

from booktape.log import configure
from simulator.app import Simulator
from simulator.config import SimConfig


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ValueError(message)


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="booktape sim", description="A local Binance spot and Coinbase exchange.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="first region's port (0 = free)")
    parser.add_argument("--regions", type=_csv, default=("eu",))
    parser.add_argument("--symbols", type=_csv, default=("BTCUSDT", "ETHUSDT"))
    parser.add_argument(
        "--products", type=_csv, default=("BTC-USD", "ETH-USD"), help="Coinbase products"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--replay", type=Path, nargs="+", default=(), metavar="FILE")
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--control-port", type=int, default=0)
    parser.add_argument("--send-log", action="store_true")
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    return parser


def config_from_args(argv: list[str]) -> SimConfig:
    """Parse the command line into a config; ValueError with one line on bad usage."""
    return _config(_parser().parse_args(argv))


def _config(args: argparse.Namespace) -> SimConfig:
    for path in args.replay:
        if not path.exists():
            raise ValueError(f"--replay: {path} does not exist")
    try:
        return SimConfig(
            host=args.host,
            port=args.port,
            regions=args.regions,
            symbols=args.symbols,
            products=args.products,
            seed=args.seed,
            replay=tuple(args.replay),
            speed=args.speed,
            control_port=args.control_port,
            send_log=args.send_log,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{where}: {first['msg']}") from exc


async def serve(config: SimConfig, log_level: str = "info") -> None:
    """Run until SIGINT or SIGTERM, printing the ready line first, then logging."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Simulator(config) as sim:
            sys.stdout.write(orjson.dumps(sim.ready_info()).decode() + "\n")
            sys.stdout.flush()
            configure(log_level)
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run(argv: list[str]) -> int:
    """The `booktape sim` entry point; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
        config = _config(args)
    except ValueError as exc:
        print(f"booktape sim: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(config, args.log_level))
    except OSError as exc:  # e.g. the port is taken
        print(f"booktape sim: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(run(sys.argv[1:]))
