"""The raw record format: byte-exact frames, writer/reader, truncation versus corruption."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import orjson
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from booktape.codec import (
    Bad,
    Conn,
    DataRecord,
    Header,
    Msg,
    Snap,
    decode_line,
    encode_bad,
    encode_conn,
    encode_header,
    encode_msg,
    encode_record,
    encode_snap,
)
from booktape.errors import CodecError, CorruptObjectError, InvalidNameError
from booktape.objects import ObjectReader, RecordWriter, iter_object, read_object

REAL_FRAME = (
    b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1723161255208,'
    b'"s":"BTCUSDT","U":50093239189,"u":50093239202,"b":[["61737.63000000","0.00000000"]],'
    b'"a":[]}}'
)
SNAP_BODY = b'{"lastUpdateId":50093239100,"bids":[["61737.62000000","1.5"]],"asks":[]}'
HEADER = Header("binance", "depth", "BTCUSDT", "eu", "c1", "host-1", extra={"rotation_s": 60})
NAME = "raw/binance/depth/BTCUSDT/2024-08-09/eu.c1/000000000-1-2.jsonl.zst"
T0 = 1_723_161_255_208_000_000

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def json_frames(draw: st.DrawFn) -> bytes:
    """Valid JSON spelled in many ways: escapes, odd whitespace, indentation (newlines)."""
    value = draw(json_values)
    text = json.dumps(
        value,
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.none() | st.integers(0, 2)),
        separators=draw(st.sampled_from([None, (",", ":"), (" , ", " : "), (",\t", ":\r\n")])),
    )
    space = st.text(alphabet=" \t\r\n", max_size=2)
    return (draw(space) + text + draw(space)).encode()


def records() -> list[DataRecord]:
    return [
        Conn(T0, "ws-1", "open", {"url": "wss://stream.binance.com:9443/ws/btcusdt@depth@100ms"}),
        Msg(T0 + 1, "ws-1", REAL_FRAME),
        Msg(T0 + 2, "ws-1", b'{"a":\n[1, 2]}'),
        Snap(
            T0 + 3,
            T0 + 2,
            "rest-1",
            "/api/v3/depth?symbol=BTCUSDT&limit=1000",
            SNAP_BODY,
            {"status": 200},
        ),
        Bad(T0 + 4, "ws-1", b"\xff\xfe not json"),
        Bad(T0 + 5, "ws-1", b"\x00\x01", binary=True),
        Msg(T0 + 6, "ws-2", b'"\\u00e9\\ud83d\\ude00 \xc3\xa9"'),
        Conn(T0 + 7, "ws-1", "close", {"code": 1000, "reason": ""}),
    ]


def write_object(recs: list[DataRecord], *, flush_each: bool = False) -> tuple[bytes, list[int]]:
    """Write recs; returns the object and the compressed size after each flush."""
    out = io.BytesIO()
    writer = RecordWriter(out, HEADER)
    boundaries = []
    if flush_each:
        writer.flush()
        boundaries.append(len(out.getvalue()))
    for record in recs:
        writer.write_record(record)
        if flush_each:
            writer.flush()
            boundaries.append(len(out.getvalue()))
    writer.close()
    return out.getvalue(), boundaries


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(write_checksum=True).compress(data)


# -- single lines ------------------------------------------------------------------------


def test_real_frame_is_spliced_verbatim() -> None:
    line = encode_msg(T0, "ws-1", REAL_FRAME)

    assert line == b'{"k":"msg","t":%d,"c":"ws-1","m":%s}\n' % (T0, REAL_FRAME)
    assert decode_line(line) == Msg(T0, "ws-1", REAL_FRAME)
    assert orjson.loads(line)["m"] == orjson.loads(REAL_FRAME)


@settings(max_examples=300)
@given(frame=json_frames())
def test_json_frames_round_trip_byte_for_byte(frame: bytes) -> None:
    line = encode_msg(T0, "c", frame)

    record = decode_line(line)

    assert isinstance(record, Msg)
    assert record.raw == frame
    assert line.count(b"\n") == 1
    assert line.endswith(b"\n")
    assert (b'"m":' in line) == (b"\n" not in frame and b"\r" not in frame)
    assert encode_record(record) == line


@settings(max_examples=300)
@given(frame=st.binary(max_size=64) | st.text(max_size=32).map(str.encode))
def test_any_bytes_round_trip_byte_for_byte(frame: bytes) -> None:
    line = encode_msg(T0, "c", frame)

    record = decode_line(line)

    assert isinstance(record, Msg | Bad)
    assert record.raw == frame
    assert line.count(b"\n") == 1
    try:
        orjson.loads(frame)
        assert isinstance(record, Msg)
    except orjson.JSONDecodeError:
        assert isinstance(record, Bad)


@pytest.mark.parametrize(
    ("frame", "kind", "spliced"),
    [
        (b'{"a":1}', Msg, True),
        (b' {"a" : 1}\t', Msg, True),
        (b'{"a":\n1}', Msg, False),
        (b'{"a":1}\r', Msg, False),
        (b'{"a":1', Bad, False),
        (b"", Bad, False),
        (b'"\xff"', Bad, False),  # not UTF-8
        (b'"\\ud800"', Bad, False),  # lone surrogate
        (b"\xef\xbb\xbf{}", Bad, False),  # BOM
        (b"NaN", Bad, False),
        (b'{"a":1}{"b":2}', Bad, False),
    ],
)
def test_frame_kinds(frame: bytes, kind: type, spliced: bool) -> None:
    line = encode_msg(T0, "c", frame)

    record = decode_line(line)

    assert type(record) is kind
    assert isinstance(record, Msg | Bad)
    assert record.raw == frame
    assert (b'"m":' in line) is spliced


def test_snap_conn_bad_and_header_lines_round_trip() -> None:
    lines = [
        encode_snap(
            T0,
            T0 - 5,
            "rest-1",
            "/api/v3/depth?symbol=BTCUSDT&limit=1000",
            SNAP_BODY,
            extra={"status": 200, "slot": T0 - 8},
        ),
        encode_snap(
            T0, T0 - 5, "rest-1", '/x?q="m":1', b"<html>\n502</html>", extra={"status": 502}
        ),
        encode_conn(T0, "ws-1", "break", {"error": "timeout", "m": 1}),
        encode_bad(T0, "ws-1", b"\x00", binary=True),
        encode_header(HEADER),
    ]
    decoded = [decode_line(line) for line in lines]

    assert decoded[0] == Snap(
        T0,
        T0 - 5,
        "rest-1",
        "/api/v3/depth?symbol=BTCUSDT&limit=1000",
        SNAP_BODY,
        {"status": 200, "slot": T0 - 8},
    )
    assert b'"m":' + SNAP_BODY in lines[0]
    assert decoded[1] == Snap(
        T0, T0 - 5, "rest-1", '/x?q="m":1', b"<html>\n502</html>", {"status": 502}
    )
    assert decoded[2] == Conn(T0, "ws-1", "break", {"error": "timeout", "m": 1})
    assert decoded[3] == Bad(T0, "ws-1", b"\x00", binary=True)
    assert decoded[4] == HEADER
    assert [encode_record(r) for r in decoded] == lines


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: encode_msg(-1, "c", b"{}"), "receive time"),
        (lambda: encode_msg(True, "c", b"{}"), "receive time"),
        (lambda: encode_msg(2**63, "c", b"{}"), "receive time"),
        (lambda: encode_msg(T0, "c d", b"{}"), "connection id"),
        (lambda: encode_msg(T0, "", b"{}"), "connection id"),
        (lambda: encode_msg(T0, 'c"', b"{}"), "connection id"),
        (lambda: encode_msg(T0, "c", "{}"), "bytes"),  # type: ignore[arg-type]
        (lambda: encode_conn(T0, "c", "reopen"), "connection event"),
        (lambda: encode_conn(T0, "c", "open", {"x": object()}), "JSON"),
        (lambda: encode_snap(T0, T0, "c", "/", b"{}", extra={"m": 1}), "field name"),
        (lambda: encode_snap(T0, T0, "c", "/", b"{}", extra={"x": [1]}), "scalar"),  # type: ignore[dict-item]
        (lambda: Header("binance", "depth", "BTCUSDT", "eu", "c1", "h", extra={"v": 2}), "v"),
    ],
)
def test_encoders_refuse_bad_input(call: Any, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        call()


def test_header_validates_names() -> None:
    with pytest.raises(InvalidNameError):
        Header("binance", "depth", "BTC/USDT", "eu", "c1", "h")
    with pytest.raises(InvalidNameError):
        Header("coinbase", "depth", "BTC-USD", "eu", "c1", "h")


@pytest.mark.parametrize(
    ("line", "match"),
    [
        (b"{not json}", "not valid JSON"),
        (b"[1]", "unknown record kind"),
        (b'{"k":"zzz","t":1}', "unknown record kind 'zzz'"),
        (b'{"k":"msg","t":1,"c":"a"}', "b64"),
        (b'{"k":"msg","t":1,"m":{}}', "lacks"),
        (b'{"k":"msg","t":-1,"c":"a","m":{}}', "invalid t"),
        (b'{"k":"msg","t":1,"c":"a b","m":{}}', "connection id"),
        (b'{"k":"msg","t":1,"c":"a","m":{}', "not valid JSON"),
        (b'{"k":"msg","t":1,"c":"a","m":{}} ', "end with"),
        (b'{"k":"msg","t":1,"c":"a","m":{},"x":1}', "not valid JSON"),
        (b'{"k": "msg", "t":1, "c":"a", "m":{}}', "spliced last"),
        (b'{"k":"msg","t":1,"c":"a","b64":"e30=","m":{}}', "both"),
        (b'{"k":"msg","t":1,"c":"a","b64":"!!"}', "b64"),
        (b'{"k":"bad","t":1,"c":"a","b64":"e30=","bin":1}', "bin"),
        (b'{"k":"conn","t":1,"c":"a","ev":"nope","info":{}}', "unknown event"),
        (b'{"k":"snap","t":1,"q":1,"c":"a","r":"/","x":[1],"m":{}}', "unexpected fields"),
        (b'{"k":"hdr","v":2}', "version 2"),
        (b'{"k":"hdr","v":true}', "version True"),
        (b'{"k":"hdr","v":1,"exchange":"binance"}', "lacks field"),
    ],
)
def test_decode_line_refuses_bad_lines(line: bytes, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        decode_line(line)


# -- objects -----------------------------------------------------------------------------


def test_writer_reader_round_trip() -> None:
    out = io.BytesIO()
    with RecordWriter(out, HEADER) as writer:
        for record in records():
            writer.write_record(record)
        writer.write_msg(T0 + 9, "ws-1", REAL_FRAME)
        writer.write_snap(T0 + 10, T0 + 9, "rest-1", "/api/v3/depth", SNAP_BODY)
        writer.write_conn(T0 + 11, "ws-1", "rotate")
        writer.write_bad(T0 + 12, "ws-1", b"x")

    result = read_object(out.getvalue(), NAME)

    assert result.header == HEADER
    assert result.records == [
        *records(),
        Msg(T0 + 9, "ws-1", REAL_FRAME),
        Snap(T0 + 10, T0 + 9, "rest-1", "/api/v3/depth", SNAP_BODY),
        Conn(T0 + 11, "ws-1", "rotate"),
        Bad(T0 + 12, "ws-1", b"x"),
    ]
    assert (result.truncated, result.error) == (False, None)
    assert writer.records == len(result.records)
    assert writer.bytes_out == len(out.getvalue())
    plain = zstandard.ZstdDecompressor().decompressobj().decompress(out.getvalue())
    assert writer.bytes_in == len(plain)
    assert plain.startswith(encode_header(HEADER))


def test_streaming_reader_matches_read_object() -> None:
    data, _ = write_object(records() * 20)

    reader = iter_object(io.BytesIO(data), NAME)
    with pytest.raises(CodecError, match="end first"):
        _ = reader.truncated
    streamed = list(reader)

    assert reader.header == HEADER
    assert streamed == read_object(data, NAME).records == records() * 20
    assert reader.truncated is False
    small = iter_object(io.BufferedReader(io.BytesIO(data), buffer_size=7), NAME)
    assert list(small) == streamed


def test_writer_refuses_writes_after_close() -> None:
    writer = RecordWriter(io.BytesIO(), HEADER)
    writer.close()
    writer.close()
    with pytest.raises(CodecError, match="closed"):
        writer.write_msg(T0, "c", b"{}")


def test_concatenated_frames_read_as_one_stream() -> None:
    data, _ = write_object(records()[:2])
    more = zstd(encode_msg(T0 + 9, "ws-1", REAL_FRAME))

    result = read_object(data + more, NAME)

    assert result.records == [*records()[:2], Msg(T0 + 9, "ws-1", REAL_FRAME)]
    assert not result.truncated


# -- truncation: every cut is a truncation once the header is whole ------------------------


def test_truncation_at_every_offset_returns_a_prefix() -> None:
    recs = records()
    data, boundaries = write_object(recs, flush_each=True)
    header_end = boundaries[0]  # the header is decodable from here on
    seen = 0

    for cut in range(len(data)):
        if cut < header_end:
            with pytest.raises(CorruptObjectError, match=r"no whole header|empty") as info:
                read_object(data[:cut], NAME)
            assert info.value.name == NAME
            continue
        result = read_object(data[:cut], NAME)
        assert result.header == HEADER
        assert result.truncated, cut
        assert result.error
        assert result.records == recs[: len(result.records)]
        assert len(result.records) >= seen  # a longer prefix never loses records
        seen = len(result.records)
        if cut in boundaries:  # everything flushed before the cut is there
            assert len(result.records) == boundaries.index(cut)
    assert read_object(data, NAME).records == recs


def test_last_line_without_newline_is_a_truncation() -> None:
    lines = encode_header(HEADER) + encode_msg(T0, "c", REAL_FRAME) + b'{"k":"msg","t":5,"c'

    result = read_object(zstd(lines), NAME)

    assert result.records == [Msg(T0, "c", REAL_FRAME)]
    assert result.truncated
    assert result.error == "the last line has no newline"


def test_header_only_object_cut_after_header_is_truncated_and_empty() -> None:
    data, boundaries = write_object([], flush_each=True)

    result = read_object(data[: boundaries[0]], NAME)

    assert (result.header, result.records, result.truncated) == (HEADER, [], True)


# -- corruption: raises, naming the object -----------------------------------------------


def test_every_flipped_byte_is_caught() -> None:
    recs = records()
    data, _ = write_object(recs)
    raised = 0

    for pos in range(len(data)):
        damaged = bytearray(data)
        damaged[pos] ^= 0x5A
        try:
            result = read_object(bytes(damaged), NAME)
        except CorruptObjectError as exc:
            raised += exc.name == NAME
            continue
        # Otherwise the damage was harmless (e.g. a larger window size) or looks like an
        # early end of the stream: never wrong records.
        assert result.records == recs if not result.truncated else recs[: len(result.records)]

    assert raised >= 0.9 * len(data)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty object"),
        (b"hello, this is not zstd", "Unknown frame descriptor"),
        (orjson.dumps({"k": "hdr"}) + b"\n", "Unknown frame descriptor"),
        (zstd(b""), "no whole header line"),
        (zstd(encode_msg(T0, "c", b"{}")), "line 1: expected a header"),
        (zstd(encode_header(HEADER) + b"{oops}\n"), "line 2: line is not valid JSON"),
        (zstd(encode_header(HEADER) + b"\n"), "line 2: line is not valid JSON"),
        (zstd(encode_header(HEADER) + b'{"k":"nope"}\n'), "line 2: unknown record kind"),
        (zstd(encode_header(HEADER) * 2), "line 2: a second header"),
        (zstd(encode_header(HEADER).replace(b'"v":1', b'"v":2')), "line 1: unsupported format"),
        (zstd(encode_header(HEADER).replace(b'"depth"', b'"book"')), "line 1: invalid header"),
        (zstd(encode_header(HEADER)) + b"trailing", "Unknown frame descriptor"),
    ],
)
def test_corrupt_objects_raise_naming_the_object(data: bytes, match: str) -> None:
    with pytest.raises(CorruptObjectError, match=match) as info:
        read_object(data, NAME)
    assert str(info.value).startswith(NAME + ": ")
    assert info.value.name == NAME


def test_checksum_mismatch_is_corrupt() -> None:
    data, _ = write_object(records())
    damaged = data[:-4] + bytes(b ^ 0xFF for b in data[-4:])

    with pytest.raises(CorruptObjectError, match=NAME):
        read_object(damaged, NAME)


def test_b64_forms_are_plain_base64() -> None:
    frame = b'{"a":\n1}'

    obj = orjson.loads(encode_msg(T0, "c", frame))

    assert base64.b64decode(obj["b64"]) == frame


def test_streaming_reader_reports_truncation_at_the_end() -> None:
    data, boundaries = write_object(records(), flush_each=True)

    reader = iter_object(io.BytesIO(data[: boundaries[3] + 5]), NAME)
    streamed = list(reader)

    assert streamed == records()[:3]
    assert reader.truncated
    assert reader.error == "the zstd stream ends inside a frame"


def test_streaming_reader_raises_on_corruption_after_good_records() -> None:
    bad = zstd(encode_header(HEADER) + encode_msg(T0, "c", b"{}") + b"garbage\n")

    reader = iter_object(io.BytesIO(bad), NAME)

    assert next(reader) == Msg(T0, "c", b"{}")
    with pytest.raises(CorruptObjectError, match="line 3: line is not valid JSON"):
        next(reader)


def test_damaged_data_is_reported_after_the_lines_read_before_it() -> None:
    recs = records()
    data, _ = write_object(recs * 3, flush_each=True)
    damaged = data + b"\x28\xb5\x2f\xfd" + b"\xff" * 40  # a zstd magic, then no frame

    def parts(reader: ObjectReader) -> list[object]:
        return list(reader.parts())

    for how, read in (("records", list), ("parts", parts)):
        # the first read ends where the damage starts: every good line comes before it
        reader = ObjectReader(io.BytesIO(damaged), NAME, chunk_size=len(data))
        with pytest.raises(CorruptObjectError, match="damaged zstd data") as info:
            read(reader)
        assert f"after line {1 + 3 * len(recs)} " in str(info.value), how


def test_writer_stops_after_a_failed_write() -> None:
    class FillingDisk(io.BytesIO):
        full = False

        def write(self, data: Any, /) -> int:
            if self.full:
                raise OSError(28, "No space left on device")
            return super().write(data)

    disk = FillingDisk()
    writer = RecordWriter(disk, HEADER)
    writer.write_msg(T0, "c", REAL_FRAME)
    disk.full = True

    with pytest.raises(OSError, match="No space"):
        writer.flush()
    with pytest.raises(CodecError, match="closed"):
        writer.write_msg(T0, "c", REAL_FRAME)


def test_a_read_back_msg_encodes_to_the_line_encode_msg_gives() -> None:
    from booktape.codec import Msg, decode_line, encode_msg, encode_read_msg  # noqa: PLC0415

    for frame in (b'{"e":"depthUpdate","u":5}', b'{"a":\n1}', b'{"x":"\\r"}', b"[1, 2]"):
        line = encode_msg(123_456_789, "eu.c1:7", frame)
        record = decode_line(line.rstrip(b"\n"))
        assert isinstance(record, Msg)
        assert encode_read_msg(record) == line
