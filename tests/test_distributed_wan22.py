"""The Wan DiT split over 2 and 4 CPU processes (Ulysses, ring, both) equals its one-process forward.

Tiny configuration as in the plugin's tests; T2V timesteps per sample, TI2V
per latent frame (the modulation is then token-aligned too), I2V conditioning
channels; token counts that do not divide the ranks.
"""

from __future__ import annotations

import pytest
import torch

vidcore_wan22 = pytest.importorskip("vidcore_wan22")
from vidcore_wan22.configs import DiTParams  # noqa: E402
from vidcore_wan22.dit import WanModel  # noqa: E402

from vidcore.distributed.testing import launch, randomize, sharded_vs_single  # noqa: E402

TINY = DiTParams(dim=48, ffn_dim=96, num_heads=4, num_layers=2, in_dim=8, out_dim=8, text_dim=24, text_len=16,
                 freq_dim=32)


def build(kind: str, frames: int = 3, hw: int = 6):
    def make():
        torch.manual_seed(0)
        p = TINY if kind != "i2v" else DiTParams(**{**TINY.__dict__, "in_dim": 12})
        model = WanModel(p).eval()
        randomize(model, 1)
        x = torch.randn(1, 8, frames, hw, hw)
        t = torch.rand(1, frames) * 1000 if kind == "ti2v" else torch.tensor([731.0])
        if kind == "ti2v":
            t[:, 0] = 0.0  # the conditioning frame
        kwargs = {"y": torch.randn(1, 4, frames, hw, hw)} if kind == "i2v" else {}
        return model, (x, t, torch.randn(1, 7, p.text_dim)), kwargs
    return make


CASES = {
    2: {"t2v-ulysses2": ("t2v", 2, 1), "t2v-ring2": ("t2v", 1, 2), "ti2v-ulysses2": ("ti2v", 2, 1),
        "i2v-ring2": ("i2v", 1, 2)},
    4: {"t2v-ulysses4": ("t2v", 4, 1), "ti2v-ring4": ("ti2v", 1, 4), "i2v-ulysses2-ring2": ("i2v", 2, 2)},
}


def _run(rank: int, world: int) -> dict:
    return {name: sharded_vs_single(build(kind), u, r) for name, (kind, u, r) in CASES[world].items()}


@pytest.fixture(scope="module")
def results():
    return {2: launch(_run, 2), 4: launch(_run, 4)}


@pytest.mark.parametrize("world, name", [(w, n) for w, cases in CASES.items() for n in cases])
def test_wan_sharded_forward_equals_one_process(results, world, name):
    tokens = 3 * 3 * 3  # frames x (6/2) x (6/2): uneven for 2 and 4 ranks
    for res in results[world]:
        r = res[name]
        assert r["scale"] > 0.1 and r["err"] <= 2e-5 * r["scale"], (name, r["err"], r["scale"])
        assert {s[1] for s in r["seen"]} == {-(-tokens // world)}
        assert torch.equal(r["out"], results[world][0][name]["out"])
