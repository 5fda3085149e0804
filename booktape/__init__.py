"""booktape: record exchange order books so that nothing is lost, and prove it."""

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:  # for type checkers only: at run time they load on first use
    from booktape.read import read_levels, replay

__all__ = ["__version__", "read_levels", "replay"]


def __getattr__(name: str) -> object:
    """``booktape.read_levels`` and ``booktape.replay``, imported on first use only."""
    if name in ("read_levels", "replay"):
        from booktape import read  # noqa: PLC0415 - keeps `import booktape` cheap

        return getattr(read, name)
    raise AttributeError(f"module 'booktape' has no attribute {name!r}")
