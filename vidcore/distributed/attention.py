"""Self-attention over a sequence sharded across ranks: Ulysses, ring, or both (USP).

Each rank holds (B, H, n, D) queries/keys/values for its shard of the tokens
(plus, optionally, ``replicated`` tokens at the end that every rank holds whole,
e.g. the text tokens of an MM-DiT's joint attention).

- **Ulysses** (Jacobs et al. 2023, DeepSpeed-Ulysses): an all-to-all turns the
  token split into a head split, so each rank attends over the whole sequence
  with H/U heads, and a second all-to-all turns it back. Exact; needs the head
  count divisible by U; moves 4 x (activations / U) per layer per rank.
- **Ring** (Liu et al. 2023, Ring Attention): K/V blocks travel around the ring
  while each rank attends its queries to the block it holds and merges the
  partial results with their log-sum-exp (the online softmax of
  FlashAttention). Any head count; the sends overlap the block computations.
- Both: Ulysses inside each group of U ranks, ring across the groups
  (Fang & Zhao 2024, "USP"), as `vidcore.distributed.layout` lays them out.

Padding (the sequence is padded to a multiple of the SP degree) is never
attended to: padded keys are sliced off (they sit at the end of the sequence,
so the valid keys of every block are a prefix), and padded query rows are
computed but dropped when the stack gathers its output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..attention import attention
from .collectives import RingShift, all_gather, all_to_all

if TYPE_CHECKING:
    from .context import SequenceContext


def block_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of q over one K/V block, with the float32 log-sum-exp (B, H, Lq) of its scores.

    Uses torch's flash kernels where they return the log-sum-exp (CPU flash; on
    CUDA flash for fp16/bf16, else memory-efficient), falling back to plain math.
    """
    if k.shape[1] != q.shape[1]:  # grouped-query attention: expand K/V heads for the block kernels
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    aten = torch.ops.aten
    try:
        if q.device.type == "cpu":
            out, lse = aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, scale=scale)
            return out, lse.float()
        if q.device.type == "cuda":
            if q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 256:
                res = aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False, scale=scale)
                return res[0], res[1].float()
            res = aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, False, scale=scale)
            return res[0], res[1][..., : q.shape[2]].float()
    except (RuntimeError, NotImplementedError):
        pass
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    lse = torch.logsumexp(scores, dim=-1)
    out = torch.matmul(torch.exp(scores - lse.unsqueeze(-1)), v.float())
    return out.to(q.dtype), lse


class _Merge:
    """Online-softmax accumulation of partial attention results (float32)."""

    def __init__(self) -> None:
        self.out: torch.Tensor | None = None
        self.lse: torch.Tensor | None = None

    def add(self, out: torch.Tensor, lse: torch.Tensor) -> None:
        if self.out is None:
            self.out, self.lse = out.float(), lse
            return
        new = torch.logaddexp(self.lse, lse)
        self.out = self.out * torch.exp(self.lse - new).unsqueeze(-1) + out.float() * torch.exp(lse - new).unsqueeze(-1)
        self.lse = new


def ring_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk_valid: list[int],
                   ctx: SequenceContext, scale: float, k_tail: torch.Tensor | None = None,
                   v_tail: torch.Tensor | None = None) -> torch.Tensor:
    """q (this rank's rows) against every ring member's K/V chunk (only its first ``chunk_valid[j]``
    keys are real) plus an optional replicated tail block; returns (B, H, Lq, D) in q's dtype."""
    g = ctx.groups
    size, me = g.layout.ring, g.ring_rank
    shift = RingShift(g.ranks["ring"], g.ring)
    acc = _Merge()
    if k_tail is not None and k_tail.shape[2] > 0:
        acc.add(*block_attention(q, k_tail, v_tail, scale))
    cur = [k, v]
    for step in range(size):
        src = (me - step) % size
        pending = shift.start(cur) if step + 1 < size else None
        n = chunk_valid[src]
        if n > 0:
            acc.add(*block_attention(q, cur[0][:, :, :n], cur[1][:, :, :n], scale))
        if pending is not None:
            cur, handle = pending
            shift.wait(handle)
    assert acc.out is not None  # the sequence has at least one real key
    return acc.out.to(q.dtype)


def sequence_parallel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ctx: SequenceContext, *,
                                scale: float | None = None, backend: str | None = None,
                                replicated: int = 0) -> torch.Tensor:
    """Attention over the whole sharded sequence for this rank's query rows (see the module docstring).

    The sharded part of q/k/v must list the shard's units in order, each
    contributing the same number of consecutive tokens (a unit is whatever axis
    the stack's plan shards: a token, or a frame of tokens).
    """
    g, info = ctx.groups, ctx.info
    U, R = g.layout.ulysses, g.layout.ring
    n = q.shape[2] - replicated
    if n <= 0 or k.shape[2] - replicated != n or n % info.local:
        raise RuntimeError(
            f"sequence-parallel attention got {q.shape[2]} query / {k.shape[2]} key tokens with {replicated} "
            f"replicated, but this rank's shard has {info.local} units: the model's sequence_parallel_plan "
            f"does not match its attention call")
    per_unit = n // info.local
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    qs, ks, vs = q[:, :, :n], k[:, :, :n], v[:, :, :n]
    tail = (q[:, :, n:], k[:, :, n:], v[:, :, n:]) if replicated else None
    if U > 1:
        qs, ks, vs = (all_to_all(t, 1, 2, g.ulysses) for t in (qs, ks, vs))  # token split -> head split
        if tail is not None:
            u = g.ulysses_rank
            tail = tuple(t[:, u * (t.shape[1] // U):(u + 1) * (t.shape[1] // U)] for t in tail)
    # this rank now holds the tokens of its ring chunk: shards ring_rank*U ... ring_rank*U + U-1
    chunk_valid = [sum(info.valid(j * U + i) for i in range(U)) * per_unit for j in range(R)]
    q_all = torch.cat([qs, tail[0]], dim=2) if tail is not None else qs
    if R == 1:
        m = chunk_valid[0]
        keys = torch.cat([ks[:, :, :m], tail[1]], dim=2) if tail is not None else ks[:, :, :m]
        vals = torch.cat([vs[:, :, :m], tail[2]], dim=2) if tail is not None else vs[:, :, :m]
        out = attention(q_all, keys, vals, scale=scale, backend=backend)
    else:
        out = ring_attention(q_all, ks, vs, chunk_valid, ctx, scale,
                             tail[1] if tail is not None else None, tail[2] if tail is not None else None)
    out_s, out_t = out[:, :, :qs.shape[2]], out[:, :, qs.shape[2]:]
    if U > 1:
        out_s = all_to_all(out_s, 2, 1, g.ulysses)  # head split -> token split
        if tail is not None:
            out_t = all_gather(out_t, 1, g.ulysses)
    return torch.cat([out_s, out_t], dim=2) if tail is not None else out_s
