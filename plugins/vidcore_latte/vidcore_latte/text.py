"""A small text encoder of our own: a word-level tokenizer over a fixed vocabulary and a tiny transformer.

The demo model only has to tell colours, shapes and directions apart, so a
closed vocabulary is enough; an unknown word becomes ``<unk>`` rather than an
error, so any prompt runs. The empty prompt encodes to a learned null vector:
that is the unconditional input for classifier-free guidance.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from vidcore import attention
from vidcore.kernels import gated_residual, layer_norm

VOCAB: tuple[str, ...] = (
    "<pad>", "<unk>", "a", "an", "the", "one", "moving", "moves", "going", "goes", "to", "towards", "toward",
    "red", "green", "blue", "yellow", "circle", "square", "triangle", "ball", "box", "disc",
    "left", "right", "up", "down", "upwards", "downwards", "and", "of", "is", "shape", "slowly", "quickly",
)
PAD, UNK = 0, 1


class Tokenizer:
    """Lower-cases, splits on anything but letters, maps words to ids; pads or truncates to ``length``."""

    def __init__(self, vocab: tuple[str, ...] = VOCAB, length: int = 12):
        self.vocab = vocab
        self.index = {w: i for i, w in enumerate(vocab)}
        self.length = length

    def words(self, text: str) -> list[str]:
        return re.findall(r"[a-z]+", text.lower())

    def __call__(self, texts: list[str]) -> torch.Tensor:
        out = torch.full((len(texts), self.length), PAD, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.index.get(w, UNK) for w in self.words(text)][: self.length]
            if ids:
                out[row, : len(ids)] = torch.tensor(ids)
        return out


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int = len(VOCAB)
    length: int = 12
    dim: int = 128
    heads: int = 4
    layers: int = 1


class _Layer(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        h = layer_norm(x, self.norm1.weight, self.norm1.bias, 1e-5)
        q, k, v = self.qkv(h).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = attention(q, k, v, mask=mask[:, None, None, :])
        x = gated_residual(x, self.proj(a.transpose(1, 2).reshape(B, L, D)))
        return gated_residual(x, self.ff(layer_norm(x, self.norm2.weight, self.norm2.bias, 1e-5)))


class TextEncoder(nn.Module):
    """Token ids -> one pooled vector per prompt (B, dim); an empty prompt gives the learned null vector."""

    def __init__(self, config: TextConfig = TextConfig()):
        super().__init__()
        self.config = config
        self.tokenizer = Tokenizer(length=config.length)
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.pos = nn.Parameter(torch.randn(config.length, config.dim) / math.sqrt(config.dim))
        self.layers = nn.ModuleList(_Layer(config.dim, config.heads) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.dim)
        self.null = nn.Parameter(torch.zeros(config.dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = ids != PAD
        x = self.embed(ids) + self.pos[: ids.shape[1]]
        # an all-pad row would attend to nothing; let it see itself, it is replaced by `null` below
        attn_mask = mask | ~mask.any(1, keepdim=True)
        for layer in self.layers:
            x = layer(x, attn_mask)
        x = layer_norm(x, self.norm.weight, self.norm.bias, 1e-5)
        w = mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * w).sum(1) / w.sum(1).clamp(min=1.0)
        empty = ~mask.any(1, keepdim=True)
        return torch.where(empty, self.null.to(x.dtype).expand_as(pooled), pooled)

    def encode(self, texts: list[str], device: torch.device | str | None = None) -> torch.Tensor:
        ids = self.tokenizer(texts)
        return self(ids.to(device or self.embed.weight.device))
