"""The latte backends (filled in by the latte issue)."""

BACKENDS: list = []
