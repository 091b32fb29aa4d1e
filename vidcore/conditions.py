"""Conditions of several videos as one batch, and conditions moved to the device that runs them.

Videos batch together when their conditions have the same structure: the same
keyword arguments, tensors of the same shape and dtype (concatenated along
the batch axis), and equal non-tensor values. Anything else cannot be one
denoiser call, and `stack` says why so the caller can run the videos apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .backend import Conditions


class NotStackable(ValueError):
    """The videos' conditions differ in structure; they must be denoised one by one."""


def to_device(obj: Any, device: torch.device) -> Any:
    """Tensors (also inside dicts, lists, tuples) on ``device``; everything else as it is."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def stack(conditions: Sequence[Conditions]) -> Conditions:
    """One `Conditions` for a batch; each video keeps its own ``state`` (not stacked)."""
    if len(conditions) == 1:
        return conditions[0]
    cond = _stack_kwargs([c.cond for c in conditions], "conditional")
    has_uncond = [c.uncond is not None for c in conditions]
    if any(has_uncond) and not all(has_uncond):
        raise NotStackable("some videos have an unconditional pass and some do not")
    uncond = _stack_kwargs([c.uncond for c in conditions], "unconditional") if all(has_uncond) else None
    return Conditions(cond, uncond)


def _stack_kwargs(items: Sequence[dict[str, Any]], what: str) -> dict[str, Any]:
    keys = set(items[0])
    for d in items[1:]:
        if set(d) != keys:
            raise NotStackable(f"the {what} inputs have different keywords ({sorted(keys ^ set(d))})")
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [d[key] for d in items]
        first = values[0]
        if isinstance(first, torch.Tensor):
            same = all(isinstance(v, torch.Tensor) and v.shape == first.shape and v.dtype == first.dtype
                       and v.device == first.device for v in values)
            if not same or first.dim() == 0:
                raise NotStackable(f"{what} input {key!r} differs in shape or type between the videos")
            out[key] = torch.cat(values, dim=0)
        elif any(isinstance(v, torch.Tensor) for v in values) or any(v != first for v in values[1:]):
            raise NotStackable(f"{what} input {key!r} differs between the videos")
        else:
            out[key] = first
    return out
