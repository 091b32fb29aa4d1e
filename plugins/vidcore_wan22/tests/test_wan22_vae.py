"""Wan VAEs: full-size names/shapes vs the official manifests and diffusers' layout; tiny-config parity with
diffusers' AutoencoderKLWan (encode + decode), chunked == whole, tiled == diffusers' tiled."""

import functools

import pytest
import torch
from vidcore_wan22 import keymaps
from vidcore_wan22.configs import VAE, VAEParams
from vidcore_wan22.vae import WanVAE, patchify, unpatchify
from wan22_helpers import manifest, one_thread  # noqa: F401


def _maps(p: VAEParams):
    return keymaps.vae_name_map(p.version, p.num_res_blocks, p.temporal_downsample, len(p.dim_mult))


@pytest.mark.parametrize("key,official,diffusers_file", [
    ("wan2.1", "wan21_vae.json", "diffusers_wan21_vae.json"),
    ("wan2.2", "wan22_vae.json", "diffusers_wan22_vae.json"),
])
def test_full_size_matches_manifests(key, official, diffusers_file):
    with torch.device("meta"):
        vae = WanVAE(VAE[key])
    ours = {k: list(v.shape) for k, v in vae.state_dict().items()}
    ref = manifest(official)
    assert ours == ref["tensors"] and list(ours) == list(ref["tensors"])
    to_d, from_d = _maps(VAE[key])
    assert {to_d(k): v for k, v in ours.items()} == manifest(diffusers_file)["tensors"]
    assert {from_d(to_d(k)) for k in ours} == set(ours)
    assert VAE[key].stride == ((4, 8, 8) if key == "wan2.1" else (4, 16, 16))


def _tiny(version: str) -> VAEParams:
    z = 4
    return VAEParams(version, dim=4, z_dim=z, dec_dim=6 if version == "2.2" else None,
                     mean=tuple(0.1 * i for i in range(z)), std=tuple(1.0 + 0.2 * i for i in range(z)))


@functools.cache
def _pair(version: str):
    """Our tiny VAE with random weights and diffusers' AutoencoderKLWan holding the same weights (built once)."""
    from diffusers import AutoencoderKLWan

    p = _tiny(version)
    torch.manual_seed(0)
    ours = WanVAE(p).eval()
    with torch.no_grad():
        for t in ours.parameters():
            t.copy_(torch.randn_like(t) * 0.2)
    kw = dict(base_dim=p.dim, z_dim=p.z_dim, dim_mult=list(p.dim_mult), num_res_blocks=p.num_res_blocks,
              attn_scales=[], temperal_downsample=list(p.temporal_downsample), latents_mean=list(p.mean),
              latents_std=list(p.std))
    if version == "2.2":
        kw.update(is_residual=True, in_channels=12, out_channels=12, decoder_base_dim=p.dec_dim, patch_size=2,
                  scale_factor_spatial=16)
    ref = AutoencoderKLWan(**kw).eval()
    to_d, _ = _maps(p)
    ref.load_state_dict({to_d(k): v for k, v in ours.state_dict().items()}, strict=True)
    return ours, ref, p


def _ref_norm(ref_out, p, inverse=False):
    mean = torch.tensor(p.mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(p.std).view(1, -1, 1, 1, 1)
    return ref_out * std + mean if inverse else (ref_out - mean) / std


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_tiny_parity_encode_decode_chunked_and_whole(version):
    ours, ref, p = _pair(version)
    s = p.stride[1]
    torch.manual_seed(1)
    video = torch.rand(1, 3, 5, 2 * s, 3 * s) * 2 - 1
    with torch.no_grad():
        z = ours.encode(video)
        z_whole = ours.encode(video, chunked=False)
        z_ref = _ref_norm(ref.encode(video).latent_dist.mode(), p)
        assert z.shape == (1, p.z_dim, 2, 2, 3)
        torch.testing.assert_close(z, z_ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(z_whole, z, rtol=1e-4, atol=1e-5)
        out = ours.decode(z)
        out_whole = ours.decode(z, chunked=False)
        out_ref = ref.decode(_ref_norm(z, p, inverse=True)).sample
    assert out.shape == (1, 3, 5, 2 * s, 3 * s)
    torch.testing.assert_close(out, out_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out_whole, out, rtol=1e-4, atol=1e-5)
    assert out.abs().max() <= 1 and out.std() > 0.05  # clamped, not degenerate


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_tiled_matches_diffusers_tiling_and_is_close_to_whole(version):
    from vidcore.nn.tiling import TileSpec

    ours, ref, p = _pair(version)
    c, pt = ours.compression, p.patch
    # tiles of 3x3 latents with stride 2 (diffusers counts them in output pixels)
    ref.enable_tiling(tile_sample_min_height=3 * c * pt, tile_sample_min_width=3 * c * pt,
                      tile_sample_stride_height=2 * c * pt, tile_sample_stride_width=2 * c * pt)
    torch.manual_seed(2)
    z = torch.randn(1, p.z_dim, 2, 4, 4)
    spec = TileSpec((3, 3), (2, 2), scale=c)
    with torch.no_grad():
        tiled = ours.decode(z, tiling=spec)
        whole = ours.decode(z)
        tiled_ref = ref.decode(_ref_norm(z, p, inverse=True)).sample
    ref.use_tiling = False
    torch.testing.assert_close(tiled, tiled_ref, rtol=1e-4, atol=1e-5)
    assert tiled.shape == whole.shape
    assert 0 < (tiled - whole).abs().mean() < 0.5 * whole.abs().mean()  # differs near seams only a little


def test_patchify_roundtrip_and_order():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(1, 2, 1, 4, 4)
    y = patchify(x, 2)
    assert y.shape == (1, 8, 1, 2, 2)
    # channel (c, r, q): c=0, r=1 (w offset), q=0 (h offset) is pixel (0, 1)
    assert y[0, 2, 0, 0, 0] == x[0, 0, 0, 0, 1] and y[0, 1, 0, 0, 0] == x[0, 0, 0, 1, 0]
    torch.testing.assert_close(unpatchify(y, 2), x)


def test_encode_rejects_bad_frame_count():
    vae = WanVAE(_tiny("2.1"))
    with pytest.raises(ValueError, match="4n\\+1"):
        vae.encode(torch.zeros(1, 3, 4, 8, 8))


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_image_conditioning_matches_diffusers_prepare_latents(version):
    """I2V-A14B's [mask 4 | latent] and TI2V's first-frame latent equal diffusers' Wan I2V latent preparation."""
    from types import SimpleNamespace

    from diffusers import WanImageToVideoPipeline
    from vidcore_wan22 import conditioning as cond

    ours, ref, p = _pair(version)
    s, frames = p.stride[1], 5
    w, h = 2 * s, s
    torch.manual_seed(4)
    image = (torch.rand(h + 3, w + 5, 3) * 255).to(torch.uint8)
    fake = SimpleNamespace(vae=ref, vae_scale_factor_temporal=4, vae_scale_factor_spatial=s,
                           config=SimpleNamespace(expand_timesteps=version == "2.2"))
    with torch.no_grad():
        if version == "2.1":
            video = cond.i2v_first_frame_video(image, w, h, frames)
            lat = ours.encode(video)
            y = torch.cat([cond.i2v_mask(frames, 1, 2)[None], lat], dim=1)
            _, y_ref = WanImageToVideoPipeline.prepare_latents(
                fake, video[:, :, 0], 1, p.z_dim, h, w, frames, torch.float32, torch.device("cpu"), None)
            torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
        else:
            img = cond.ti2v_image(image, w, h)
            z = ours.encode(img)
            _, z_ref, mask = WanImageToVideoPipeline.prepare_latents(
                fake, img[:, :, 0], 1, p.z_dim, h, w, frames, torch.float32, torch.device("cpu"), None)
            torch.testing.assert_close(z, z_ref, rtol=1e-4, atol=1e-5)
            assert torch.all(mask[:, :, 0] == 0) and torch.all(mask[:, :, 1:] == 1)
