"""Reading records with their stored lines (the merger's read path) and the msg fast path.

Ground truth: the bytes that were written (each line exactly as encoded) and the JSON of
each line as orjson reads it.
"""

from __future__ import annotations

import io

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from booktape import objects
from booktape.binance import DepthHeader, parse_depth_header
from booktape.codec import DataRecord, Header, Msg, decode_line, encode_msg, own_line, own_msg
from booktape.errors import CodecError, CorruptObjectError
from booktape.fastframe import spot_depth_header
from booktape.objects import Prover, RecordWriter, read_object, read_object_parts

HEADER = Header("binance", "depth", "BTCUSDT", "eu", "c1", "host")


@pytest.fixture(autouse=True, params=["c", "regex"])
def both_line_readers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test reads with booktape/_fastframe.c's own_msgs and with codec.own_msg."""
    if request.param == "regex":
        monkeypatch.setattr(objects, "_OWN_MSGS", None)
    else:
        assert objects._OWN_MSGS is not None  # make test builds the C pass
FRAME = b'{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":5,"u":6,"b":[["1.5","2"]],"a":[]}'


def read_lines(
    data: bytes, prove: Prover[DepthHeader] | None = None
) -> tuple[list[DataRecord], list[bytes | None], list[DepthHeader | None]]:
    """Each record of ``data`` (a :class:`Msg` for an own-layout tuple too), its stored
    line and its proof, from :func:`read_object_parts`."""
    _, parts, _ = read_object_parts(data, "k", prove)
    records: list[DataRecord] = []
    stored: list[bytes | None] = []
    proofs: list[DepthHeader | None] = []
    for part in parts:
        if type(part) is tuple:
            t, c, frame, own, proof = part
            records.append(Msg(t, c, frame))
            stored.append(own_line(t, c, frame)[:-1] if own else None)  # the line, rebuilt
            proofs.append(proof)
        else:
            records.append(part)  # type: ignore[arg-type]
            stored.append(None)
            proofs.append(None)
    return records, stored, proofs


def object_of(lines: list[bytes]) -> bytes:
    buf = io.BytesIO()
    with RecordWriter(buf, HEADER) as writer:
        for line in lines:
            writer.write_line(line)
    return buf.getvalue()


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 2**63 - 1),
    st.from_regex(r"[A-Za-z0-9_.:-]{1,20}", fullmatch=True),
    st.sampled_from([FRAME, b"{}", b"[1,2]", b'"x"', b'{"a":"\\r"}', b'{"m":1}']),
)
def test_msg_lines_decode_as_their_json_says(t: int, conn: str, frame: bytes) -> None:
    line = encode_msg(t, conn, frame)
    head = orjson.loads(line)

    record = decode_line(line)

    assert isinstance(record, Msg)
    assert (record.t, record.c, record.raw) == (head["t"], head["c"], frame)


def test_stored_lines_come_back_for_msg_records_in_the_encoders_layout() -> None:
    lines = [encode_msg(10, "ws1", FRAME), encode_msg(11, "ws2", b'{"id":1,"result":null}')]
    data = object_of(lines)

    records, stored, _ = read_lines(data)

    assert records == read_object(data, "k").records
    assert stored == [line[:-1] for line in lines]


@pytest.mark.parametrize(
    "line",
    [
        b'{"k":"msg", "t":10,"c":"ws1","m":{}}\n',  # a space: JSON, not the encoder's layout
        b'{"k":"msg","t":10,"c":"ws1","b64":"e30="}\n',  # base64 form
        b'{"k":"msg","t":10,"c":"ws1","m":{"a":1,\r"b":2}}\n',  # a CR in the frame
        b'{"k":"conn","t":10,"c":"ws1","ev":"open","info":{}}\n',
    ],
)
def test_other_lines_have_no_stored_line_and_decode_as_before(line: bytes) -> None:
    data = object_of([line])

    records, stored, _ = read_lines(data)

    assert stored == [None]
    assert records == [decode_line(line)]


@pytest.mark.parametrize(
    ("line", "match"),
    [
        (b'{"k":"msg","t":010,"c":"ws1","m":{}}\n', "not valid JSON"),  # a leading zero
        (b'{"k":"msg","t":1,"c":"ws1","m":{"a":}}\n', "spliced frame is not valid JSON"),
        (b'{"k":"msg","t":9223372036854775808,"c":"ws1","m":{}}\n', "invalid t"),
    ],
)
def test_bad_msg_lines_are_corrupt_on_both_read_paths(line: bytes, match: str) -> None:
    data = object_of([encode_msg(1, "ws1", FRAME), line])

    with pytest.raises(CodecError, match=match):
        decode_line(line)
    with pytest.raises(CorruptObjectError, match=f"line 3: .*{match}"):
        read_object(data, "k")
    with pytest.raises(CorruptObjectError, match=f"line 3: .*{match}"):
        read_object_parts(data, "k")
    with pytest.raises(CorruptObjectError, match=f"line 3: .*{match}"):
        read_object_parts(data, "k", spot_depth_header)  # the prover vouches for none


def test_a_proven_frame_gives_its_proof_back_and_others_are_still_checked() -> None:
    spot = b'{"stream":"btcusdt@depth","data":' + FRAME + b"}"
    lines = [encode_msg(1, "ws1", spot), encode_msg(2, "ws1", FRAME)]

    records, stored, proofs = read_lines(object_of(lines), spot_depth_header)

    assert records == [Msg(1, "ws1", spot), Msg(2, "ws1", FRAME)]
    assert stored == [line[:-1] for line in lines]
    assert proofs == [parse_depth_header(spot), None]  # a raw /ws frame is not in the layout
    broken = spot.replace(b'"a":[]', b'"a":[],')  # not JSON, nor in the layout
    bad = object_of([lines[0], b'{"k":"msg","t":2,"c":"ws1","m":' + broken + b"}\n"])
    with pytest.raises(CorruptObjectError, match=r"line 3: .*spliced frame is not valid JSON"):
        read_object_parts(bad, "k", spot_depth_header)


def test_parts_give_own_layout_msgs_as_tuples_and_other_records_as_records() -> None:
    spot = b'{"stream":"btcusdt@depth","data":' + FRAME + b"}"
    conn = b'{"k":"conn","t":3,"c":"ws1","ev":"open","info":{}}\n'
    spaced = b'{"k":"msg", "t":4,"c":"ws2","m":{}}\n'  # JSON, not the encoder's layout
    lines = [encode_msg(1, "ws1", spot), encode_msg(2, "ws1", FRAME), conn, spaced]
    data = object_of(lines)[:-3]  # cut into the last zstd block: a truncated object

    header, parts, truncated = read_object_parts(data, "k", spot_depth_header)

    assert header == HEADER
    assert truncated is not None
    heads = [orjson.loads(line) for line in lines]
    assert parts[0] == (heads[0]["t"], "ws1", spot, True, parse_depth_header(spot))
    assert parts[1] == (heads[1]["t"], "ws1", FRAME, True, None)  # not proven
    assert len(parts) < 4 or parts[2:] == [decode_line(conn), decode_line(spaced)]
    whole_header, whole, error = read_object_parts(object_of(lines), "k")
    assert (whole_header, error) == (HEADER, None)
    assert whole[2:] == [decode_line(conn), Msg(4, "ws2", b"{}")]
    assert (
        [part[:4] for part in whole[:2]]
        == [  # type: ignore[index]
            (1, "ws1", spot, True),
            (2, "ws1", FRAME, True),
        ]
    )


_HEADS = st.sampled_from(
    [b'{"k":"msg","t":', b'{"k":"msg","t": ', b'{"k":"bad","t":', b'{"k":"msg", "t":', b""]
)
_T = st.integers(0, 2**64).map(lambda t: b"%d" % t) | st.sampled_from([b"01", b"-1", b"", b"1.0"])
_CONN = st.from_regex(rb"\A[A-Za-z0-9_.:\-]{1,130}\Z") | st.sampled_from([b"", b"a b", b"\xc3\xa9"])
_TAIL = st.sampled_from([b'{"a":1}}', b"}", b"", b"{}", b'{"a":1}', b"}}", b'"x"}', b"\r}"])


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.tuples(_HEADS, _T, _CONN, _TAIL), min_size=1, max_size=5))
def test_the_c_line_reader_answers_what_own_msg_answers(
    pieces: list[tuple[bytes, bytes, bytes, bytes]],
) -> None:
    from booktape import _fastframe  # noqa: PLC0415

    lines = [b'%s%s,"c":"%s","m":%s' % piece for piece in pieces]
    expected = [own_msg(line) or line for line in lines]
    block = b"".join(line + b"\n" for line in lines)
    assert _fastframe.own_msgs(block, len(block)) == expected
    assert _fastframe.own_msgs(block + b'{"k":"msg"', len(block)) == expected  # a cut line


def test_the_c_line_reader_reads_only_up_to_the_end_it_is_given() -> None:
    from booktape import _fastframe  # noqa: PLC0415

    block = b'{"k":"msg","t":1,"c":"a","m":{}}\nxy\n'
    assert _fastframe.own_msgs(block, 0) == []
    assert _fastframe.own_msgs(block, 33) == [(1, "a", b"{}")]
    assert _fastframe.own_msgs(block, len(block)) == [(1, "a", b"{}"), b"xy"]
    for end in (-1, len(block) + 1):
        with pytest.raises(ValueError, match="outside"):
            _fastframe.own_msgs(block, end)
    with pytest.raises(TypeError):
        _fastframe.own_msgs(bytearray(block), 1)  # type: ignore[arg-type]
