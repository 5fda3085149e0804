"""The booktape nightly merger (see DESIGN.md)."""
