"""booktape/_fastbook.c against the Python it stands in for.

The update loops of :mod:`booktape.bookside` run in C for the common level and hand every
other one back to Python; :func:`level_floats` reads level strings as ``float()`` does. The
Python code is the reference: each side is run twice on the same levels, once with its C
loop and once without (``_fast = None``), and must end with the same dict, the same heap or
sorted list (same order, item for item) and the same error, if any. Ground truth for the
values is Python's ``float()`` and an exact Decimal replay.
"""

from __future__ import annotations

import math
import struct
import subprocess
import sys
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from booktape import _fastbook, bookside
from booktape.binance import Level
from booktape.bookside import ZERO_SPELLINGS, BookSide, LazySide
from booktape.errors import BookError

# plain decimals the C loop takes, and spellings it must leave to Python
_PLAIN = st.from_regex(r"\A[0-9]{1,6}(\.[0-9]{0,8})?\Z") | st.from_regex(r"\A\.[0-9]{1,8}\Z")
_LONG = st.from_regex(r"\A[0-9]{1,3}\.[0-9]{13,30}\Z")  # > 15 characters: Decimal keys maybe
_ODD = st.sampled_from(
    [" 1", "1 ", "+1", "-1", "1e3", "1E-2", "1_0", "inf", "nan", "", ".", "1..2", "0x10",
     "٣", "1.5\x00", "0", "0.0", "00", "0E-8", "-0", "1e-400", "1e400", "9" * 400]
)  # fmt: skip
_ZERO = st.sampled_from(["0", "0.0", "0.00000000", "000.000", ".0", "0."])
_PRICE = st.one_of(_PLAIN, _PLAIN, _PLAIN, _LONG, _ODD)
_QTY = st.one_of(_PLAIN, _PLAIN, _ZERO, _ZERO, _ODD)
_LEVELS = st.lists(
    st.tuples(_PRICE, _QTY) | st.tuples(_PRICE, _QTY).map(list),  # type: ignore[arg-type]
    max_size=12,
)


def _state(side: BookSide) -> tuple[object, ...]:
    order = side._heap if isinstance(side, LazySide) else side._keys
    return (
        [(type(k), k, v) for k, v in side._levels.items()],
        [(type(k), k) for k in order],
        side._exact,
    )


def _run(side: BookSide, batches: list[list[Level]]) -> list[str | None]:
    errors: list[str | None] = []
    for levels in batches:
        try:
            side.update(levels)
            errors.append(None)
        except (BookError, TypeError, ValueError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    return errors


@pytest.mark.parametrize("kind", [BookSide, LazySide], ids=["sorted", "lazy"])
@pytest.mark.parametrize("reverse", [True, False], ids=["bids", "asks"])
@settings(max_examples=150, deadline=None)
@given(batches=st.lists(_LEVELS, max_size=8))
def test_the_c_loop_leaves_each_side_as_the_python_loop_does(
    kind: type[BookSide], reverse: bool, batches: list[list[Level]]
) -> None:
    zeros = set(ZERO_SPELLINGS)
    ours, reference = kind(reverse), kind(reverse)
    reference._fast = None
    assert ours._fast is not None
    ours_errors = _run(ours, batches)
    ZERO_SPELLINGS.clear()  # the zero spellings learnt on the way: the same start for both
    ZERO_SPELLINGS.update(zeros)
    assert _run(reference, batches) == ours_errors
    assert _state(ours) == _state(reference)


@pytest.mark.parametrize("kind", [BookSide, LazySide], ids=["sorted", "lazy"])
def test_a_long_day_of_changes_gives_the_exact_book(kind: type[BookSide]) -> None:
    # 20,000 changes on 300 prices: the heap and the sorted list grow, shrink and rebuild
    side, model = kind(True), {}
    state = 12345
    for _ in range(20_000):
        state = (state * 1103515245 + 12345) % 2**31
        price = f"{100 + state % 300 / 100:.2f}"
        qty = "0.00000000" if state % 3 == 0 else f"{state % 1000 / 10:.8f}"
        side.update([(price, qty)])
        if Decimal(qty) == 0:
            model.pop(Decimal(price), None)
        else:
            model[Decimal(price)] = (price, qty)
    assert list(side.iter_best_first()) == [model[p] for p in sorted(model, reverse=True)]
    best = side.best()
    assert best == model[max(model)]


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.tuples(_PRICE, _QTY), max_size=6))
def test_level_floats_reads_what_float_reads(levels: list[Level]) -> None:
    packed = _fastbook.level_floats(levels)
    plain = all(
        text and set(text) <= set("0123456789.") and text.count(".") <= 1 and text != "."
        and len(text) <= 300
        for level in levels for text in level
    )  # fmt: skip
    if not plain:
        assert packed is None
        return
    assert packed is not None
    values = struct.unpack(f"={2 * len(levels)}d", packed)
    expected = [float(text) for level in levels for text in level]
    assert [v.hex() for v in values] == [e.hex() for e in expected]


@pytest.mark.parametrize(
    "text",
    [
        "0", "0.", ".5", "5.", "000.000", "61737.63000000", "0.00000001", "123456789012345",
        "1234567890123456", "12345678901234567890", "0.1234567890123456789", "9007199254740993",
        "0." + "0" * 30 + "1", "1" + "0" * 22, "1" + "0" * 23 + ".5", "9" * 300,
        "0.000000000000000000000001", "2.2250738585072014e-308".replace("e-308", ""),
    ],
)  # fmt: skip
def test_level_floats_edges(text: str) -> None:
    packed = _fastbook.level_floats([(text, text)])
    assert packed is not None
    value = struct.unpack("=2d", packed)[0]
    assert value.hex() == float(text).hex()
    assert math.isfinite(value)


def test_level_floats_leaves_other_shapes_to_python() -> None:
    assert _fastbook.level_floats([("1", "2", "3")]) is None  # type: ignore[list-item]
    assert _fastbook.level_floats([["1", "2"]]) is None  # type: ignore[list-item]
    assert _fastbook.level_floats([(1.0, "2")]) is None  # type: ignore[list-item]
    assert _fastbook.level_floats(iter([("1", "2")])) is None  # type: ignore[arg-type]
    assert _fastbook.level_floats([]) == b""


def test_the_c_loops_refuse_what_they_are_not_made_for() -> None:
    for update in (_fastbook.sorted_update, _fastbook.lazy_update):
        with pytest.raises(ValueError, match="negative"):
            update({}, [], 1.0, [("1", "1")], -1, set())
        with pytest.raises(TypeError):
            update({}, [], 1.0, iter([("1", "1")]), 0, set())  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            update({}, [], 1.0, [("1", "1")], 0)  # type: ignore[call-arg]
        book: dict[float, tuple[str, str]] = {}
        assert update(book, [], 1.0, [("1.5", "2"), ("x", "1")], 0, set()) == 1  # x: Python's
        assert book == {1.5: ("1.5", "2")}
        assert update(book, [], 1.0, [("1.5", "2"), ("x", "1")], 2, set()) == -1  # nothing left


def test_the_c_loops_are_built_and_in_use() -> None:
    # make test builds them (gcc); without a compiler the Python loops run alone
    assert bookside.ACCELERATED
    assert BookSide(True)._fast is _fastbook.sorted_update
    assert LazySide(True)._fast is _fastbook.lazy_update


def test_without_the_c_loops_the_python_loops_run() -> None:
    code = (
        "import sys; sys.modules['booktape._fastbook'] = None\n"
        "from booktape import bookside\n"
        "from booktape.book import OrderBook\n"
        "from merger import writer\n"
        "book = OrderBook(lazy_order=True)\n"
        "book.apply_levels([('1.5', '2'), ('1.4', '1')], [('1.6', '0.5')])\n"
        "book.apply_levels([('1.5', '0.000')], [])\n"
        "print(bookside.ACCELERATED, writer._C_FLOATS, book.best_bid(), book.best_ask())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False None ('1.4', '1') ('1.6', '0.5')"
