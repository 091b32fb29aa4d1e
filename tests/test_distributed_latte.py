"""The Latte DiT split over 2 and 4 CPU processes equals its one-process forward.

Latte's state is (B, frames, tokens per frame, hidden); its plan shards the
frames, so spatial attention stays local and temporal attention (or the full
attention of ``attention="full"``) spans the ranks. 3 frames on 4 ranks leaves
the last rank nothing but padding.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("vidcore_latte")
from vidcore_latte.models.dit import LatteConfig, LatteDiT  # noqa: E402

from vidcore.distributed.testing import launch, randomize, sharded_vs_single  # noqa: E402


def build(attention: str, frames: int = 3):
    def make():
        cfg = LatteConfig(in_channels=4, hidden=32, depth=2, heads=4, attention=attention, context_dim=12,
                          frame_conditioning=True)
        model = LatteDiT(cfg).eval()
        randomize(model, 5)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(1, 4, frames, 8, 6, generator=gen)
        mask = torch.tensor([1.0, 0.0, 0.0][:frames] + [0.0] * (frames - 3)).view(1, 1, frames, 1, 1)
        kwargs = {"context": torch.randn(1, 12, generator=gen), "cond_frames": torch.randn(x.shape, generator=gen),
                  "cond_mask": mask}
        return model, (x, torch.tensor([500.0])), kwargs
    return make


CASES = {
    2: {"factorised-ulysses2": ("factorised", 2, 1), "factorised-ring2": ("factorised", 1, 2),
        "full-ulysses2": ("full", 2, 1)},
    4: {"factorised-ulysses4": ("factorised", 4, 1), "full-ring4": ("full", 1, 4),
        "factorised-ulysses2-ring2": ("factorised", 2, 2)},
}


def _run(rank: int, world: int) -> dict:
    return {name: sharded_vs_single(build(kind), u, r) for name, (kind, u, r) in CASES[world].items()}


@pytest.fixture(scope="module")
def results():
    return {2: launch(_run, 2), 4: launch(_run, 4)}


@pytest.mark.parametrize("world, name", [(w, n) for w, cases in CASES.items() for n in cases])
def test_latte_sharded_forward_equals_one_process(results, world, name):
    for res in results[world]:
        r = res[name]
        assert r["scale"] > 0.1 and r["err"] <= 2e-5 * r["scale"], (name, r["err"], r["scale"])
        assert {s[1] for s in r["seen"]} == {-(-3 // world)}  # frames per rank (padded)
        assert torch.equal(r["out"], results[world][0][name]["out"])
