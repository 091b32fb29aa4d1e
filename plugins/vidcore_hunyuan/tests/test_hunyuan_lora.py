"""HunyuanVideo LoRAs on the tiny DiT: diffusers-named files (split q/k/v and q/k/v/mlp onto our fused layers,
the swapped final AdaLN) against a merge done by hand in diffusers' own layout and converted back; the
official/ComfyUI/kohya and musubi names against a hand merge in ours; TeaCache deciding once per call."""

from __future__ import annotations

import copy

import torch
from hunyuan_tiny import TINY_DIT, tiny_llm_tokenizer, tiny_t2v_spec
from vidcore_hunyuan.backends import HunyuanBackend
from vidcore_hunyuan.convert import from_diffusers, to_diffusers
from vidcore_hunyuan.dit import HunyuanVideoDiT
from vidcore_hunyuan.speedups import TEACACHE_COEFFICIENTS

from vidcore.lora import apply_lora

H = TINY_DIT.hidden_size
TINY = HunyuanBackend(tiny_t2v_spec(tiny_llm_tokenizer()))


def _dit() -> HunyuanVideoDiT:
    model = HunyuanVideoDiT(TINY_DIT).eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.5 / p.shape[-1] ** 0.5 if p.ndim > 1 else 0.1)
                    + (1.0 if p.ndim == 1 and p.shape[0] == TINY_DIT.head_dim else 0.0))
    return model


def _inputs(t=937.5):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, TINY_DIT.in_channels, 3, 8, 6, generator=gen)
    text = torch.randn(1, 10, TINY_DIT.text_dim, generator=gen)
    mask = torch.ones(1, 10, dtype=torch.long)
    return x, torch.tensor([t]), text, mask, torch.randn(1, TINY_DIT.pooled_dim, generator=gen), torch.full((1,), 6e3)


def _key_map(names):
    return TINY.lora_key_map("denoiser", names)


def _both_modes(model, sd, expected, key_map=None, scale=0.8):
    for mode in ("hook", "merge"):
        m = copy.deepcopy(model)
        handle = apply_lora(m, sd, scale=scale, mode=mode, key_map=key_map)
        assert handle.plan.matched == len(sd)
        with torch.no_grad():
            got = m(*_inputs())
        torch.testing.assert_close(got, expected, rtol=0, atol=2e-5 * float(expected.abs().max()))


def test_diffusers_named_lora_equals_a_merge_in_diffusers_layout():
    model = _dit()
    gen = torch.Generator().manual_seed(2)
    diffusers_state = to_diffusers({k: v.clone() for k, v in model.state_dict().items()}, H)
    sd = {}
    targets = ["transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_k", "transformer_blocks.0.attn.to_v",
               "transformer_blocks.1.attn.add_k_proj", "transformer_blocks.1.ff.net.0.proj",
               "single_transformer_blocks.1.attn.to_v", "single_transformer_blocks.1.proj_mlp",
               "single_transformer_blocks.0.proj_out", "norm_out.linear",
               "context_embedder.token_refiner.refiner_blocks.0.attn.to_k"]
    for i, name in enumerate(targets):
        w = diffusers_state[f"{name}.weight"]
        r = 2 + i % 3
        a = torch.randn(r, w.shape[1], generator=gen) * 0.3
        b = torch.randn(w.shape[0], r, generator=gen) * 0.3
        sd[f"transformer.{name}.lora_A.weight"], sd[f"transformer.{name}.lora_B.weight"] = a, b
        sd[f"transformer.{name}.alpha"] = torch.tensor(float(i + 1))
        diffusers_state[f"{name}.weight"] = w + 0.8 * ((i + 1) / r) * b @ a
    bias = diffusers_state["transformer_blocks.0.attn.to_k.bias"]
    sd["transformer.transformer_blocks.0.attn.to_k.diff_b"] = delta = torch.randn(bias.shape, generator=gen) * 0.2
    diffusers_state["transformer_blocks.0.attn.to_k.bias"] = bias + 0.8 * delta
    ref = copy.deepcopy(model)
    rows = {k: v.shape[0] for k, v in model.state_dict().items()}
    ref.load_state_dict(from_diffusers(diffusers_state, list(rows), H, rows))
    with torch.no_grad():
        expected = ref(*_inputs())
        assert not torch.allclose(expected, model(*_inputs()), atol=1e-3)
    _both_modes(model, sd, expected, key_map=_key_map)


def test_official_kohya_and_musubi_names():
    model = _dit()
    gen = torch.Generator().manual_seed(3)
    sd, ref = {}, copy.deepcopy(model)
    params = dict(ref.named_parameters())
    for path, key in [("double_blocks.0.img_attn_qkv", "diffusion_model.double_blocks.0.img_attn_qkv"),
                      ("double_blocks.1.txt_mlp.fc1", "lora_unet_double_blocks_1_txt_mlp_fc1"),
                      ("single_blocks.0.linear1", "lora_unet_single_blocks_0_linear1"),
                      ("final_layer.adaLN_modulation.1", "diffusion_model.final_layer.adaLN_modulation.1")]:
        w = params[f"{path}.weight"]
        a, b = torch.randn(4, w.shape[1], generator=gen) * 0.3, torch.randn(w.shape[0], 4, generator=gen) * 0.3
        sd[f"{key}.lora_down.weight"], sd[f"{key}.lora_up.weight"], sd[f"{key}.alpha"] = a, b, torch.tensor(2.0)
        with torch.no_grad():
            w.add_(0.8 * 0.5 * b @ a)
    with torch.no_grad():
        expected = ref(*_inputs())
    _both_modes(model, sd, expected, key_map=_key_map)


def test_teacache_decides_once_per_call_for_both_stacks():
    from vidcore.cache import step_caches
    from vidcore.cache_spec import LinkedCache, apply_step_cache

    model = _dit()

    class Req:
        cache = {"kind": "teacache", "threshold": 10.0}

    report = apply_step_cache(TINY, {"denoiser": model}, ["denoiser"], Req())
    assert report["denoiser"]["coefficients"] == TEACACHE_COEFFICIENTS
    lead, follow = step_caches(model)
    assert lead.stack is model.double_blocks and isinstance(follow, LinkedCache) and follow.stack is model.single_blocks
    with torch.no_grad():
        for t in (999.0, 990.0, 980.0, 970.0):
            model(*_inputs(t))
    assert lead.stats.as_dict() == follow.stats.as_dict() and lead.stats.skipped >= 1
