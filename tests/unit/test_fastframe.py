"""The collector's fast depth path (booktape.fastframe) against orjson and the general path.

Ground truth: the recorded frames' own JSON decoded by orjson. The fast path may refuse a
frame the general path takes (it then takes the general path), but whatever it accepts must
be JSON, and what it reads must be the JSON's fields; the record line it leads to must be
the general encoder's line byte for byte.
"""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from booktape.binance import Market, parse_depth_header
from booktape.codec import encode_msg, msg_prefix
from booktape.fastframe import spot_depth, spot_depth_header
from simulator.recordings import load_recording


@pytest.fixture(scope="module")
def frames(real_data: Path) -> list[bytes]:
    recording = load_recording([real_data / "hftbacktest/spot/btcusdt_20240808.gz"])
    inner = [f.frame for f in recording.depth_frames("BTCUSDT")]
    return [b'{"stream":"btcusdt@depth@100ms","data":' + f + b"}" for f in inner]


def test_every_real_frame_takes_the_fast_path_with_its_json_fields(frames: list[bytes]) -> None:
    assert len(frames) > 1000
    for frame in frames:
        data = orjson.loads(frame)["data"]

        got = spot_depth(frame)

        assert got == (data["s"], data["U"], data["u"], data["E"])
        header = parse_depth_header(frame)
        assert header.prev_id == got[1] - 1
        assert spot_depth_header(frame) == header  # the merger's read path


def test_the_fast_line_is_the_general_line_byte_for_byte(frames: list[bytes]) -> None:
    for i, frame in enumerate(frames[:2000]):
        t = 1_723_075_200_000_000_000 + i
        assert msg_prefix(t, "c1-eu") + frame + b"}\n" == encode_msg(t, "c1-eu", frame)


_NOISE = b'0123456789."[],:{} \\\n\r\tabE\x00\xff\xc3'


def _mutants(frame: bytes, rng: random.Random, count: int) -> list[bytes]:
    """Single-byte insertions, deletions and replacements anywhere in the frame."""
    out = []
    for _ in range(count):
        at = rng.randrange(len(frame))
        byte = bytes([rng.choice(_NOISE)])
        how = rng.randrange(3)
        if how == 0:
            out.append(frame[:at] + byte + frame[at:])
        elif how == 1:
            out.append(frame[:at] + frame[at + 1 :])
        else:
            out.append(frame[:at] + byte + frame[at + 1 :])
    return out


def test_whatever_the_fast_path_accepts_is_json_with_those_fields(frames: list[bytes]) -> None:
    rng = random.Random(7)
    accepted = refused = 0
    for frame in rng.sample(frames, 60):
        for mutant in _mutants(frame, rng, 150):
            got = spot_depth(mutant)
            header = spot_depth_header(mutant)
            assert (header is None) == (got is None)
            if got is None:
                refused += 1
                continue
            accepted += 1
            doc = orjson.loads(mutant)  # raises if the fast path let non-JSON through
            data = doc["data"]
            assert got == (data["s"], data["U"], data["u"], data["E"])
            assert header == parse_depth_header(mutant)
            assert header is not None
            assert header.stream == doc["stream"]
            assert b"\n" not in mutant
            assert b"\r" not in mutant
    assert accepted > 1000
    assert refused > 1000


@pytest.mark.parametrize(
    "frame",
    [
        # valid JSON, but not Binance's layout: the general path takes them
        b'{"stream":"x@depth","data":{"e":"depthUpdate","E":1,"s":"X","U":5,"u":6,"b":[],"a":[]}} ',
        b'{"stream":"x@depth","data":{"e":"depthUpdate","E":1,"s":"X","U":5,"u":6,"b":[ ],"a":[]}}',
        b'{"stream":"x\\u0041","data":{"e":"depthUpdate","E":1,"s":"X","U":5,"u":6,"b":[],"a":[]}}',
        b'{"stream":"x@depth","data":{"e":"depthUpdate","E":1,"s":"X","U":5,"u":6,'
        b'"b":[["1","2"]],"a":[["1e3","2"]]}}',
        # not JSON
        b'{"stream":"x@depth","data":{"e":"depthUpdate","E":01,"s":"X","U":5,"u":6,"b":[],"a":[]}}',
        b'{"stream":"x@depth","data":{"e":"depthUpdate","E":1,"s":"X","U":5,"u":6,'
        b'"b":[["1","2"],],"a":[]}}',
        b'{"stream":"x@depth","data":{"e":"depthUpdate","E":1,"s":"X","U":5,"u":6,'
        b'"b":[["1","2"]],"a":[]}',
        b'{"stream":"x@depth","data":{"e":"depthUpdate","E":1,"s":"X\xff","U":5,"u":6,'
        b'"b":[],"a":[]}}',
        # U > u: refused by parse_depth_header, so the general path records why
        b'{"stream":"x@depth","data":{"e":"depthUpdate","E":1,"s":"X","U":7,"u":6,"b":[],"a":[]}}',
        # an id past 2**63-1: no chunk key can hold it (the collector's sink refuses it)
        b'{"stream":"x@depth","data":{"e":"depthUpdate","E":1,"s":"X","U":5,'
        b'"u":9223372036854775808,"b":[],"a":[]}}',
        # numbers longer than 19 digits (int() raises past 4,300): no id or time of Binance's
        b'{"stream":"x@depth","data":{"e":"depthUpdate","E":'
        + b"1" * 5_000
        + b',"s":"X","U":5,"u":6,"b":[],"a":[]}}',
        b'{"stream":"x@depth","data":{"e":"depthUpdate","E":1,"s":"X","U":5,'
        b'"u":12345678901234567890,"b":[],"a":[]}}',
        # the event type past the first 200 bytes: classify_frame does not see a depth event
        b'{"stream":"' + b"x" * 200 + b'","data":{"e":"depthUpdate","E":1,"s":"X","U":5,'
        b'"u":6,"b":[],"a":[]}}',
    ],
)
def test_frames_outside_the_layout_take_the_general_path(frame: bytes) -> None:
    assert spot_depth(frame) is None
    assert spot_depth_header(frame) is None


def test_empty_sides_and_zero_ids_are_in_the_layout() -> None:
    frame = (
        b'{"stream":"x@depth@100ms","data":{"e":"depthUpdate","E":0,"s":"X","U":0,"u":0,'
        b'"b":[],"a":[["0.1","0"]]}}'
    )
    assert spot_depth(frame) == ("X", 0, 0, 0)
    assert parse_depth_header(frame, Market.SPOT).last_id == 0
