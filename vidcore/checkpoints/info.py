"""What a checkpoint says about one tensor before any data is read, and how messages name tensors."""

from __future__ import annotations

from typing import NamedTuple

import torch


class TensorInfo(NamedTuple):
    """What a checkpoint says about one tensor before any data is read."""

    shape: tuple[int, ...]
    dtype: str  # torch name without the prefix: "bfloat16", "float32", ...


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def quote(name: str) -> str:
    """A name for a message: quoted, and cut short (a header may hold megabyte-long names)."""
    return repr(name) if len(name) <= 60 else repr(name[:60]) + "..."
