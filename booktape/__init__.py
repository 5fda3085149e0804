"""booktape: record exchange order books so that nothing is lost, and prove it."""

__version__ = "0.1.0"
