"""`vidcore.attention`: the one seam through which every model computes attention.

q, k, v are (batch, heads, tokens, head_dim), as in
`torch.nn.functional.scaled_dot_product_attention`. The backend is chosen per
call (``backend=``), by ``VIDCORE_ATTENTION``, or automatically. An
automatically chosen backend that cannot run the inputs falls back to SDPA
silently; one the user forces raises a clear error.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import UnknownNameError, VidcoreError

AttentionFn = Callable[..., torch.Tensor]


@dataclass
class AttentionBackend:
    name: str
    fn: AttentionFn
    available: Callable[..., bool] | None = None  # available(q, k, v, mask) -> bool
    priority: int = 0  # higher wins in automatic selection


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: torch.Tensor | None = None,
         scale: float | None = None, causal: bool = False) -> torch.Tensor:
    """PyTorch's scaled_dot_product_attention (flash, efficient, cuDNN or math, as torch picks)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)


def _backends() -> dict[str, AttentionBackend]:
    from .plugins import attention_entries

    out = {"sdpa": AttentionBackend("sdpa", sdpa, None, 0)}
    for name, entry in attention_entries().items():
        out[name] = AttentionBackend(name, entry.obj, entry.extra.get("available"), entry.extra.get("priority", 0))
    return out


def attention_backends() -> list[str]:
    return sorted(_backends())


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: torch.Tensor | None = None,
              scale: float | None = None, causal: bool = False, backend: str | None = None) -> torch.Tensor:
    """Attention over (B, H, L, D) tensors; ``mask`` is boolean (True = attend) or additive."""
    table = _backends()
    forced = backend or os.environ.get("VIDCORE_ATTENTION") or None
    if forced:
        if forced not in table:
            raise UnknownNameError("attention backend", forced, list(table))
        chosen = table[forced]
        if chosen.available is not None and not chosen.available(q, k, v, mask):
            raise VidcoreError(
                f"attention backend {forced!r} cannot run these inputs "
                f"(dtype {q.dtype}, device {q.device.type}, mask {'yes' if mask is not None else 'no'}); "
                f"choose another with VIDCORE_ATTENTION or backend="
            )
        return chosen.fn(q, k, v, mask=mask, scale=scale, causal=causal)
    for cand in sorted(table.values(), key=lambda b: -b.priority):
        if cand.priority <= 0:
            break
        try:
            if cand.available is None or cand.available(q, k, v, mask):
                return cand.fn(q, k, v, mask=mask, scale=scale, causal=causal)
        except Exception:  # an automatic choice falls back silently
            continue
    return sdpa(q, k, v, mask=mask, scale=scale, causal=causal)
