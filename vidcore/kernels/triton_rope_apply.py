"""Triton 3D RoPE on interleaved pairs (`vidcore.kernels.reference.rope_apply`).

Wan2.2 and HunyuanVideo rotate pairs (x[2j], x[2j+1]) of each head by angles
whose first band of the head dim follows the frame index, the next the row,
the last the column (tables from `rope_freqs_3d`). The tables are per token
and shared by every head and sample, so the kernel reads each table row once
per program and rotates all heads of the tokens it holds. Two layouts:

- x (B, H, L, D) or (H, L, D) or (L, D) with cos/sin (L, D/2): head-first;
- x (B, L, H, D) with cos/sin (L, 1, D/2): token-first (as the models hold q/k
  straight out of the projection, before any transpose).

x may be a strided view (e.g. the image part of a concatenated sequence); the
result is a new contiguous tensor in x's dtype, computed in float32 (float64
when the tables are float64, as Wan's complex multiply).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import check_device, next_pow2, tl_dtype
from .dispatch import Unsupported

#: launch overrides for benchmark sweeps (``block_r``, ``num_warps``); empty in normal use
TUNE: dict[str, int] = {}


@triton.jit
def _rope_kernel(
    X, COS, SIN, OUT,
    n_rows, S1, S2, HALF,
    sxb, sx1, sx2, sc,
    TOKEN_AXIS: tl.constexpr, CDT: tl.constexpr, OUT_DT: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr,
):
    # Whole rows are loaded and stored contiguously and split into (even, odd) pairs in registers:
    # loading x[2j] and x[2j+1] as two stride-2 gathers ran at 6% of the copy bandwidth on an H200.
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    d = tl.arange(0, 2 * BLOCK_H)
    j = tl.arange(0, BLOCK_H)
    rmask = rows < n_rows
    xmask = rmask[:, None] & (d < 2 * HALF)[None, :]
    tmask = rmask[:, None] & (j < HALF)[None, :]
    i2 = (rows % S2).to(tl.int64)
    i1 = ((rows // S2) % S1).to(tl.int64)
    i0 = (rows // (S1 * S2)).to(tl.int64)
    if TOKEN_AXIS == 1:
        tok = i1
    else:
        tok = i2
    x = tl.load(X + (i0 * sxb + i1 * sx1 + i2 * sx2)[:, None] + d[None, :], mask=xmask, other=0.0).to(CDT)
    x0, x1 = tl.split(tl.reshape(x, (BLOCK_R, BLOCK_H, 2)))
    toff = (tok * sc)[:, None] + j[None, :]
    c = tl.load(COS + toff, mask=tmask, other=0.0).to(CDT)
    s = tl.load(SIN + toff, mask=tmask, other=0.0).to(CDT)
    out = tl.reshape(tl.join(x0 * c - x1 * s, x0 * s + x1 * c), (BLOCK_R, 2 * BLOCK_H))
    tl.store(OUT + rows.to(tl.int64)[:, None] * (2 * HALF) + d[None, :], out.to(OUT_DT), mask=xmask)


def rope_apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Triton `vidcore.kernels.reference.rope_apply` for the two layouts in the module docstring."""
    check_device(x, cos, sin)
    D = x.shape[-1]
    if D % 2 or x.numel() == 0:
        raise Unsupported(f"head dim {D} is odd or the input is empty")
    half = D // 2
    if cos.shape != sin.shape:
        raise Unsupported(f"cos {tuple(cos.shape)} and sin {tuple(sin.shape)} differ in shape")
    if cos.dim() == 2 and 2 <= x.dim() <= 4:
        axis = 2
        L = cos.shape[0]
        x4 = x.reshape((1,) * (4 - x.dim()) + tuple(x.shape)) if x.dim() < 4 else x
    elif cos.dim() == 3 and cos.shape[1] == 1 and x.dim() == 4:
        axis = 1
        L = cos.shape[0]
        x4 = x
    else:
        raise Unsupported(f"cos/sin of shape {tuple(cos.shape)} with x of shape {tuple(x.shape)}")
    if cos.shape[-1] != half or x4.shape[axis] != L:
        raise Unsupported(f"cos/sin of shape {tuple(cos.shape)} do not match x of shape {tuple(x.shape)}")
    if x4.stride(-1) != 1:
        x4 = x4.contiguous()
    cos2, sin2 = cos.reshape(L, half), sin.reshape(L, half)
    if cos2.stride(-1) != 1 or sin2.stride() != cos2.stride():
        cos2, sin2 = cos2.contiguous(), sin2.contiguous()
    cdt = torch.float64 if cos.dtype == torch.float64 else torch.float32
    tl_dtype(x.dtype)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    B, S1, S2 = x4.shape[:3]
    n_rows = B * S1 * S2
    block_h = next_pow2(half)
    block_r = TUNE.get("block_r") or max(1, min(64, 4096 // (2 * block_h)))
    _rope_kernel[(triton.cdiv(n_rows, block_r),)](
        x4, cos2, sin2, out,
        n_rows, S1, S2, half,
        x4.stride(0), x4.stride(1), x4.stride(2), cos2.stride(0),
        TOKEN_AXIS=axis, CDT=tl_dtype(cdt), OUT_DT=tl_dtype(x.dtype),
        BLOCK_R=block_r, BLOCK_H=block_h, num_warps=TUNE.get("num_warps") or 4,
    )
    return out
