"""Benchmarks: ``python -m bench.<name> [--quick] [--json]`` (see DESIGN.md)."""
