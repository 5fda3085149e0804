"""Helpers for the order book's tests: both kinds of book side, and the exact model.

Import :func:`on_both_book_kinds` (an autouse fixture) into a test module that uses
``OrderBook`` by that name: each of its tests then runs with ``OrderBook()`` (sorted sides)
and with ``OrderBook(lazy_order=True)`` (sides sorted on demand). :func:`model_sides` is
the ground truth: an exact replay into a dict per side keyed by ``Decimal``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from decimal import Decimal

import pytest

from booktape import book as book_module
from booktape.book import Side

Change = tuple[Side, str, str]  # side, price, quantity (zero removes)


@pytest.fixture(autouse=True, scope="module", params=[False, True], ids=["sorted", "lazy"])
def on_both_book_kinds(request: pytest.FixtureRequest) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            request.module,
            "OrderBook",
            functools.partial(book_module.OrderBook, lazy_order=request.param),
        )
        yield


def model_sides(changes: list[Change]) -> dict[Side, dict[Decimal, tuple[str, str]]]:
    """Each side's levels by exact price after ``changes``; the latest spelling wins."""
    sides: dict[Side, dict[Decimal, tuple[str, str]]] = {Side.BID: {}, Side.ASK: {}}
    for side, price, qty in changes:
        if Decimal(qty) == 0:
            sides[side].pop(Decimal(price), None)
        else:
            sides[side][Decimal(price)] = (price, qty)
    return sides
