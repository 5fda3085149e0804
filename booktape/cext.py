"""booktape's optional C extensions: ``booktape/_fastframe.c`` and ``booktape/_fastbook.c``.

``setup.py`` builds them with the machine's C compiler when there is one (``optional=True``:
without one the install goes on). Each C function has a Python twin that gives the same
answers, slower, and stays the reference the tests hold it to; a module takes the C one
with :func:`c_function` where it was built.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["c_function"]


def c_function(module: str, name: str) -> Any:
    """``booktape.<module>.<name>``, or None where that extension was not built (or is
    blocked, as a test does with ``sys.modules["booktape.<module>"] = None``)."""
    try:
        extension = importlib.import_module(f"booktape.{module}")
    except ImportError:
        return None
    return getattr(extension, name)
