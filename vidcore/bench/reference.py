"""Another library's model set up the way that library loads it, so a comparison is fair to it."""

from __future__ import annotations

import torch
from torch import nn


def as_loaded(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """``model`` on ``device`` in ``dtype``, except the submodules it asks to keep in float32.

    diffusers models list those in ``_keep_in_fp32_modules`` (Wan: rope, time embedder,
    modulation table, norms) and ``from_pretrained(torch_dtype=...)`` honours it; a plain
    ``.to(dtype)`` would not, and would make the baseline's numerics worse than its users see.
    """
    model.to(device, dtype)
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    if keep:
        for name, module in model.named_modules():
            if keep & set(name.split(".")):
                module.float()
    return model.eval()
