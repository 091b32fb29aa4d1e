"""The causal VAE: full-size meta manifest, tiny-config parity with diffusers' AutoencoderKLHunyuanVideo
(whole and tiled, encode and decode), and tiled vs whole within tolerance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hunyuan_tiny import TINY_VAE
from vidcore_hunyuan.params import VAE_884_16C
from vidcore_hunyuan.vae import HunyuanVideoVAE, VAETiling

diffusers = pytest.importorskip("diffusers")
DATA = Path(__file__).parent / "data"


def test_vae_meta_build_matches_official_manifest():
    ref = json.loads((DATA / "hunyuan_vae.json").read_text())
    vae = HunyuanVideoVAE(VAE_884_16C, device="meta")
    got = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
    want = {k: tuple(v) for k, v in ref["tensors"].items()}
    assert got == want
    assert len(got) == ref["count"]
    assert sum(v.numel() for v in vae.state_dict().values()) == ref["params"]
    # the diffusers layout is the same names
    dref = json.loads((DATA / "diffusers_hunyuan_vae.json").read_text())
    assert set(dref["tensors"]) == set(got)


def _pair(seed=0):
    torch.manual_seed(seed)
    p = TINY_VAE
    ref = diffusers.AutoencoderKLHunyuanVideo(
        latent_channels=p.latent_channels, block_out_channels=p.block_out_channels,
        layers_per_block=p.layers_per_block, norm_num_groups=p.norm_groups).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in ref.parameters():  # GroupNorm affine and biases non-trivial too
            t.add_(torch.randn(t.shape, generator=gen) * 0.05)
    ours = HunyuanVideoVAE(p).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


def test_decode_and_encode_match_diffusers_whole():
    ours, ref = _pair()
    ref.use_framewise_decoding = ref.use_framewise_encoding = False
    z = torch.randn(1, 4, 3, 3, 2, generator=torch.Generator().manual_seed(1))
    x = torch.rand(1, 3, 5, 24, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        dec, want = ours.decode(z, tiling=None), ref.decode(z).sample
        enc, want_enc = ours.encode(x, tiling=None), ref.encode(x).latent_dist.mode()
    assert dec.shape == (1, 3, 9, 24, 16) and enc.shape == (1, 4, 2, 3, 2)
    torch.testing.assert_close(dec, want, rtol=0, atol=1e-5 * float(want.abs().max()))
    torch.testing.assert_close(enc, want_enc, rtol=0, atol=1e-5 * float(want_enc.abs().max()))


TILES = VAETiling(tile=24, stride=16, tile_frames=12, stride_frames=8)
DIFFUSERS_TILES = dict(tile_sample_min_height=24, tile_sample_min_width=24, tile_sample_min_num_frames=12,
                       tile_sample_stride_height=16, tile_sample_stride_width=16, tile_sample_stride_num_frames=8)


def test_tiled_decode_matches_diffusers_tiled():
    """Same windows, tiles and blending as diffusers (and the official VAE) for the same sizes."""
    ours, ref = _pair(seed=3)
    ref.enable_tiling(**DIFFUSERS_TILES)
    z = torch.randn(1, 4, 4, 4, 4, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        tiled = ours.decode(z, tiling=TILES)
        want = ref.decode(z).sample
    assert tiled.shape == (1, 3, 13, 32, 32)
    torch.testing.assert_close(tiled, want, rtol=0, atol=1e-5 * float(want.abs().max()))


def test_tiled_decode_equals_whole_on_uniform_latents():
    """Tiles and windows must add up to the whole: a latent constant in space and time decodes to a constant
    video whichever way it is cut (random weights make any other tiled-vs-whole bound meaningless: every
    tile's GroupNorm statistics differ)."""
    ours, _ = _pair(seed=3)
    z = torch.randn(1, 4, 1, 1, 1, generator=torch.Generator().manual_seed(7)).expand(1, 4, 4, 4, 4)
    with torch.no_grad():
        tiled, whole = ours.decode(z, tiling=TILES), ours.decode(z, tiling=None)
    assert tiled.shape == whole.shape
    err, scale = (tiled - whole).abs(), float(whole.abs().max())
    # float noise is amplified where a group's variance is near zero, hence a loose max and a tight mean
    assert err.max() < 0.1 * scale and err.mean() < 1e-2 * scale


def test_tiled_encode_matches_diffusers_tiled():
    ours, ref = _pair(seed=5)
    ref.enable_tiling(**DIFFUSERS_TILES)
    x = torch.rand(1, 3, 13, 32, 24, generator=torch.Generator().manual_seed(6)) * 2 - 1
    with torch.no_grad():
        enc = ours.encode(x, tiling=TILES)
        want = ref.encode(x).latent_dist.mode()
    assert enc.shape == want.shape == (1, 4, 4, 4, 3)
    torch.testing.assert_close(enc, want, rtol=0, atol=1e-5 * float(want.abs().max()))
