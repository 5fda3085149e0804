"""The collector's fast depth path (booktape.fastframe) against orjson and the general path.

Ground truth: the recorded frames' own JSON decoded by orjson. The fast path may refuse a
frame the general path takes (it then takes the general path), but whatever it accepts must
be JSON, and what it reads must be the JSON's fields; the record line it leads to must be
the general encoder's line byte for byte.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from booktape import _fastframe, fastframe
from booktape.binance import Market, parse_depth_header
from booktape.codec import encode_msg, msg_prefix
from booktape.fastframe import _py_fields, _py_spot_depth, spot_depth, spot_depth_header
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
    assert _py_spot_depth(frame) is None  # the regex, whichever is in use
    assert _fastframe.fields(frame) is None


def test_empty_sides_and_zero_ids_are_in_the_layout() -> None:
    frame = (
        b'{"stream":"x@depth@100ms","data":{"e":"depthUpdate","E":0,"s":"X","U":0,"u":0,'
        b'"b":[],"a":[["0.1","0"]]}}'
    )
    assert spot_depth(frame) == ("X", 0, 0, 0)
    assert parse_depth_header(frame, Market.SPOT).last_id == 0


# --- booktape/_fastframe.c: the same answers as the regex ----------------------------------


def test_the_c_pass_is_built_and_in_use() -> None:
    # make test builds it (gcc); without a compiler booktape falls back to the regex alone
    assert fastframe.ACCELERATED
    assert spot_depth is _fastframe.spot_depth


def _same(frame: bytes) -> tuple[bytes, int, bytes, int, int] | None:
    expected = _py_fields(frame)
    assert _fastframe.fields(frame) == expected
    assert _fastframe.spot_depth(frame) == _py_spot_depth(frame)
    levels = _fastframe.depth_levels(frame)
    if expected is None:
        assert levels is None
    else:  # the level lists as JSON has them
        data = orjson.loads(frame)["data"]
        assert levels == tuple(tuple(tuple(level) for level in data[k]) for k in ("b", "a"))
    return expected


def test_the_c_pass_reads_real_frames_and_their_mutants_as_the_regex_does(
    frames: list[bytes],
) -> None:
    rng = random.Random(11)
    accepted = refused = 0
    for frame in frames:
        assert _same(frame) is not None
    for frame in rng.sample(frames, 200):
        for mutant in _mutants(frame, rng, 100):
            if _same(mutant) is None:
                refused += 1
            else:
                accepted += 1
        for cut in range(0, len(frame), 7):  # every truncation, and the frame with a tail
            assert _same(frame[:cut]) is None
        assert _same(frame + b" ") is None
    assert accepted > 2000
    assert refused > 2000


_NOISY_TEXT = st.binary(max_size=12) | st.text(
    alphabet=st.sampled_from('ab@X09.\\"\n é\x00~ '), max_size=12
).map(lambda t: t.encode())
_TEXT = st.from_regex(rb"\A[a-z@0-9]{0,10}\Z")
_NUMBER = st.integers(0, 2**63 + 10).map(lambda n: str(n).encode())
_NOISY_NUMBER = st.from_regex(rb"\A-?[0-9]{0,22}\Z")
_DECIMAL = st.from_regex(rb"\A[0-9.]{0,8}\Z")


def _mostly(
    valid: st.SearchStrategy[bytes], noisy: st.SearchStrategy[bytes], odds: int = 4
) -> st.SearchStrategy[bytes]:
    """Pieces in the layout ``odds`` times as often as others (many frames are accepted)."""
    return st.one_of(*[valid] * odds, noisy)


_LEVEL = st.tuples(_mostly(_DECIMAL, _NOISY_TEXT, 20), _mostly(_DECIMAL, _NOISY_TEXT, 20)).map(
    lambda pq: b'["%s","%s"]' % pq
)
_SIDE = st.lists(_LEVEL, max_size=4).map(b",".join)
_TEXT_BYTES = _mostly(_TEXT, _NOISY_TEXT, 8)
_ID = _mostly(_NUMBER, _NOISY_NUMBER)
_IDS = st.one_of(  # (U, u): mostly U <= u, as Binance sends them, both bytes
    *[
        st.integers(0, 2**63)
        .flatmap(lambda u: st.tuples(st.integers(max(0, u - 1000), u), st.just(u)))
        .map(lambda ids: (str(ids[0]).encode(), str(ids[1]).encode()))
    ]
    * 3,
    st.tuples(_ID, _ID),
)


@settings(max_examples=1500, deadline=None)
@given(
    stream=_TEXT_BYTES,
    symbol=_TEXT_BYTES,
    event_time=_ID,
    ids=_IDS,
    bids=_SIDE,
    asks=_SIDE,
    cut=st.integers(0, 400),
    noise=st.binary(max_size=2),
)
def test_the_c_pass_answers_what_the_regex_answers_on_generated_frames(
    stream: bytes,
    symbol: bytes,
    event_time: bytes,
    ids: tuple[bytes, bytes],
    bids: bytes,
    asks: bytes,
    cut: int,
    noise: bytes,
) -> None:
    first, last = ids
    frame = (
        b'{"stream":"%s","data":{"e":"depthUpdate","E":%s,"s":"%s","U":%s,"u":%s,'
        b'"b":[%s],"a":[%s]}}' % (stream, event_time, symbol, first, last, bids, asks)
    )
    got = _same(frame)
    if got is not None:  # accepted: JSON with these very fields
        data = orjson.loads(frame)["data"]
        assert got[1:] == (data["E"], data["s"].encode(), data["U"], data["u"])
    _same(frame[:cut] + noise + frame[cut:])  # a damaged copy: same answer too


def test_the_c_pass_takes_bytes_only() -> None:
    with pytest.raises(TypeError, match="bytes"):
        _fastframe.fields("{}")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes"):
        _fastframe.spot_depth(bytearray(b"{}"))  # type: ignore[arg-type]


def _frame(stream: bytes = b"x@depth", e: bytes = b"1", u: bytes = b"6") -> bytes:
    return (
        b'{"stream":"%s","data":{"e":"depthUpdate","E":%s,"s":"X","U":5,"u":%s,'
        b'"b":[["1.5","2"]],"a":[]}}' % (stream, e, u)
    )


_HEAD = len(b'{"stream":"","data":{"e":"depthUpdate","E":') - 5  # stream length 0


@pytest.mark.parametrize(
    ("frame", "accepted"),
    [
        (_frame(u=b"9223372036854775807"), True),  # 2**63-1: the largest id
        (_frame(u=b"9223372036854775808"), False),
        (_frame(u=b"9999999999999999999"), False),  # 19 digits, past 2**63-1
        (_frame(e=b"9999999999999999999"), True),  # 19 digits: a time may be that large
        (_frame(e=b"10000000000000000000"), False),  # 20 digits
        (_frame(e=b"0"), True),
        (_frame(e=b"00"), False),
        (_frame(e=b""), False),
        (_frame(stream=b"x" * (200 - _HEAD)), True),  # "E" where classify_frame still looks
        (_frame(stream=b"x" * (201 - _HEAD)), False),
        (_frame(stream=b""), True),
        (_frame(stream=b"\x7f"), False),
        (_frame(stream=b"~ !#[]"), True),
    ],
)
def test_the_c_pass_and_the_regex_agree_at_the_edges(frame: bytes, accepted: bool) -> None:
    assert (_same(frame) is not None) is accepted


def test_without_the_c_pass_the_regex_answers() -> None:
    # an install without a C compiler has no booktape._fastframe: the import must not fail
    code = (
        "import sys; sys.modules['booktape._fastframe'] = None\n"
        "from booktape import fastframe\n"
        "frame = " + repr(_frame()) + "\n"
        "print(fastframe.ACCELERATED, fastframe.spot_depth(frame), "
        "fastframe.spot_depth_header(frame).stream)\n"
        "from booktape import binance\n"
        "print(binance._C_LEVELS, binance.decode_depth(frame).bids)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == [
        "False ('X', 5, 6, 1) x@depth",
        "None (('1.5', '2'),)",
    ]
