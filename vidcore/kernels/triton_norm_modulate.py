"""Triton LayerNorm / RMSNorm, optionally fused with AdaLN modulation ``norm(x) * (1 + scale) + shift``.

One kernel serves `rms_norm`, `layer_norm` and `norm_modulate` of
`vidcore.kernels.reference`, reproducing its numerics step by step: statistics
in float32, the normalised row cast back to x's dtype, then each product and
sum in the dtype torch's promotion would give it (so fp16/bf16 round where the
reference rounds). A video DiT calls this twice per block on (B, L, C) rows
with C up to 5120, so one program holds a few whole rows and reads x, shift and
scale once: the op is memory-bound, and one pass over memory is the target.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import as_rows, broadcast_rows, check_device, next_pow2, promote, row_block, tl_dtype
from .dispatch import Unsupported

MAX_BLOCK_C = 16384
#: launch overrides for benchmark sweeps (``block_r``, ``num_warps``); empty in normal use
TUNE: dict[str, int] = {}


@triton.jit
def _norm_modulate_kernel(
    X, OUT, W, BIAS, SHIFT, SCALE,
    n_rows, L, C, eps,
    sxb, sxl,
    shb, shl, shc,
    scb, scl, scc,
    RMS: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_MOD: tl.constexpr,
    X_DT: tl.constexpr, WMUL_DT: tl.constexpr, ONE_DT: tl.constexpr, MUL_DT: tl.constexpr,
    ADD_DT: tl.constexpr, OUT_DT: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_C)
    rmask = rows < n_rows
    cmask = cols < C
    mask = rmask[:, None] & cmask[None, :]
    b = (rows // L).to(tl.int64)
    l = (rows % L).to(tl.int64)
    x = tl.load(X + (b * sxb + l * sxl)[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if RMS:
        ms = tl.sum(x * x, axis=1) / C
        y = (x * tl.rsqrt(ms + eps)[:, None]).to(X_DT)
        if HAS_W:
            w = tl.load(W + cols, mask=cmask, other=0.0)
            y = y.to(WMUL_DT) * w.to(WMUL_DT)[None, :]
    else:
        mean = tl.sum(x, axis=1) / C
        xc = tl.where(mask, x - mean[:, None], 0.0)
        var = tl.sum(xc * xc, axis=1) / C
        y = xc * tl.rsqrt(var + eps)[:, None]
        if HAS_W:
            y = y * tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
        if HAS_B:
            y = y + tl.load(BIAS + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
        y = y.to(X_DT)
    if HAS_MOD:
        sc = tl.load(SCALE + (b * scb + l * scl)[:, None] + cols[None, :] * scc, mask=mask, other=0.0)
        sh = tl.load(SHIFT + (b * shb + l * shl)[:, None] + cols[None, :] * shc, mask=mask, other=0.0)
        one_plus = (sc.to(ONE_DT) + 1).to(MUL_DT)
        y = (y.to(MUL_DT) * one_plus).to(ADD_DT) + sh.to(ADD_DT)
    tl.store(OUT + rows.to(tl.int64)[:, None] * C + cols[None, :], y.to(OUT_DT), mask=mask)


def _launch(x: torch.Tensor, *, rms: bool, weight: torch.Tensor | None, bias: torch.Tensor | None,
            shift: torch.Tensor | None, scale: torch.Tensor | None, eps: float,
            out_dtype: torch.dtype | None) -> torch.Tensor:
    check_device(x, weight, bias, shift, scale)
    C = x.shape[-1]
    block_c = next_pow2(C)
    if block_c > MAX_BLOCK_C:
        raise Unsupported(f"rows of {C} elements are longer than the kernel's {MAX_BLOCK_C}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != (C,):
            raise Unsupported(f"{name} of shape {tuple(t.shape)} is not ({C},)")
    x3 = as_rows(x)
    sh3, sc3 = broadcast_rows(shift, x, "shift"), broadcast_rows(scale, x, "scale")
    weight = weight.contiguous() if weight is not None else None
    bias = bias.contiguous() if bias is not None else None

    # The dtype each step of the reference computes in (torch promotion).
    wmul_dt = promote(x.dtype, weight.dtype) if (rms and weight is not None) else x.dtype
    normed_dt = wmul_dt
    has_mod = shift is not None
    if has_mod:
        assert shift is not None and scale is not None
        one_dt = scale.dtype
        mul_dt = promote(normed_dt, one_dt)
        add_dt = promote(mul_dt, shift.dtype)
    else:
        one_dt = mul_dt = add_dt = normed_dt
    result_dt = out_dtype or add_dt
    for d in (x.dtype, wmul_dt, add_dt, result_dt):
        tl_dtype(d)

    B, L, _ = x3.shape
    n_rows = B * L
    out = torch.empty(x.shape, dtype=result_dt, device=x.device)
    block_r = TUNE.get("block_r") or row_block(block_c)
    dummy = x3
    grid = (triton.cdiv(n_rows, block_r),)
    _norm_modulate_kernel[grid](
        x3, out, weight if weight is not None else dummy, bias if bias is not None else dummy,
        sh3 if sh3 is not None else dummy, sc3 if sc3 is not None else dummy,
        n_rows, L, C, eps,
        x3.stride(0), x3.stride(1),
        *(sh3.stride() if sh3 is not None else (0, 0, 0)),
        *(sc3.stride() if sc3 is not None else (0, 0, 0)),
        RMS=rms, HAS_W=weight is not None, HAS_B=bias is not None, HAS_MOD=has_mod,
        X_DT=tl_dtype(x.dtype), WMUL_DT=tl_dtype(wmul_dt), ONE_DT=tl_dtype(one_dt), MUL_DT=tl_dtype(mul_dt),
        ADD_DT=tl_dtype(add_dt), OUT_DT=tl_dtype(result_dt),
        BLOCK_R=block_r, BLOCK_C=block_c,
        num_warps=TUNE.get("num_warps") or _warps(block_r, block_c),
    )
    return out


def _warps(block_r: int, block_c: int) -> int:
    """4 warps for a program of one long row: on an H200 at (75600, 5120) bf16 rows, 4 warps moved 70% of
    the copy bandwidth, 8 warps 66%, 16 warps 61%, 32 warps 39% (bench/results/gpu-2026-12-04-2.json)."""
    return min(4, max(1, block_r * block_c // 512))


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """Triton `vidcore.kernels.reference.rms_norm`."""
    return _launch(x, rms=True, weight=weight, bias=None, shift=None, scale=None, eps=eps, out_dtype=None)


def layer_norm(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
               eps: float = 1e-6) -> torch.Tensor:
    """Triton `vidcore.kernels.reference.layer_norm`."""
    return _launch(x, rms=False, weight=weight, bias=bias, shift=None, scale=None, eps=eps, out_dtype=None)


def norm_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, *, kind: str = "layer",
                  weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, eps: float = 1e-6,
                  out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Triton `vidcore.kernels.reference.norm_modulate`."""
    if kind not in ("layer", "rms"):
        raise Unsupported(f"norm kind {kind!r} is not 'layer' or 'rms'")
    if kind == "rms" and bias is not None:
        raise Unsupported("RMSNorm takes no bias")
    return _launch(x, rms=kind == "rms", weight=weight, bias=bias, shift=shift, scale=scale, eps=eps,
                   out_dtype=out_dtype)
