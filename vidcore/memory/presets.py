"""Named memory presets for ``--memory`` (named after the official flags they replace)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import UnknownNameError
from .base import MemoryPolicy, Resident

_PRESETS: dict[str, Callable[[torch.dtype | None], MemoryPolicy]] = {
    "resident": lambda dtype: Resident(dtype),
}


def register_preset(name: str, factory: Callable[[torch.dtype | None], MemoryPolicy]) -> None:
    _PRESETS[name] = factory


def preset_names() -> list[str]:
    return sorted(_PRESETS)


def get_policy(name: str | MemoryPolicy, dtype: torch.dtype | None = None) -> MemoryPolicy:
    if isinstance(name, MemoryPolicy):
        return name
    if name not in _PRESETS:
        raise UnknownNameError("memory preset", name, preset_names())
    return _PRESETS[name](dtype)
