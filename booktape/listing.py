"""``booktape ls``: list raw objects with their sources, id ranges and start times.

One line per object: key, size, ``region.collector``, first..last update id, and the UTC
receive time of its first record. Keys that are not in the raw layout are listed as such.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime

from booktape.errors import KeyLayoutError
from booktape.keys import parse_raw_key


async def _list(store_url: str, prefix: str, endpoint: str | None) -> list[str]:
    from booktape.stores import open_store  # noqa: PLC0415 - only when run

    lines: list[str] = []
    async with open_store(store_url, s3_endpoint_url=endpoint) as store:
        async for info in store.list(prefix):
            try:
                key = parse_raw_key(info.key)
            except KeyLayoutError:
                lines.append(f"{info.key}\t{info.size}\t(not a raw object key)")
                continue
            start = datetime.fromtimestamp(key.start_ns / 1e9, tz=UTC).isoformat(
                timespec="milliseconds"
            )
            lines.append(
                f"{info.key}\t{info.size}\t{key.source}\t{key.first_id}..{key.last_id}\t{start}"
            )
    return lines


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="booktape ls", description=__doc__)
    parser.add_argument("prefix", nargs="?", default="raw/", help="key prefix (default raw/)")
    parser.add_argument("--store", required=True, help="store URL")
    parser.add_argument("--s3-endpoint-url", default=None)
    args = parser.parse_args(argv)
    lines = asyncio.run(_list(args.store, args.prefix, args.s3_endpoint_url))
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0
