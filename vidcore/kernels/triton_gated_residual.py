"""Triton gated residual ``x + gate * y`` (`vidcore.kernels.reference.gated_residual`).

A DiT block ends each of its two or three branches with this add; unfused it
writes ``gate * y`` to memory and reads it back. Here x, y and the gate (per
token (B, L, C), per sample (B, 1, C), or a strided chunk of a modulation
tensor) are read once and the sum written once. The product is taken in the
promoted dtype of y and gate and the sum in the promotion of all three, as the
reference does; the result has x's dtype. ``out=x`` updates the residual
stream in place, saving one allocation of the largest activation.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import as_rows, broadcast_rows, check_device, next_pow2, promote, tl_dtype
from .dispatch import Unsupported


@triton.jit
def _gated_residual_kernel(
    X, Y, G, OUT,
    n_rows, L, C,
    sxb, sxl, syb, syl, sgb, sgl, sgc, sob, sol,
    HAS_G: tl.constexpr, MUL_DT: tl.constexpr, ADD_DT: tl.constexpr, OUT_DT: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (rows < n_rows)[:, None] & (cols < C)[None, :]
    b = (rows // L).to(tl.int64)
    l = (rows % L).to(tl.int64)
    x = tl.load(X + (b * sxb + l * sxl)[:, None] + cols[None, :], mask=mask, other=0.0)
    y = tl.load(Y + (b * syb + l * syl)[:, None] + cols[None, :], mask=mask, other=0.0)
    if HAS_G:
        g = tl.load(G + (b * sgb + l * sgl)[:, None] + cols[None, :] * sgc, mask=mask, other=0.0)
        y = y.to(MUL_DT) * g.to(MUL_DT)
    out = x.to(ADD_DT) + y.to(ADD_DT)
    tl.store(OUT + (b * sob + l * sol)[:, None] + cols[None, :], out.to(OUT_DT), mask=mask)


def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None = None, *,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """Triton `vidcore.kernels.reference.gated_residual`; ``out`` (e.g. x itself) receives the result."""
    check_device(x, y, gate, out)
    if y.shape != x.shape:
        raise Unsupported(f"y of shape {tuple(y.shape)} is not x's {tuple(x.shape)}")
    x3 = as_rows(x)
    y3 = as_rows(y)
    g3 = broadcast_rows(gate, x, "gate")
    mul_dt = promote(y.dtype, gate.dtype if gate is not None else None)
    add_dt = promote(x.dtype, mul_dt)
    for d in (x.dtype, mul_dt, add_dt):
        tl_dtype(d)
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    elif out.shape != x.shape or out.dtype != x.dtype:
        raise Unsupported(f"out must have x's shape {tuple(x.shape)} and dtype {x.dtype}")
    o3 = as_rows(out, copy=False)
    B, L, C = x3.shape
    n_rows = B * L
    block_c = min(next_pow2(C), 1024)
    block_r = max(1, 4096 // block_c)
    grid = (triton.cdiv(n_rows, block_r), triton.cdiv(C, block_c))
    _gated_residual_kernel[grid](
        x3, y3, g3 if g3 is not None else x3, o3,
        n_rows, L, C,
        x3.stride(0), x3.stride(1), y3.stride(0), y3.stride(1),
        *(g3.stride() if g3 is not None else (0, 0, 0)),
        o3.stride(0), o3.stride(1),
        HAS_G=gate is not None, MUL_DT=tl_dtype(mul_dt), ADD_DT=tl_dtype(add_dt), OUT_DT=tl_dtype(x.dtype),
        BLOCK_R=block_r, BLOCK_C=block_c, num_warps=8 if block_r * block_c >= 4096 else 4,
    )
    return out
