"""Test helpers: a tiny two-expert model (text encoder, two DiT-like experts with a BlockStack, a "VAE").

`load` materialises it the way `Backend.load` does (each component straight
into the placement's device and dtype); `run` drives it the way the pipeline
does: encode under ``use("text_encoder")``, denoise under ``use(<expert>)``
with one switch (and a ``prefetch`` one step before it), decode under
``use("vae")``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vidcore.memory import MemoryPolicy
from vidcore.nn import BlockStack

DIM = 8


class Block(nn.Module):
    def __init__(self, d: int = DIM):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 2 * d)
        self.fc2 = nn.Linear(2 * d, d)

    def forward(self, x: torch.Tensor, *, emb: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(self.norm(x) + emb)))


class TinyDiT(nn.Module):
    def __init__(self, depth: int = 5, d: int = DIM):
        super().__init__()
        self.inp = nn.Linear(4, d)
        self.temb = nn.Linear(1, d)
        self.blocks = BlockStack(Block(d) for _ in range(depth))
        self.out = nn.Linear(d, 4)

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        emb = self.temb(t.reshape(1, 1).to(x.dtype)) + text
        return self.out(self.blocks(self.inp(x), emb=emb))


class TinyText(nn.Module):
    def __init__(self, d: int = DIM):
        super().__init__()
        self.embed = nn.Embedding(32, d)
        self.proj = nn.Linear(d, d)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.proj(self.embed(ids).mean(dim=0, keepdim=True))


def build(seed: int = 0, depth: int = 5) -> dict[str, nn.Module]:
    torch.manual_seed(seed)
    return {"text_encoder": TinyText(), "high": TinyDiT(depth), "low": TinyDiT(depth), "vae": nn.Linear(4, 3)}


def load(policy: MemoryPolicy, seed: int = 0, depth: int = 5, device: str = "cpu",
         default_dtype: torch.dtype = torch.float32) -> dict[str, nn.Module]:
    components = build(seed, depth)
    place = policy.placement(torch.device(device), default_dtype)
    for name, module in components.items():
        dev, dtype = place(name)
        module.to(device=dev, dtype=dtype)
        module.requires_grad_(False)
    policy.setup(components, torch.device(device))
    return components


def run(policy: MemoryPolicy, steps: int = 4, switch_at: int = 2, prefetch: bool = True,
        on_step: Callable[[int, str], None] | None = None) -> torch.Tensor:
    """Encode, denoise (experts 'high' then 'low'), decode; returns the decoded output."""
    with torch.no_grad():
        with policy.use("text_encoder") as te:
            text = te(torch.arange(6).to(policy.input_device("text_encoder"))).to(policy.device)
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(3, 4, generator=gen).to(policy.device, text.dtype)
        current, ctx = None, None
        for i in range(steps):
            comp = "high" if i < switch_at else "low"
            if comp != current:
                if ctx is not None:
                    ctx.__exit__(None, None, None)
                ctx = policy.use(comp)
                module = ctx.__enter__()
                current = comp
            if prefetch and i == switch_at - 1:
                policy.prefetch("low")
            t = torch.tensor(1.0 - i / steps, device=policy.device)
            x = x - 0.25 * module(x, t, text)
            if on_step is not None:
                on_step(i, comp)
        ctx.__exit__(None, None, None)
        with policy.use("vae") as vae:
            return vae(x.to(policy.input_device("vae"), vae.weight.dtype))
