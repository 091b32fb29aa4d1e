"""The wan22 backends (filled in by the wan22 issue)."""

BACKENDS: list = []
