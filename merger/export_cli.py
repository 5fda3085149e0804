"""``booktape export FORMAT ...``: canonical data in other tools' formats.

Each format lives in its own module exposing ``run(argv) -> int`` (imported only when used):
``tardis`` (Tardis.dev ``incremental_book_L2`` CSV of a Binance day) and ``hdf5`` (the old
Coinbase scraper's daily HDF5 layout).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Final

from booktape.errors import ConfigError

#: format -> (module with ``run(argv) -> int``, one-line help)
FORMATS: Final[dict[str, tuple[str, str]]] = {
    "tardis": ("merger.export_tardis", "a Binance day as Tardis.dev incremental_book_L2 CSV"),
    "hdf5": ("merger.export_hdf5", "a Coinbase day in the old scraper's HDF5 layout"),
}


def usage() -> str:
    lines = ["usage: booktape export FORMAT [options]", "", "formats:"]
    lines += [f"  {name:8} {help_text}" for name, (_, help_text) in FORMATS.items()]
    return "\n".join(lines)


def run(argv: Sequence[str]) -> int:
    args = list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    if args[0] not in FORMATS:
        raise ConfigError(f"unknown export format {args[0]!r} (known: {', '.join(FORMATS)})")
    module = importlib.import_module(FORMATS[args[0]][0])
    code: int = module.run(args[1:])
    return code
