"""Triton QK RMSNorm: q and k normalised in one launch (`vidcore.kernels.reference.qk_rms_norm`).

Wan2.2 normalises q and k over the full hidden dim (rows of heads*head_dim =
5120 for A14B, with a weight of that size) before splitting heads;
HunyuanVideo normalises each head (rows of head_dim = 128). Either way q and
k have the same row length, so the first programs of the grid take q's rows
and the rest take k's: one launch instead of two, each row read and written
once, numerics as `vidcore.kernels.reference.rms_norm`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import as_rows, check_device, next_pow2, promote, row_block, tl_dtype
from .dispatch import Unsupported

MAX_BLOCK_C = 16384


@triton.jit
def _rms_rows(X, OUT, W, rows, n_rows, L, C, sxb, sxl, eps, cols,
              HAS_W: tl.constexpr, X_DT: tl.constexpr, W_DT: tl.constexpr, OUT_DT: tl.constexpr):
    cmask = cols < C
    mask = (rows < n_rows)[:, None] & cmask[None, :]
    b = (rows // L).to(tl.int64)
    l = (rows % L).to(tl.int64)
    x = tl.load(X + (b * sxb + l * sxl)[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    y = (x * tl.rsqrt(tl.sum(x * x, axis=1) / C + eps)[:, None]).to(X_DT)
    if HAS_W:
        y = y.to(W_DT) * tl.load(W + cols, mask=cmask, other=0.0).to(W_DT)[None, :]
    tl.store(OUT + rows.to(tl.int64)[:, None] * C + cols[None, :], y.to(OUT_DT), mask=mask)


@triton.jit
def _qk_rms_norm_kernel(
    Q, K, QO, KO, QW, KW,
    nq, nk, Lq, Lk, C, eps,
    sqb, sql, skb, skl,
    HAS_QW: tl.constexpr, HAS_KW: tl.constexpr,
    Q_DT: tl.constexpr, K_DT: tl.constexpr, QW_DT: tl.constexpr, KW_DT: tl.constexpr,
    QO_DT: tl.constexpr, KO_DT: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0)
    q_programs = tl.cdiv(nq, BLOCK_R)
    cols = tl.arange(0, BLOCK_C)
    if pid < q_programs:
        rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
        _rms_rows(Q, QO, QW, rows, nq, Lq, C, sqb, sql, eps, cols, HAS_QW, Q_DT, QW_DT, QO_DT)
    else:
        rows = (pid - q_programs) * BLOCK_R + tl.arange(0, BLOCK_R)
        _rms_rows(K, KO, KW, rows, nk, Lk, C, skb, skl, eps, cols, HAS_KW, K_DT, KW_DT, KO_DT)


def qk_rms_norm(q: torch.Tensor, k: torch.Tensor, q_weight: torch.Tensor | None = None,
                k_weight: torch.Tensor | None = None, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton `vidcore.kernels.reference.qk_rms_norm`."""
    check_device(q, k, q_weight, k_weight)
    C = q.shape[-1]
    if k.shape[-1] != C:
        raise Unsupported(f"q rows of {C} and k rows of {k.shape[-1]} differ")
    block_c = next_pow2(C)
    if block_c > MAX_BLOCK_C:
        raise Unsupported(f"rows of {C} elements are longer than the kernel's {MAX_BLOCK_C}")
    for name, w in (("q_weight", q_weight), ("k_weight", k_weight)):
        if w is not None and tuple(w.shape) != (C,):
            raise Unsupported(f"{name} of shape {tuple(w.shape)} is not ({C},)")
    q3, k3 = as_rows(q), as_rows(k)
    qw = q_weight.contiguous() if q_weight is not None else None
    kw = k_weight.contiguous() if k_weight is not None else None
    qo_dt = promote(q.dtype, qw.dtype if qw is not None else None)
    ko_dt = promote(k.dtype, kw.dtype if kw is not None else None)
    for d in (q.dtype, k.dtype, qo_dt, ko_dt):
        tl_dtype(d)
    qo = torch.empty(q.shape, dtype=qo_dt, device=q.device)
    ko = torch.empty(k.shape, dtype=ko_dt, device=k.device)
    nq, nk = q3.shape[0] * q3.shape[1], k3.shape[0] * k3.shape[1]
    block_r = row_block(block_c)
    grid = (triton.cdiv(nq, block_r) + triton.cdiv(nk, block_r),)
    _qk_rms_norm_kernel[grid](
        q3, k3, qo, ko, qw if qw is not None else q3, kw if kw is not None else k3,
        nq, nk, q3.shape[1], k3.shape[1], C, eps,
        q3.stride(0), q3.stride(1), k3.stride(0), k3.stride(1),
        HAS_QW=qw is not None, HAS_KW=kw is not None,
        Q_DT=tl_dtype(q.dtype), K_DT=tl_dtype(k.dtype), QW_DT=tl_dtype(qo_dt), KW_DT=tl_dtype(ko_dt),
        QO_DT=tl_dtype(qo_dt), KO_DT=tl_dtype(ko_dt),
        BLOCK_R=block_r, BLOCK_C=block_c, num_warps=min(16, max(1, block_r * block_c // 512)),
    )
    return qo, ko
