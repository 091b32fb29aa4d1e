"""umT5-XXL encoder with the names of the official ``models_t5_umt5-xxl-enc-bf16.pth``, and its tokenizer.

The arithmetic follows ``wan/modules/t5.py`` operation for operation, so that in
bfloat16 it rounds where the official encoder rounds: unscaled attention
logits plus a per-layer relative-position bias, a float32 softmax cast back,
the tanh-GELU written out elementwise, and T5's RMS norm. Attention is
computed here rather than through `vidcore.attention` for that reason: the
encoder runs once per prompt over at most 512 tokens, and matching the
official rounding matters more than the kernel.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vidcore.errors import CheckpointError
from vidcore.nn import BlockStack, RMSNorm

from .configs import T5Params

T5LayerNorm = RMSNorm  # umT5's layer norm is an RMSNorm with a weight


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """The tanh GELU written out in the input dtype, as the official T5 (and transformers' NewGELU) do."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class GELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu_tanh(x)


class RelativeBias(nn.Module):
    """Bidirectional T5 relative-position buckets -> a per-head additive bias (1, heads, Lq, Lk)."""

    def __init__(self, num_buckets: int, num_heads: int, max_distance: int = 128):
        super().__init__()
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.embedding = nn.Embedding(num_buckets, num_heads)

    def buckets(self, lq: int, lk: int, device: torch.device) -> torch.Tensor:
        rel = torch.arange(lk, device=device)[None, :] - torch.arange(lq, device=device)[:, None]
        half = self.num_buckets // 2
        out = (rel > 0).long() * half
        rel = rel.abs()
        exact = half // 2
        large = exact + (torch.log(rel.float() / exact) / math.log(self.max_distance / exact)
                         * (half - exact)).long()
        large = torch.minimum(large, torch.full_like(large, half - 1))
        return out + torch.where(rel < exact, rel, large)

    def forward(self, lq: int, lk: int) -> torch.Tensor:
        b = self.buckets(lq, lk, self.embedding.weight.device)
        return self.embedding(b).permute(2, 0, 1).unsqueeze(0).contiguous()


class T5Attention(nn.Module):
    def __init__(self, dim: int, dim_attn: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim_attn, bias=False)
        self.k = nn.Linear(dim, dim_attn, bias=False)
        self.v = nn.Linear(dim, dim_attn, bias=False)
        self.o = nn.Linear(dim_attn, dim, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n = x.shape[0], self.num_heads
        q, k, v = (f(x).view(b, x.shape[1], n, -1) for f in (self.q, self.k, self.v))
        logits = torch.einsum("binc,bjnc->bnij", q, k) + bias
        attn = F.softmax(logits.float(), dim=-1).type_as(logits)
        out = torch.einsum("bnij,bjnc->binc", attn, v)
        return self.o(out.reshape(b, x.shape[1], -1))


class T5FeedForward(nn.Module):
    def __init__(self, dim: int, dim_ffn: int):
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(dim, dim_ffn, bias=False), GELU())
        self.fc1 = nn.Linear(dim, dim_ffn, bias=False)
        self.fc2 = nn.Linear(dim_ffn, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x) * self.gate(x))


class T5Block(nn.Module):
    def __init__(self, p: T5Params):
        super().__init__()
        self.norm1 = T5LayerNorm(p.dim, p.eps)
        self.attn = T5Attention(p.dim, p.dim_attn, p.num_heads)
        self.norm2 = T5LayerNorm(p.dim, p.eps)
        self.ffn = T5FeedForward(p.dim, p.dim_ffn)
        self.pos_embedding = RelativeBias(p.num_buckets, p.num_heads, p.max_distance)

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None) -> torch.Tensor:
        n = x.shape[1]
        bias = x.new_zeros(x.shape[0], self.attn.num_heads, n, n) + self.pos_embedding(n, n)
        if mask is not None:
            bias = bias.masked_fill(mask.view(x.shape[0], 1, 1, n) == 0, torch.finfo(x.dtype).min)
        x = x + self.attn(self.norm1(x), bias)
        return x + self.ffn(self.norm2(x))


class UMT5Encoder(nn.Module):
    """Encoder-only umT5 (every block with its own relative-position bias, as umT5 has)."""

    def __init__(self, p: T5Params):
        super().__init__()
        self.params = p
        self.token_embedding = nn.Embedding(p.vocab, p.dim)
        self.blocks = BlockStack(T5Block(p) for _ in range(p.num_layers))
        self.norm = T5LayerNorm(p.dim, p.eps)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.token_embedding(ids)
        x = self.blocks(x, mask=mask)
        return self.norm(x)

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Hidden states with every position past each prompt's length zeroed (the official trim + zero pad)."""
        out = self(ids, mask)
        return out * mask.to(out.dtype).unsqueeze(-1)


# -- tokenizer ---------------------------------------------------------------------------------------
def clean_prompt(text: str) -> str:
    """The official ``clean='whitespace'``: ftfy fix, HTML unescape twice, strip, collapse whitespace."""
    import regex

    try:
        import ftfy
    except ImportError as exc:  # a declared dependency; say how to fix it
        raise CheckpointError("the Wan prompt cleaner needs ftfy: pip install ftfy") from exc
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip()


class WanTokenizer:
    """The Hugging Face tokenizer shipped beside the checkpoint (``google/umt5-xxl``), padded to ``text_len``."""

    def __init__(self, path: str | Path, text_len: int = 512):
        from transformers import AutoTokenizer

        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"tokenizer folder {str(path)!r} is missing; it ships with the checkpoint "
                                  "(google/umt5-xxl/); re-run `vidcore download`")
        self.text_len = text_len
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.tokenizer([clean_prompt(p) for p in prompts], padding="max_length", truncation=True,
                             max_length=self.text_len, add_special_tokens=True, return_tensors="pt")
        return out.input_ids, out.attention_mask
