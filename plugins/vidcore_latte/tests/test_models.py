"""Causal VAE chunking, Latte DiT shapes and AdaLN-Zero, presets, U-Net."""

from __future__ import annotations

import pytest
import torch
from vidcore_latte.models.dit import PRESETS, LatteConfig, LatteDiT, preset
from vidcore_latte.models.unet import UNet3D, UNetConfig
from vidcore_latte.models.vae import CausalVAE, VAEConfig

from vidcore.nn import BlockStack

TINY_VAE = VAEConfig(base_channels=8, channel_mult=(1, 2, 2), temporal_down=(True, True), groups=4)


def test_vae_chunked_equals_whole():
    torch.manual_seed(0)
    vae = CausalVAE(TINY_VAE).eval()
    x = torch.randn(1, 3, 13, 16, 16)
    with torch.no_grad():
        mean, logvar = vae.encode(x)
        mean_c, logvar_c = vae.encode(x, chunk=4)
        assert mean.shape == (1, 4, 4, 4, 4)
        torch.testing.assert_close(mean_c, mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(logvar_c, logvar, rtol=1e-5, atol=1e-5)
        out, out_c = vae.decode(mean), vae.decode(mean, chunk=1)
    assert out.shape == x.shape
    torch.testing.assert_close(out_c, out, rtol=1e-5, atol=1e-5)


def test_vae_is_causal_and_encodes_the_first_frame_alone():
    torch.manual_seed(0)
    vae = CausalVAE(TINY_VAE).eval()
    x = torch.randn(1, 3, 9, 16, 16)
    y = x.clone()
    y[:, :, 5:] += 1.0  # change frames 5..8: latents 0 (frame 0) and 1 (frames 1..4) must not move
    with torch.no_grad():
        a, b = vae.encode(x)[0], vae.encode(y)[0]
        first_alone = vae.encode(x[:, :, :1])[0]
    torch.testing.assert_close(a[:, :, :2], b[:, :, :2])
    assert not torch.allclose(a[:, :, 2], b[:, :, 2])
    torch.testing.assert_close(first_alone[:, :, 0], a[:, :, 0])


def test_vae_default_is_8x_spatial_4x_temporal():
    c = VAEConfig()
    assert (c.spatial_factor, c.temporal_factor, c.latent_frames(17)) == (8, 4, 5)
    with pytest.raises(ValueError):
        c.latent_frames(16)


@pytest.mark.parametrize("attention", ["factorised", "full"])
def test_dit_shapes_and_adaln_zero_start(attention):
    torch.manual_seed(0)
    cfg = LatteConfig(in_channels=4, hidden=32, depth=2, heads=2, patch=2, temporal_patch=1, context_dim=8,
                      attention=attention, frame_conditioning=True)
    model = LatteDiT(cfg)
    assert isinstance(model.blocks, BlockStack)
    x = torch.randn(2, 4, 3, 8, 6)
    out = model(x, torch.tensor([10.0, 900.0]), context=torch.randn(2, 8))
    assert out.shape == x.shape
    assert out.abs().max() == 0  # zero final layer
    tokens = torch.randn(2, 3, 12, 32)
    c = torch.randn(2, 32)
    for block in model.blocks:  # zero gates: every block starts as the identity
        torch.testing.assert_close(block(tokens, c=c), tokens)


def test_dit_uses_its_conditions():
    torch.manual_seed(0)
    cfg = LatteConfig(in_channels=3, hidden=32, depth=1, heads=2, patch=4, temporal_patch=2, context_dim=8,
                      frame_conditioning=True)
    model = LatteDiT(cfg)
    for p in model.parameters():  # leave AdaLN-Zero so that every input matters
        torch.nn.init.normal_(p, std=0.05)
    x = torch.randn(1, 3, 4, 8, 8)
    base = model(x, torch.tensor([500.0]), context=torch.zeros(1, 8))
    assert not torch.allclose(base, model(x, torch.tensor([500.0]), context=torch.ones(1, 8)))
    assert not torch.allclose(base, model(x, torch.tensor([100.0]), context=torch.zeros(1, 8)))
    mask = torch.ones(1, 1, 4, 1, 1)
    assert not torch.allclose(base, model(x, torch.tensor([500.0]), context=torch.zeros(1, 8),
                                          cond_frames=torch.randn_like(x), cond_mask=mask))


def test_refiner_starts_as_the_identity_and_adds_only_its_own_weights():
    torch.manual_seed(0)
    base = LatteConfig(in_channels=3, hidden=32, depth=1, heads=2, patch=4, temporal_patch=2, context_dim=8,
                       frame_conditioning=True)
    plain, refined = LatteDiT(base), LatteDiT(LatteConfig(**{**base.__dict__, "refine": 8}))
    extra = set(refined.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith("refiner.") for k in extra)  # a trained plain network loads with strict=False
    assert set(plain.state_dict()) <= set(refined.state_dict())
    for p in plain.parameters():
        torch.nn.init.normal_(p, std=0.05)
    refined.load_state_dict(plain.state_dict(), strict=False)
    x, t, ctx = torch.randn(2, 3, 4, 8, 8), torch.tensor([300.0, 700.0]), torch.randn(2, 8)
    torch.testing.assert_close(refined(x, t, context=ctx), plain(x, t, context=ctx))


def test_refiner_sees_across_patch_borders_and_its_conditions():
    torch.manual_seed(0)
    cfg = LatteConfig(in_channels=3, hidden=32, depth=1, heads=2, patch=4, temporal_patch=2, context_dim=8,
                      refine=8)
    model = LatteDiT(cfg)
    for p in model.refiner.parameters():
        torch.nn.init.normal_(p, std=0.1)
    out = torch.zeros(1, 3, 2, 8, 8)
    x = torch.zeros(1, 3, 2, 8, 8)
    c = torch.zeros(1, 32)
    base = model.refiner(out, x, c)
    poke = x.clone()
    poke[0, :, 0, 3, 3] = 1.0  # a pixel at the corner of the first 4x4 patch
    moved = (model.refiner(out, poke, c) - base).abs().sum((0, 1))
    assert moved[0, 4, 4] > 0  # reaches the next patch diagonally (three 3x3 convolutions: radius 3)
    assert moved[0, 7, 7] == 0 and moved[1].abs().max() == 0  # local and per frame
    assert not torch.allclose(base, model.refiner(out, x, torch.ones(1, 32)))


def test_refiner_context_levels_start_as_the_identity_and_see_a_whole_shape():
    torch.manual_seed(0)
    base = LatteConfig(in_channels=3, hidden=32, depth=1, heads=2, patch=4, temporal_patch=2, context_dim=8,
                       refine=4)
    flat, wide = LatteDiT(base), LatteDiT(LatteConfig(**{**base.__dict__, "refine_levels": 2}))
    extra = set(wide.state_dict()) - set(flat.state_dict())
    assert extra and all(k.startswith("refiner.context.") for k in extra)  # a flat refiner's file still loads
    for p in flat.parameters():
        torch.nn.init.normal_(p, std=0.05)
    wide.load_state_dict(flat.state_dict(), strict=False)
    x, t, ctx = torch.randn(2, 3, 4, 12, 20), torch.tensor([300.0, 700.0]), torch.randn(2, 8)
    torch.testing.assert_close(wide(x, t, context=ctx), flat(x, t, context=ctx))  # sizes not a power of 2 too

    for p in wide.refiner.parameters():
        torch.nn.init.normal_(p, std=0.1)
    out, x, c = torch.zeros(1, 3, 2, 16, 16), torch.zeros(1, 3, 2, 16, 16), torch.zeros(1, 32)
    ref = wide.refiner(out, x, c)
    poke = x.clone()
    poke[0, :, 0, 2, 2] = 1.0
    moved = (wide.refiner(out, poke, c) - ref).abs().sum((0, 1))
    assert moved[0, 12, 12] > 0  # ten pixels away: beyond the flat refiner's radius of 3
    assert moved[1].abs().max() == 0  # still per frame
    assert not torch.allclose(ref, wide.refiner(out, x, torch.ones(1, 32)))
    with pytest.raises(ValueError, match="refine_levels needs a refiner"):
        LatteConfig(refine_levels=2)


def test_presets_match_the_issue():
    sizes = {k: (v["hidden"], v["depth"]) for k, v in PRESETS.items()}
    assert sizes == {"small": (512, 8), "medium": (768, 12), "large": (1024, 24), "XL": (1536, 28)}
    with torch.device("meta"):
        model = LatteDiT(preset("XL", in_channels=4))
    assert len(model.blocks) == 28
    with pytest.raises(Exception, match="preset"):
        preset("huge")


def test_unet_shapes_and_zero_start():
    torch.manual_seed(0)
    model = UNet3D(UNetConfig(base_channels=8, groups=4, heads=2, context_dim=6))
    x = torch.randn(2, 3, 4, 16, 16)
    out = model(x, torch.tensor([1.0, 500.0]), context=torch.randn(2, 6))
    assert out.shape == x.shape
    assert out.abs().max() == 0
    assert isinstance(model.mid, BlockStack)
