"""Attention kernels the core registers (`vidcore.attention` chooses among them).

- ``sdpa``: torch's SDPA as torch picks its kernel; the automatic choice's last resort.
- ``sdpa-flash``, ``sdpa-efficient``, ``sdpa-cudnn``, ``sdpa-math``: torch's
  SDPA restricted to one kernel (`torch.nn.attention.sdpa_kernel`), so a
  caller can pick it by name. On an H100 at Wan 720p shapes (issue 5) cuDNN ran
  ~590 TFLOP/s against flash's 366 and efficient's 184 (~410 with a boolean
  mask), so ``sdpa-cudnn`` takes part in automatic choice; it accepts
  fp16/bf16 with head_dim <= 128 on Hopper or newer (compute capability >= 9),
  also when forced. The others run only when named.
- ``flash-attn-3`` (Hopper) and ``flash-attn-2`` (Ampere and later), only when
  their packages import: unmasked fp16/bf16 CUDA inputs with head_dim <= 256,
  automatic choice preferring 3, then cuDNN, then 2. Both carry a native
  varlen kernel for `vidcore.attention.attention_varlen`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
import torch.nn.functional as F

HALF = (torch.float16, torch.bfloat16)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: torch.Tensor | None = None,
         scale: float | None = None, causal: bool = False) -> torch.Tensor:
    """PyTorch's scaled_dot_product_attention (flash, efficient, cuDNN or math, as torch picks)."""
    gqa = {"enable_gqa": True} if k.shape[-3] != q.shape[-3] else {}
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale, **gqa)


def _sdpa_with(kernel_name: str) -> Callable[..., torch.Tensor]:
    """SDPA allowed to use only ``torch.nn.attention.SDPBackend.<kernel_name>``."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kernel = getattr(SDPBackend, kernel_name)

    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: torch.Tensor | None = None,
           scale: float | None = None, causal: bool = False) -> torch.Tensor:
        gqa = {"enable_gqa": True} if k.shape[-3] != q.shape[-3] else {}
        with sdpa_kernel(kernel):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale, **gqa)

    fn.__name__ = f"sdpa_{kernel_name.lower()}"
    return fn


def _capability(t: torch.Tensor) -> tuple[int, int]:
    return torch.cuda.get_device_capability(t.device) if t.is_cuda else (0, 0)


def _cuda_half_unmasked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> bool:
    return (q.is_cuda and mask is None and q.dtype in HALF and k.dtype == q.dtype and v.dtype == q.dtype
            and q.shape[-1] <= 256 and q.shape[-1] % 8 == 0)


def _cuda_only(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> bool:
    return q.is_cuda


def _cudnn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """Hopper or newer, fp16/bf16, head_dim <= 128 (a mask is allowed: cuDNN still beats flash's 'no')."""
    return (q.is_cuda and q.dtype in HALF and k.dtype == q.dtype and v.dtype == q.dtype
            and q.shape[-1] <= 128 and q.shape[-1] % 8 == 0 and _capability(q)[0] >= 9)


def _first(out):
    """flash-attn 3 returns ``out`` or ``(out, lse)`` depending on its version."""
    return out[0] if isinstance(out, tuple) else out


def _flash_attn(module_name: str, min_major: int, max_major: int):
    """(fn, varlen, available) around flash-attn's dense and varlen kernels; None if it does not import."""
    try:
        mod = importlib.import_module(module_name)
        dense, packed = mod.flash_attn_func, mod.flash_attn_varlen_func
    except Exception:  # not installed, or built for another torch/CUDA: simply absent
        return None

    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: torch.Tensor | None = None,
           scale: float | None = None, causal: bool = False) -> torch.Tensor:
        if mask is not None:
            raise ValueError(f"{module_name} takes no mask; use attention_varlen for padding")
        # flash-attn wants (B, L, H, D); a transposed view is fine (it needs only the last dim contiguous)
        out = _first(dense(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                           softmax_scale=scale, causal=causal))
        return out.transpose(1, 2)

    def varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, causal=False):
        return _first(packed(q, k, v, cu_q.to(torch.int32), cu_k.to(torch.int32), max_q, max_k,
                             softmax_scale=scale, causal=causal))

    def available(q, k, v, mask):
        return _cuda_half_unmasked(q, k, v, mask) and min_major <= _capability(q)[0] <= max_major

    fn.varlen = varlen  # type: ignore[attr-defined]
    return fn, varlen, available


def builtin_attention_backends() -> list[tuple[str, Callable, Callable | None, int]]:
    """(name, fn, available, priority) for each kernel usable here; a fn's ``varlen`` attribute is its
    packed-sequence kernel."""
    out: list[tuple[str, Callable, Callable | None, int]] = [
        ("sdpa-math", _sdpa_with("MATH"), None, 0),
        ("sdpa-flash", _sdpa_with("FLASH_ATTENTION"), None, 0),
        ("sdpa-efficient", _sdpa_with("EFFICIENT_ATTENTION"), _cuda_only, 0),
        ("sdpa-cudnn", _sdpa_with("CUDNN_ATTENTION"), _cudnn, 20),
    ]
    fa3 = _flash_attn("flash_attn_interface", 9, 9)
    if fa3 is not None:
        out.append(("flash-attn-3", fa3[0], fa3[2], 30))
    fa2 = _flash_attn("flash_attn", 8, 12)
    if fa2 is not None:
        out.append(("flash-attn-2", fa2[0], fa2[2], 10))
    return out

