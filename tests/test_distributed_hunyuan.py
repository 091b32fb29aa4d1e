"""The HunyuanVideo DiT split over 2 and 4 CPU processes equals its one-process forward.

Image tokens are sharded; the text tokens of the joint attention stay whole on
every rank (Ulysses gives each rank its heads of them, ring attends to them
as one more block). Covered: per-sample text lengths (valid-prefix attention),
I2V token replacement (the first frame's tokens straddle shard boundaries),
uneven token counts. Tiny configuration as in the plugin's tests (2 heads, so
4 ranks run ring or Ulysses 2 x ring 2).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("vidcore_hunyuan")
from vidcore_hunyuan.dit import HunyuanVideoDiT  # noqa: E402
from vidcore_hunyuan.params import DiTParams  # noqa: E402

from vidcore.distributed.testing import launch, randomize, sharded_vs_single  # noqa: E402

TINY = DiTParams(in_channels=4, out_channels=4, hidden_size=64, heads=2, mlp_ratio=4.0, double_blocks=2,
                 single_blocks=2, refiner_blocks=2, rope_dims=(8, 12, 12), text_dim=48, pooled_dim=24)


def build(lengths: list[int], token_replace: bool = False):
    def make():
        params = dataclasses.replace(TINY, token_replace=token_replace)
        model = HunyuanVideoDiT(params).eval()
        randomize(model, 3)
        gen = torch.Generator().manual_seed(0)
        b = len(lengths)
        x = torch.randn(b, 4, 3, 6, 6, generator=gen)  # 3 x 3 x 3 = 27 image tokens
        text = torch.randn(b, 10, params.text_dim, generator=gen)
        mask = (torch.arange(10)[None] < torch.tensor(lengths)[:, None]).long()
        pooled = torch.randn(b, params.pooled_dim, generator=gen)
        t = torch.tensor([937.5, 412.0][:b])
        return model, (x, t, text, mask, pooled, torch.full((b,), 6016.0)), {}
    return make


CASES = {
    2: {"ulysses2": ([7, 10], False, 2, 1), "ring2": ([7, 10], False, 1, 2),
        "ulysses2-i2v": ([6, 6], True, 2, 1), "ring2-i2v": ([5], True, 1, 2)},
    4: {"ring4": ([7, 10], False, 1, 4), "ulysses2-ring2": ([4, 9], False, 2, 2),
        "ulysses2-ring2-i2v": ([8], True, 2, 2)},
}


def _run(rank: int, world: int) -> dict:
    return {name: sharded_vs_single(build(lengths, tr), u, r) for name, (lengths, tr, u, r) in CASES[world].items()}


@pytest.fixture(scope="module")
def results():
    return {2: launch(_run, 2), 4: launch(_run, 4)}


@pytest.mark.parametrize("world, name", [(w, n) for w, cases in CASES.items() for n in cases])
def test_hunyuan_sharded_forward_equals_one_process(results, world, name):
    local = -(-27 // world)
    for res in results[world]:
        r = res[name]
        assert r["scale"] > 0.1 and r["err"] <= 2e-5 * r["scale"], (name, r["err"], r["scale"])
        double, single = r["seen"][0], r["seen"][1]
        assert double[1] == local  # image tokens of the dual-stream blocks
        assert single[1] == local + max(CASES[world][name][0])  # [image shard | all valid text]
        assert torch.equal(r["out"], results[world][0][name]["out"])
