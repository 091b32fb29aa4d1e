"""Fused elementwise operations of video DiTs: one function per op, used by every model.

Each op is defined by its plain-torch reference in `vidcore.kernels.reference`.
The functions here take the same arguments and route each call to the Triton
kernel in `vidcore.kernels.triton_<kernel>` when CUDA and Triton can run it,
else to the reference (rules in `vidcore.kernels.dispatch` and docs/kernels.md;
``VIDCORE_KERNELS=reference|triton`` forces one side).
"""

from __future__ import annotations

import torch

from . import reference as _ref
from .dispatch import KernelUnavailableError
from .dispatch import dispatch as _dispatch
from .reference import rope_freqs_3d


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dim (see `reference.rms_norm`)."""
    return _dispatch("norm_modulate", "rms_norm", _ref.rms_norm, [x, weight], x, weight, eps)


def layer_norm(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
               eps: float = 1e-6) -> torch.Tensor:
    """LayerNorm over the last dim (see `reference.layer_norm`)."""
    return _dispatch("norm_modulate", "layer_norm", _ref.layer_norm, [x, weight, bias], x, weight, bias, eps)


def norm_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, *, kind: str = "layer",
                  weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, eps: float = 1e-6,
                  out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``norm(x) * (1 + scale) + shift`` (see `reference.norm_modulate`)."""
    return _dispatch("norm_modulate", "norm_modulate", _ref.norm_modulate, [x, shift, scale, weight, bias],
                    x, shift, scale, kind=kind, weight=weight, bias=bias, eps=eps, out_dtype=out_dtype)


def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None = None, *,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """``x + gate * y`` in x's dtype (see `reference.gated_residual`)."""
    return _dispatch("gated_residual", "gated_residual", _ref.gated_residual, [x, y, gate, out],
                    x, y, gate, out=out)


def rope_apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of the last dim by cos/sin (see `reference.rope_apply`)."""
    return _dispatch("rope_apply", "rope_apply", _ref.rope_apply, [x, cos, sin], x, cos, sin)


def qk_rms_norm(q: torch.Tensor, k: torch.Tensor, q_weight: torch.Tensor | None = None,
                k_weight: torch.Tensor | None = None, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm of q and k, each with its weight, in one launch (see `reference.qk_rms_norm`)."""
    return _dispatch("qk_rms_norm", "qk_rms_norm", _ref.qk_rms_norm, [q, k, q_weight, k_weight],
                    q, k, q_weight, k_weight, eps)


__all__ = [
    "KernelUnavailableError", "gated_residual", "layer_norm", "norm_modulate", "qk_rms_norm", "rms_norm",
    "rope_apply", "rope_freqs_3d",
]
