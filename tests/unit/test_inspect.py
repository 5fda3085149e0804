"""`booktape cat` prints an object's records verbatim and says when it is damaged."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from booktape.cli import main
from booktape.codec import Header
from booktape.objects import RecordWriter
from booktape.stores import open_store

FRAME = b'{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":5,"u":7,"b":[["1.00","2.0"]],"a":[]}'


def _object() -> bytes:
    buffer = io.BytesIO()
    with RecordWriter(buffer, Header("binance", "depth", "BTCUSDT", "eu", "c1", "h")) as writer:
        writer.write_msg(123, "ws1", FRAME)
        writer.flush()  # as a spool does: what was flushed survives a crash
        writer.write_msg(124, "ws1", b"not json")
    return buffer.getvalue()


def test_cat_prints_the_records_with_frames_verbatim(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    path = tmp_path / "x.jsonl.zst"
    path.write_bytes(_object())

    code = main(["cat", str(path)])

    lines = capsysbinary.readouterr().out.splitlines()
    assert code == 0
    assert lines[0].startswith(b'{"k":"hdr","v":1')
    assert lines[1] == b'{"k":"msg","t":123,"c":"ws1","m":' + FRAME + b"}"
    assert lines[2].startswith(b'{"k":"bad","t":124')


def test_cat_of_a_truncated_object_prints_what_it_holds_and_fails(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    path = tmp_path / "cut.jsonl.zst"
    path.write_bytes(_object()[:-3])

    code = main(["cat", str(path)])

    captured = capsysbinary.readouterr()
    assert code == 1
    assert b"truncated" in captured.err
    assert captured.out.startswith(b'{"k":"hdr"')


def test_cat_of_a_corrupt_object_names_it(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    path = tmp_path / "bad.jsonl.zst"
    path.write_bytes(b"definitely not zstd")

    assert main(["cat", str(path)]) == 1
    assert b"bad.jsonl.zst" in capsysbinary.readouterr().err


def test_cat_of_a_missing_file_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cat", "/nonexistent/x.zst"]) == 2
    assert "no such file" in capsys.readouterr().err


async def test_cat_reads_a_key_from_a_store(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    async with open_store(str(tmp_path)) as store:
        await store.put("raw/x.jsonl.zst", _object())

    # main() runs its own event loop: call it from a worker thread.
    code = await asyncio.to_thread(main, ["cat", "--store", str(tmp_path), "raw/x.jsonl.zst"])

    assert code == 0
    assert FRAME in capsysbinary.readouterr().out
