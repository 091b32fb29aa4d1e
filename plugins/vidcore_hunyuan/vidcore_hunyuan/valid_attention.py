"""Attention over each sample's valid tokens only, with no padding mask.

HunyuanVideo pads every prompt to 256 text tokens but the official model never
lets a valid token see the padding: it packs each sample as
``[image | valid text]`` and ``[padding]`` varlen sequences for flash-attn
(hyvideo/modules/attenion.py ``get_cu_seqlens``). Image outputs therefore
depend only on the valid prefix. We get the same numbers without a mask by
slicing each sample to its valid prefix: one unmasked call when the batch
agrees on the length (the common case), else one call per sample. Positions
past a sample's valid length are returned as zeros (nothing downstream reads
them). This is what `vidcore.attention_varlen` computes, without packing the
(B, heads, L, D) tensors into (total, heads, D) copies: for the batch of two
(CFG) a slice per sample costs nothing extra, and each call is a plain
unmasked `vidcore.attention`, so every fast kernel stays eligible.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

import vidcore


def valid_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    lengths: Sequence[int] | None = None, *, sharded: int | None = None) -> torch.Tensor:
    """Self-attention of (B, heads, L, D) tensors where sample b uses only its first ``lengths[b]`` tokens.

    ``sharded``: the first ``sharded`` tokens (the image tokens) are this rank's
    shard under sequence parallelism (`vidcore.distributed`) and the rest (text)
    are replicated; a no-op on one process.
    """
    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if sharded is None:
            return vidcore.attention(q, k, v)
        return vidcore.attention(q, k, v, sequence_parallel=True, replicated_tokens=q.shape[2] - sharded)

    total = q.shape[2]
    if lengths is None or all(n == total for n in lengths):
        return attend(q, k, v)
    if len(set(lengths)) == 1:
        n = lengths[0]
        out = q.new_zeros(q.shape)
        out[:, :, :n] = attend(q[:, :, :n], k[:, :, :n], v[:, :, :n])
        return out
    out = q.new_zeros(q.shape)
    for b, n in enumerate(lengths):
        out[b:b + 1, :, :n] = attend(q[b:b + 1, :, :n], k[b:b + 1, :, :n], v[b:b + 1, :, :n])
    return out
