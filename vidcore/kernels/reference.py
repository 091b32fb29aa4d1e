"""Plain-torch references of the fused ops (the numerics the Triton kernels must match).

Norm statistics are computed in float32 and the result cast back to the input
dtype, as Wan2.2 and HunyuanVideo do; ``modulate`` uses ``x * (1 + scale) + shift``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dim, in float32, cast back to x.dtype, then scaled by ``weight``."""
    xf = x.float()
    out = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).type_as(x)
    return out * weight if weight is not None else out


def layer_norm(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
               eps: float = 1e-6) -> torch.Tensor:
    """LayerNorm over the last dim, computed in float32 and cast back to x.dtype."""
    w = weight.float() if weight is not None else None
    b = bias.float() if bias is not None else None
    return F.layer_norm(x.float(), (x.shape[-1],), w, b, eps).type_as(x)


def norm_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, *, kind: str = "layer",
                  weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, eps: float = 1e-6,
                  out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``norm(x) * (1 + scale) + shift`` (AdaLN); shift/scale broadcast against x.

    The product is taken in the dtype of ``scale`` promoted with x's (float32
    modulation keeps float32, as the official Wan code does under autocast).
    """
    normed = layer_norm(x, weight, bias, eps) if kind == "layer" else rms_norm(x, weight, eps)
    out = normed * (1 + scale) + shift
    return out.to(out_dtype) if out_dtype is not None else out


def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None = None, *,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """``x + gate * y`` (``x + y`` without a gate), in the promoted dtype, returned in x.dtype.

    ``out`` (x itself, say) receives the result, saving an allocation of the residual stream.
    """
    result = (x + (y * gate if gate is not None else y)).to(x.dtype)
    return out.copy_(result) if out is not None else result


def qk_rms_norm(q: torch.Tensor, k: torch.Tensor, q_weight: torch.Tensor | None = None,
                k_weight: torch.Tensor | None = None, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """`rms_norm` of q and of k over their last dim, each with its own weight.

    Wan2.2 passes (B, L, heads*head_dim) rows before splitting heads,
    HunyuanVideo (B, L, heads, head_dim) rows; both match this.
    """
    return rms_norm(q, q_weight, eps), rms_norm(k, k_weight, eps)


def rope_freqs_3d(dims: tuple[int, int, int], grid: tuple[int, int, int], theta: float = 10000.0,
                  dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (T*H*W, sum(dims)/2) for RoPE over (t, h, w) with head-dim split ``dims``.

    Each axis i uses frequencies ``theta ** (-2j / dims[i])`` for j < dims[i]/2
    on positions 0..grid[i]-1, and the token order is t-major then h then w.
    """
    tables = []
    for d, n in zip(dims, grid):
        freqs = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64, device=device)[: d // 2] / d)
        angles = torch.outer(torch.arange(n, dtype=torch.float64, device=device), freqs)
        tables.append(angles)
    t, h, w = grid
    ang = torch.cat([
        tables[0][:, None, None, :].expand(t, h, w, -1),
        tables[1][None, :, None, :].expand(t, h, w, -1),
        tables[2][None, None, :, :].expand(t, h, w, -1),
    ], dim=-1).reshape(t * h * w, -1)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def rope_apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x[2j], x[2j+1]) of the last dim by the angles in cos/sin.

    x is (..., L, D) with cos/sin (L, D/2) broadcast over leading dims; the
    rotation is computed in cos's dtype (float64 reproduces Wan's complex
    multiply) and returned in x's dtype.
    """
    xp = x.to(cos.dtype).unflatten(-1, (-1, 2))
    x0, x1 = xp[..., 0], xp[..., 1]
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)
    return out.to(x.dtype)
