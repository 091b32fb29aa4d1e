"""The hunyuan backends (filled in by the hunyuan issue)."""

BACKENDS: list = []
