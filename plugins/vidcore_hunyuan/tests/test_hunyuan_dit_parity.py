"""Tiny-config DiT parity with diffusers' HunyuanVideoTransformer3DModel (fp32, CPU).

Our model attends to each sample's valid text tokens only (no mask); diffusers
masks the padding. Weights go through our own official->diffusers conversion,
so this also proves the conversion (splits, renames, the final AdaLN swap).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hunyuan_tiny import TINY_DIT, diffusers_dit_config
from vidcore_hunyuan.convert import from_diffusers, to_diffusers
from vidcore_hunyuan.dit import HunyuanVideoDiT

diffusers = pytest.importorskip("diffusers")


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial weights everywhere (the official init zeroes the modulations and the final layer)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.5 / p.shape[-1] ** 0.5 if p.ndim > 1 else 0.1)
                    + (1.0 if p.ndim == 1 and p.shape[0] == TINY_DIT.head_dim else 0.0))


def _inputs(p, lengths, seed=0, frames=3):
    gen = torch.Generator().manual_seed(seed)
    b, n_txt = len(lengths), 10
    x = torch.randn(b, p.in_channels, frames, 8, 6, generator=gen)
    text = torch.randn(b, n_txt, p.text_dim, generator=gen)
    mask = (torch.arange(n_txt)[None] < torch.tensor(lengths)[:, None]).long()
    pooled = torch.randn(b, p.pooled_dim, generator=gen)
    t = torch.tensor([937.5, 412.0][:b])
    g = torch.full((b,), 6016.0)
    return x, t, text, mask, pooled, g


def _pair(params, image_condition_type=None, seed=1):
    ours = HunyuanVideoDiT(params).eval()
    _randomize(ours, seed)
    ref = diffusers.HunyuanVideoTransformer3DModel(**diffusers_dit_config(params, image_condition_type)).eval()
    ref.load_state_dict(to_diffusers(ours.state_dict(), params.hidden_size), strict=True)
    return ours, ref


@pytest.mark.parametrize("lengths", [[7, 10], [4, 4], [10, 10]])
def test_t2v_forward_matches_diffusers(lengths):
    torch.manual_seed(0)
    ours, ref = _pair(TINY_DIT)
    x, t, text, mask, pooled, g = _inputs(TINY_DIT, lengths)
    with torch.no_grad():
        out = ours(x, t, text, mask, pooled, g)
        want = ref(x, t, text, mask, pooled, g, return_dict=False)[0]
    assert out.shape == want.shape == x.shape
    scale = want.abs().max()
    assert scale > 0.1
    torch.testing.assert_close(out, want, rtol=0, atol=2e-5 * float(scale))


def test_padding_content_is_ignored():
    """Garbage in the padded text positions must not change the output (valid-token attention)."""
    ours, _ = _pair(TINY_DIT)
    x, t, text, mask, pooled, g = _inputs(TINY_DIT, [6, 9])
    noisy = text.clone()
    noisy[0, 6:] = 100.0
    noisy[1, 9:] = -50.0
    with torch.no_grad():
        torch.testing.assert_close(ours(x, t, text, mask, pooled, g), ours(x, t, noisy, mask, pooled, g))


def test_i2v_token_replace_matches_diffusers():
    params = dataclasses.replace(TINY_DIT, token_replace=True)
    ours, ref = _pair(params, "token_replace", seed=3)
    x, t, text, mask, pooled, g = _inputs(params, [5, 8], seed=4)
    with torch.no_grad():
        out = ours(x, t, text, mask, pooled, g)
        want = ref(x, t, text, mask, pooled, g, return_dict=False)[0]
        plain = HunyuanVideoDiT(TINY_DIT).eval()
        plain.load_state_dict(ours.state_dict())
        differs = (plain(x, t, text, mask, pooled, g) - out).abs().max()
    scale = want.abs().max()
    torch.testing.assert_close(out, want, rtol=0, atol=2e-5 * float(scale))
    assert differs > 1e-3 * scale  # token replacement really changes the first frame's modulation


def test_diffusers_round_trip_is_exact():
    ours, ref = _pair(TINY_DIT)
    sd = ours.state_dict()
    back = from_diffusers(ref.state_dict(), list(sd), TINY_DIT.hidden_size, {k: v.shape[0] for k, v in sd.items()})
    assert set(back) == set(sd)
    for k in sd:
        assert torch.equal(back[k], sd[k]), k
