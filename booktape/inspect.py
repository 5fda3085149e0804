"""``booktape cat``: print the records of a raw object as JSON lines.

Reads a local file, or a key of a store (``--store URL``), and writes every record as the
same JSON line it was stored as (frames verbatim), header first. A truncated object prints
what it holds and says so on stderr (exit 1); a corrupt one gets one line naming it (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from booktape.codec import encode_header, encode_record
from booktape.errors import ConfigError, CorruptObjectError
from booktape.objects import read_object


async def _fetch(store_url: str, key: str, endpoint: str | None) -> bytes:
    from booktape.stores import open_store  # noqa: PLC0415 - only when a store is named

    async with open_store(store_url, s3_endpoint_url=endpoint) as store:
        return await store.get(key)


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="booktape cat", description=__doc__)
    parser.add_argument("object", help="a local .jsonl.zst file, or a key with --store")
    parser.add_argument("--store", help="store URL (file:///path, a path, s3://bucket/prefix)")
    parser.add_argument("--s3-endpoint-url", default=None)
    args = parser.parse_args(argv)
    if args.store:
        data = asyncio.run(_fetch(args.store, args.object, args.s3_endpoint_url))
    else:
        path = Path(args.object)
        if not path.is_file():
            raise ConfigError(f"{path}: no such file")
        data = path.read_bytes()
    try:
        result = read_object(data, args.object)
    except CorruptObjectError as exc:
        print(f"booktape cat: corrupt object {exc}", file=sys.stderr)
        return 1
    out = sys.stdout.buffer
    out.write(encode_header(result.header))
    for record in result.records:
        out.write(encode_record(record))
    out.flush()
    if result.truncated:
        print(f"booktape cat: {args.object} is truncated: {result.error}", file=sys.stderr)
        return 1
    return 0
