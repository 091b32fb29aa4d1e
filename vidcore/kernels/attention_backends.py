"""Attention kernels the core registers beside SDPA (each only when it can import)."""

from __future__ import annotations

from collections.abc import Callable


def builtin_attention_backends() -> list[tuple[str, Callable, Callable | None, int]]:
    """(name, fn, available, priority) for each optional kernel that is importable here."""
    return []
