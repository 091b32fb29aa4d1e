"""`vidcore.attention`: the one seam through which every model computes attention.

q, k, v are (batch, heads, tokens, head_dim), as in
`torch.nn.functional.scaled_dot_product_attention` (k/v may have fewer heads
than q: grouped-query attention). `attention_varlen` takes packed sequences of
different lengths instead, so padding is never computed.

The backend is chosen per call (``backend=``), else by ``VIDCORE_ATTENTION``,
else automatically:

- automatic: the registered backends with priority > 0, best first, each
  asked ``available(q, k, v, mask)``; the first that accepts runs, and if it
  fails the next is tried; plain SDPA (torch picks its kernel) is the last
  resort. The user never sees a fallback.
- forced: exactly that backend; if it cannot run the inputs, one
  `AttentionBackendError` line says why. Nothing falls back.

Built-in names: ``sdpa`` (torch chooses), ``sdpa-flash``, ``sdpa-efficient``,
``sdpa-cudnn``, ``sdpa-math`` (SDPA restricted to one kernel), and
``flash-attn-2`` / ``flash-attn-3`` when those packages import
(`vidcore.kernels.attention_backends`). Plugins add more through the
``register_attention`` hook: ``register(name, fn, available=..., priority=...,
varlen=...)``; see docs/kernels.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

import torch

from .errors import UnknownNameError, VidcoreError
from .kernels.attention_backends import sdpa  # noqa: F401  (vidcore.attention.sdpa)

log = logging.getLogger(__name__)

AttentionFn = Callable[..., torch.Tensor]
# varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, scale, causal) on packed
# (total_tokens, heads, head_dim) tensors
VarlenFn = Callable[..., torch.Tensor]
ENV = "VIDCORE_ATTENTION"


class AttentionBackendError(VidcoreError):
    """A forced attention backend cannot run the inputs it was given."""


class SequenceParallel(Protocol):
    """Attention over a sequence sharded across ranks (`vidcore.distributed` provides one)."""

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float | None,
                  backend: str | None, replicated: int) -> torch.Tensor: ...


#: the sequence-parallel attention in effect while a sharded block stack runs; None: attention is local.
#: The seam owns it; the distributed layer sets it (`sequence_parallel_scope`) and never the other way round.
_SEQUENCE_PARALLEL: ContextVar[SequenceParallel | None] = ContextVar("vidcore_sequence_parallel", default=None)


def sequence_parallel() -> SequenceParallel | None:
    """What ``attention(..., sequence_parallel=True)`` calls now, or None outside a sharded stack."""
    return _SEQUENCE_PARALLEL.get()


@contextlib.contextmanager
def sequence_parallel_scope(sp: SequenceParallel | None) -> Iterator[None]:
    """Make ``sp`` the sequence-parallel attention for the block (None: attention runs locally in it)."""
    token = _SEQUENCE_PARALLEL.set(sp)
    try:
        yield
    finally:
        _SEQUENCE_PARALLEL.reset(token)


@dataclass
class AttentionBackend:
    name: str
    fn: AttentionFn
    available: Callable[..., bool] | None = None  # available(q, k, v, mask) -> bool
    priority: int = 0  # > 0: tried in automatic selection, higher first
    varlen: VarlenFn | None = None  # native packed-sequence kernel; else a per-sequence loop over fn
    plugin: str = "vidcore"


_cache: tuple[object, dict[str, AttentionBackend]] | None = None


def _backends() -> dict[str, AttentionBackend]:
    """The table of backends: built-in SDPA plus everything registered (rebuilt when plugins reload)."""
    global _cache
    from .plugins import attention_entries, registry

    reg = registry()
    if _cache is not None and _cache[0] is reg:
        return _cache[1]
    table = {}  # "sdpa" among them: the core registers it like every other kernel
    for name, entry in attention_entries().items():
        extra = entry.extra
        table[name] = AttentionBackend(
            name, entry.obj, extra.get("available"), int(extra.get("priority", 0)),
            extra.get("varlen") or getattr(entry.obj, "varlen", None), entry.plugin,
        )
    _cache = (reg, table)
    return table


def attention_backends() -> list[str]:
    """Names accepted by ``backend=`` and ``VIDCORE_ATTENTION``."""
    return sorted(_backends())


def _describe(q: torch.Tensor, mask: torch.Tensor | None) -> str:
    return (f"dtype {q.dtype}, device {q.device.type}, head_dim {q.shape[-1]}, "
            f"mask {'yes' if mask is not None else 'no'}")


def _forced(backend: str | None) -> str | None:
    name = backend or os.environ.get(ENV) or None
    return None if name in (None, "", "auto") else name


def _pick(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
          backend: str | None) -> tuple[AttentionBackend | None, list[AttentionBackend]]:
    """(forced backend, or None) and the automatic candidates in order, SDPA last."""
    table = _backends()
    name = _forced(backend)
    if name is not None:
        if name not in table:
            raise UnknownNameError("attention backend", name, list(table))
        chosen = table[name]
        if chosen.available is not None and not chosen.available(q, k, v, mask):
            raise AttentionBackendError(
                f"attention backend {name!r} cannot run these inputs ({_describe(q, mask)}); "
                f"choose another with {ENV} or backend= (or leave both unset for automatic choice)"
            )
        return chosen, []
    ranked = sorted((b for b in table.values() if b.priority > 0), key=lambda b: -b.priority)
    return None, ranked + [table["sdpa"]]


def _run_auto(candidates: list[AttentionBackend], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              mask: torch.Tensor | None, call: Callable[[AttentionBackend], torch.Tensor]) -> torch.Tensor:
    for cand in candidates[:-1]:
        try:
            if cand.available is None or cand.available(q, k, v, mask):
                return call(cand)
        except Exception as exc:  # an automatic choice falls back silently (logged for debugging)
            log.debug("attention backend %r failed (%s: %s); trying the next", cand.name, type(exc).__name__, exc)
    return call(candidates[-1])


def _call_forced(chosen: AttentionBackend, q: torch.Tensor, mask: torch.Tensor | None,
                 call: Callable[[AttentionBackend], torch.Tensor]) -> torch.Tensor:
    try:
        return call(chosen)
    except AttentionBackendError:
        raise
    except RuntimeError as exc:
        text = str(exc)
        if "No available kernel" in text or "No viable backend" in text:  # SDPA with one kernel allowed
            raise AttentionBackendError(
                f"attention backend {chosen.name!r} cannot run these inputs ({_describe(q, mask)}): "
                f"torch has no such kernel for them; choose another with {ENV} or backend="
            ) from None
        raise


def automatic_choice(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> str:
    """The backend automatic choice would try first for these inputs (benchmarks check it is the fastest)."""
    _, ranked = _pick(q, k, v, mask, "auto")
    for cand in ranked[:-1]:
        if cand.available is None or cand.available(q, k, v, mask):
            return cand.name
    return ranked[-1].name


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: torch.Tensor | None = None,
              scale: float | None = None, causal: bool = False, backend: str | None = None,
              sequence_parallel: bool = False, replicated_tokens: int = 0) -> torch.Tensor:
    """Attention over (B, H, L, D) tensors; ``mask`` is boolean (True = attend) or additive.

    Prefer `attention_varlen` to a padding mask: a mask rules out the fastest
    kernels (flash-attn, and it slows cuDNN by about a third on an H100).

    ``sequence_parallel=True`` marks a self-attention over the tokens a
    sharded `BlockStack` splits across ranks (`vidcore.distributed`): inside
    such a stack it attends over every rank's tokens (Ulysses / ring); anywhere
    else it changes nothing. ``replicated_tokens``: the last N tokens are not
    sharded but held whole by every rank (e.g. joint text tokens).
    """
    if sequence_parallel:
        sp = _SEQUENCE_PARALLEL.get()
        if sp is not None:
            if mask is not None or causal:
                raise AttentionBackendError("sequence-parallel attention takes no mask and is not causal")
            return sp.attention(q, k, v, scale=scale, backend=backend, replicated=replicated_tokens)
    chosen, auto = _pick(q, k, v, mask, backend)

    def call(b: AttentionBackend) -> torch.Tensor:
        return b.fn(q, k, v, mask=mask, scale=scale, causal=causal)

    return _call_forced(chosen, q, mask, call) if chosen is not None else _run_auto(auto, q, k, v, mask, call)


# ---- variable-length (packed) sequences --------------------------------------------------------------


def cu_seqlens(lengths: Sequence[int] | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """Cumulative sequence offsets (B+1,) int32, starting at 0, as flash-attn's varlen kernels take them."""
    lens = torch.as_tensor(lengths, dtype=torch.int32, device=device)
    return torch.cat([lens.new_zeros(1), lens.cumsum(0, dtype=torch.int32)])


def pack(x: torch.Tensor, lengths: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """The first ``lengths[i]`` tokens of each padded sample x[i] (B, L, ...), concatenated (total, ...)."""
    lens = [int(n) for n in (lengths.tolist() if isinstance(lengths, torch.Tensor) else lengths)]
    return torch.cat([x[i, :n] for i, n in enumerate(lens)])


def unpack(packed: torch.Tensor, cu: torch.Tensor, length: int) -> torch.Tensor:
    """Inverse of `pack`: (total, ...) back to (B, length, ...), zeros after each sequence's end."""
    offs = cu.tolist()
    out = packed.new_zeros(len(offs) - 1, length, *packed.shape[1:])
    for i in range(len(offs) - 1):
        out[i, : offs[i + 1] - offs[i]] = packed[offs[i]: offs[i + 1]]
    return out


def _varlen_loop(fn: AttentionFn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: torch.Tensor,
                 cu_k: torch.Tensor, scale: float | None, causal: bool) -> torch.Tensor:
    """Per-sequence attention on the valid slices: exact, no padding computed, one call per sequence."""
    out = q.new_zeros(q.shape[0], q.shape[1], v.shape[-1])
    oq, ok = cu_q.tolist(), cu_k.tolist()
    for i in range(len(oq) - 1):
        if oq[i + 1] == oq[i] or ok[i + 1] == ok[i]:
            continue  # no queries, or nothing to attend to: the output stays zero
        qi = q[oq[i]: oq[i + 1]].transpose(0, 1).unsqueeze(0)
        ki = k[ok[i]: ok[i + 1]].transpose(0, 1).unsqueeze(0)
        vi = v[ok[i]: ok[i + 1]].transpose(0, 1).unsqueeze(0)
        out[oq[i]: oq[i + 1]] = fn(qi, ki, vi, mask=None, scale=scale, causal=causal)[0].transpose(0, 1)
    return out


def attention_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                     cu_seqlens_k: torch.Tensor, *, max_seqlen_q: int | None = None,
                     max_seqlen_k: int | None = None, scale: float | None = None, causal: bool = False,
                     backend: str | None = None) -> torch.Tensor:
    """Attention over packed sequences: q (total_q, H, D), k/v (total_k, Hk, D) -> (total_q, H, Dv).

    Sequence i owns rows ``cu_seqlens_q[i]:cu_seqlens_q[i+1]`` of q and the
    matching rows of k/v (build the offsets with `cu_seqlens`, the tensors with
    `pack`). Only valid tokens are computed and nothing attends across
    sequences. A backend with a native varlen kernel (flash-attn) runs it in
    one call; any other runs once per sequence on its slices.
    """
    if cu_seqlens_q.shape != cu_seqlens_k.shape or cu_seqlens_q.dim() != 1:
        raise VidcoreError(
            f"cu_seqlens_q {tuple(cu_seqlens_q.shape)} and cu_seqlens_k {tuple(cu_seqlens_k.shape)} must both "
            f"be (batch+1,) offsets; build them with vidcore.attention.cu_seqlens(lengths)"
        )
    if max_seqlen_q is None:
        max_seqlen_q = int((cu_seqlens_q[1:] - cu_seqlens_q[:-1]).max()) if len(cu_seqlens_q) > 1 else 0
    if max_seqlen_k is None:
        max_seqlen_k = int((cu_seqlens_k[1:] - cu_seqlens_k[:-1]).max()) if len(cu_seqlens_k) > 1 else 0
    # availability is asked of (B=1, H, L, D) views, as for the padded call
    q4, k4, v4 = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))
    chosen, auto = _pick(q4, k4, v4, None, backend)

    def call(b: AttentionBackend) -> torch.Tensor:
        if b.varlen is not None:
            return b.varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                            scale=scale, causal=causal)
        return _varlen_loop(b.fn, q, k, v, cu_seqlens_q, cu_seqlens_k, scale, causal)

    return _call_forced(chosen, q4, None, call) if chosen is not None else _run_auto(auto, q4, k4, v4, None, call)

