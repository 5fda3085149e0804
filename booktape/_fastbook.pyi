# booktape/_fastbook.c: the update loops of booktape/bookside.py in C.
from collections.abc import Sequence
from typing import Any

def sorted_update(
    book: dict[Any, Any],
    keys: list[Any],
    sign: float,
    levels: Sequence[tuple[str, str]],
    start: int,
    zeros: set[str],
    /,
) -> int: ...
def lazy_update(
    book: dict[Any, Any],
    heap: list[Any],
    sign: float,
    levels: Sequence[tuple[str, str]],
    start: int,
    zeros: set[str],
    /,
) -> int: ...
def level_floats(levels: Sequence[tuple[str, str]], /) -> bytes | None: ...
