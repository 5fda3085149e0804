"""The booktape collector service (see DESIGN.md)."""
