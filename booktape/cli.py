"""The ``booktape`` command line: thin glue that dispatches lazily to each package.

``booktape`` itself imports neither the collector, the merger nor the simulator: each
subcommand's module is imported only when that subcommand runs. A user mistake gets one
clear line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from booktape import __version__
from booktape.errors import BooktapeError, ConfigError


class CommandParser(argparse.ArgumentParser):
    """A subcommand's argument parser: a mistake raises ConfigError (one line, exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)

    def add_symbol_day(self) -> None:
        """The options that name one merged Binance symbol-day in a store."""
        add = self.add_argument
        add("--store", required=True, help="store URL: a path, file:///path or s3://bucket/prefix")
        add("--exchange", default="binance", help="binance, binance-usdm or binance-coinm")
        add("--symbol", required=True, help="the symbol, e.g. BTCUSDT")
        add("--date", required=True, help="the merged UTC day, YYYY-MM-DD")
        add("--s3-endpoint-url", help="S3 endpoint (else AWS_ENDPOINT_URL)")


#: subcommand -> (module with ``run(argv) -> int``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "collect": ("collector.cli", "record an exchange into raw objects (one process a region)"),
    "sim": ("simulator.cli", "run the local exchange simulator (Binance WS + REST, Coinbase REST)"),
    "gaps": ("merger.gaps_cli", "show a merged day's gap reports (table or --json)"),
    "ls": ("booktape.listing", "list raw objects with their id ranges"),
    "cat": ("booktape.inspect", "print the records of a raw object as JSON lines"),
    "merge": ("merger.cli", "merge a day of raw recordings into canonical output"),
    "report": ("merger.report_cli", "write a merged day's coverage timelines as one HTML page"),
    "export": ("merger.export_cli", "export canonical data (tardis CSV, hdf5 for Coinbase)"),
    "derive": ("merger.derive_cli", "derive data sets from canonical data (snapshots on a grid)"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="booktape",
        description="Record exchange order books so that nothing is lost, and prove it.",
    )
    parser.add_argument("--version", action="version", version=f"booktape {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not args or args[0] not in COMMANDS:
        parser.parse_args(args)  # prints help/version or a usage error (exit 2)
        parser.print_help()
        return 2
    module_name, _ = COMMANDS[args[0]]
    try:
        module = importlib.import_module(module_name)
        code: int = module.run(args[1:])
    except ConfigError as exc:
        print(f"booktape {args[0]}: {exc}", file=sys.stderr)
        return 2
    except BooktapeError as exc:
        print(f"booktape {args[0]}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
