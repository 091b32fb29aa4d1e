"""The Wan DiT: full-size names/shapes vs the official manifests, diffusers key map, and tiny-config parity
with diffusers' WanTransformer3DModel (weights converted by our key map)."""

import pytest
import torch
from vidcore_wan22 import keymaps
from vidcore_wan22.configs import DIT, DiTParams
from vidcore_wan22.dit import WanModel, sinusoidal_embedding
from wan22_helpers import manifest, one_thread  # noqa: F401

CASES = [
    ("t2v-A14B", "wan22_t2v_a14b_dit.json", "diffusers_wan_a14b_transformer.json"),
    ("i2v-A14B", "wan22_i2v_a14b_dit.json", "diffusers_wan_a14b_i2v_transformer.json"),
    ("ti2v-5B", "wan22_ti2v_5b_dit.json", "diffusers_wan_ti2v_5b_transformer.json"),
]


@pytest.mark.parametrize("variant,official,diffusers_file", CASES)
def test_full_size_matches_manifests(variant, official, diffusers_file):
    with torch.device("meta"):
        model = WanModel(DIT[variant])
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    ref = manifest(official)
    assert list(ours) == list(ref["tensors"])  # names, order
    assert ours == ref["tensors"]  # and shapes
    assert sum(v.numel() for v in model.state_dict().values()) == ref["params"]
    converted = {keymaps.dit_to_diffusers(k): v for k, v in ours.items()}
    assert converted == manifest(diffusers_file)["tensors"]
    assert {keymaps.dit_from_diffusers(keymaps.dit_to_diffusers(k)) for k in ours} == set(ours)


TINY = DiTParams(dim=48, ffn_dim=96, num_heads=4, num_layers=2, in_dim=8, out_dim=8, text_dim=24, text_len=16,
                 freq_dim=32)


def _diffusers_model(p: DiTParams):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=p.patch_size, num_attention_heads=p.num_heads, attention_head_dim=p.head_dim,
        in_channels=p.in_dim, out_channels=p.out_dim, text_dim=p.text_dim, freq_dim=p.freq_dim,
        ffn_dim=p.ffn_dim, num_layers=p.num_layers, cross_attn_norm=p.cross_attn_norm,
        qk_norm="rms_norm_across_heads", eps=p.eps,
    ).eval()


def _pair(p: DiTParams, seed: int = 0):
    torch.manual_seed(seed)
    ours = WanModel(p).eval()
    with torch.no_grad():  # perturb everything (norm weights and zero biases included)
        for t in ours.parameters():
            t.add_(torch.randn_like(t) * 0.1)
    ref = _diffusers_model(p)
    missing, unexpected = ref.load_state_dict({keymaps.dit_to_diffusers(k): v for k, v in ours.state_dict().items()},
                                              strict=True)
    assert not missing and not unexpected
    return ours, ref


@pytest.mark.parametrize("t", [3.0, 777.0])
def test_tiny_parity_with_diffusers(t):
    ours, ref = _pair(TINY)
    torch.manual_seed(1)
    x = torch.randn(2, TINY.in_dim, 3, 4, 6)
    ctx = torch.randn(2, TINY.text_len, TINY.text_dim)
    ctx[:, 10:] = 0  # zero-padded prompt tails, as the pipelines pass them
    ts = torch.tensor([t, t * 0.5])
    with torch.no_grad():
        a = ours(x, ts, ctx)
        b = ref(x, ts, ctx, return_dict=False)[0]
    assert a.shape == b.shape == (2, TINY.out_dim, 3, 4, 6)
    scale = b.abs().max()
    # (diffusers computes the sinusoid in float32, the official code in float64; still ~1e-6 here)
    assert (a - b).abs().max() <= 1e-5 * scale


def test_per_frame_timesteps_match_diffusers_per_token():
    """TI2V image mode: t=0 on the first latent frame; ours takes (B, F), diffusers (B, L) per token."""
    ours, ref = _pair(TINY, seed=3)
    x = torch.randn(1, TINY.in_dim, 3, 4, 4)
    ctx = torch.randn(1, TINY.text_len, TINY.text_dim)
    per_frame = torch.tensor([[0.0, 5.0, 5.0]])
    per_token = per_frame.repeat_interleave(2 * 2, dim=1)  # (h/2)*(w/2) tokens per frame
    with torch.no_grad():
        a = ours(x, per_frame, ctx)
        b = ref(x, per_token, ctx, return_dict=False)[0]
        c = ours(x, torch.tensor([5.0]), ctx)
    assert (a - b).abs().max() <= 2e-5 * b.abs().max()
    assert not torch.allclose(a[:, :, 0], c[:, :, 0])  # the first frame really saw t=0
    torch.testing.assert_close(a.shape, c.shape)


def test_i2v_conditioning_channels_concatenate():
    p = DiTParams(dim=32, ffn_dim=64, num_heads=2, num_layers=1, in_dim=12, out_dim=4, text_dim=8, text_len=4,
                  freq_dim=16)
    torch.manual_seed(0)
    m = WanModel(p).eval()
    x, y = torch.randn(1, 4, 1, 2, 2), torch.randn(1, 8, 1, 2, 2)
    ctx = torch.randn(1, 3, 8)
    with torch.no_grad():
        assert torch.equal(m(x, torch.tensor([1.0]), ctx, y=y), m(torch.cat([x, y], 1), torch.tensor([1.0]), ctx))


def test_sinusoid_is_float64_cos_sin():
    t = torch.tensor([999.0, 0.5])
    e = sinusoidal_embedding(8, t)
    freqs = 10000.0 ** (-torch.arange(4, dtype=torch.float64) / 4)
    ang = t.double()[:, None] * freqs
    assert e.dtype == torch.float64
    torch.testing.assert_close(e, torch.cat([ang.cos(), ang.sin()], 1))


def test_rope_float64_equals_official_complex_multiply():
    """rope_apply with float64 cos/sin == view_as_complex(x.double()) * polar(1, angles) (the official code)."""
    from vidcore.kernels import rope_apply, rope_freqs_3d

    p = TINY
    grid = (2, 3, 2)
    cos, sin = rope_freqs_3d(p.rope_dims, grid)
    x = torch.randn(1, p.num_heads, 12, p.head_dim)
    ours = rope_apply(x, cos, sin)
    ang = torch.atan2(sin, cos)
    ref = torch.view_as_real(torch.view_as_complex(x.double().unflatten(-1, (-1, 2)).contiguous())
                             * torch.polar(torch.ones_like(ang), ang)).flatten(-2).float()
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


def test_bf16_autocast_keeps_fp32_residual_and_output():
    ours, _ = _pair(TINY)
    ours.compute_dtype = torch.bfloat16
    x = torch.randn(1, TINY.in_dim, 2, 4, 4)
    ctx = torch.randn(1, 5, TINY.text_dim)
    seen = []
    hook = ours.blocks[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.no_grad():
        out = ours(x, torch.tensor([500.0]), ctx)
        ours.compute_dtype = None
        ref = ours(x, torch.tensor([500.0]), ctx)
    hook.remove()
    assert out.dtype == torch.float32 and seen[0] == torch.float32
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()  # bf16 matmuls, close to fp32
    assert not torch.equal(out, ref)


def test_fp8_and_hooked_linears_still_run():
    """Layers changed by a memory policy (fp8) or LoRA hooks are called as themselves in the fp32 paths."""
    from vidcore.memory.fp8 import quantize_fp8_

    torch.manual_seed(0)
    m = WanModel(TINY).eval()
    x, ctx, t = torch.randn(1, TINY.in_dim, 1, 2, 2), torch.randn(1, 4, TINY.text_dim), torch.tensor([10.0])
    with torch.no_grad():
        ref = m(x, t, ctx)
        calls = []
        h = m.time_projection[1].register_forward_hook(lambda mod, i, o: calls.append(1))
        torch.testing.assert_close(m(x, t, ctx), ref)
        assert calls
        h.remove()
        quantize_fp8_(m, compute_dtype=torch.float32)
        out = m(x, t, ctx)
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()
