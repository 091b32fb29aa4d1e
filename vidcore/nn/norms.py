"""Norm modules shared by the model plugins (the arithmetic lives in `vidcore.kernels`)."""

from __future__ import annotations

import torch
from torch import nn

from ..kernels import rms_norm


class RMSNorm(nn.Module):
    """RMSNorm with a learned ``weight``: float32 statistics, cast back to the input dtype, then scaled.

    The state-dict name is ``weight``, as in the Wan, umT5 and HunyuanVideo checkpoints.
    """

    def __init__(self, dim: int, eps: float = 1e-6, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)
