"""Shared launcher helpers for the Triton kernels: dtypes, (B, L, C) views of broadcast operands, block sizes.

Every row-wise kernel sees its operands as (B, L, C) with the last dim
contiguous. Broadcast operands (AdaLN shift/scale of shape (B, 1, C) or
(B, L, C), a (C,) weight, strided chunks of a modulation tensor) keep their
own strides, zero along broadcast dims, so nothing is materialised.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .dispatch import Unsupported

TL_DTYPE = {
    torch.float32: tl.float32,
    torch.float16: tl.float16,
    torch.bfloat16: tl.bfloat16,
    torch.float64: tl.float64,
}


def tl_dtype(dtype: torch.dtype):
    if dtype not in TL_DTYPE:
        raise Unsupported(f"dtype {dtype} is not one of float32, float16, bfloat16, float64")
    return TL_DTYPE[dtype]


def promote(*dtypes: torch.dtype | None) -> torch.dtype:
    """torch's type promotion over the dtypes given (None ignored), as the reference's arithmetic does."""
    out: torch.dtype | None = None
    for d in dtypes:
        if d is not None:
            out = d if out is None else torch.promote_types(out, d)
    assert out is not None
    return out


def as_rows(x: torch.Tensor, *, copy: bool = True) -> torch.Tensor:
    """x viewed as (B, L, C): (L, C) gains B=1, (B, ..., C) folds the middle dims.

    Copies only if it must; with ``copy=False`` (an output written in place)
    a layout that needs a copy is `Unsupported` instead.
    """
    if x.dim() < 1 or x.shape[-1] == 0 or x.numel() == 0:
        raise Unsupported(f"empty or scalar input of shape {tuple(x.shape)}")
    if x.stride(-1) != 1:
        if not copy:
            raise Unsupported("the output's last dim is not contiguous")
        x = x.contiguous()
    if x.dim() == 1:
        return x.view(1, 1, -1)
    if x.dim() == 2:
        return x.unsqueeze(0)
    try:
        return x.view(x.shape[0], -1, x.shape[-1])
    except RuntimeError as exc:
        if not copy:
            raise Unsupported("the output cannot be viewed as rows without a copy") from exc
        return x.contiguous().view(x.shape[0], -1, x.shape[-1])


def broadcast_rows(t: torch.Tensor | None, x: torch.Tensor, what: str) -> torch.Tensor | None:
    """``t`` broadcast to x's shape and viewed as x's (B, L, C) without copying; Unsupported if it cannot."""
    if t is None:
        return None
    try:
        full = t.expand(x.shape)
    except RuntimeError as exc:
        raise Unsupported(f"{what} of shape {tuple(t.shape)} does not broadcast to {tuple(x.shape)}") from exc
    if full.stride(-1) not in (0, 1):
        full = full.contiguous()
    lead = x.shape[0] if x.dim() >= 3 else 1
    try:
        return full.view(lead, -1, x.shape[-1]) if x.dim() != 2 else full.unsqueeze(0)
    except RuntimeError as exc:
        raise Unsupported(f"{what} of shape {tuple(t.shape)} cannot be viewed as rows of x") from exc


def check_device(*tensors: torch.Tensor | None) -> None:
    devices = {t.device for t in tensors if t is not None}
    if len(devices) > 1:
        raise Unsupported(f"tensors on several devices: {sorted(map(str, devices))}")


def row_block(block_c: int, target: int = 4096, most: int = 64) -> int:
    """Rows per program so that one program holds about ``target`` elements (short rows batch up)."""
    return max(1, min(most, target // block_c))


def next_pow2(n: int) -> int:
    return triton.next_power_of_2(n)
