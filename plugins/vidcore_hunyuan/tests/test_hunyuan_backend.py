"""The backends as data and as the core contract sees them: official defaults and sizes, one-line errors
for bad requests, the schedule, the noise draw, embedded guidance, key maps and full-size meta builds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from vidcore_hunyuan.backends import BACKENDS, NEGATIVE, NEGATIVE_I2V, _network
from vidcore_hunyuan.buckets import T2V_SIZES
from vidcore_hunyuan.rewrite import PromptRewrite

import vidcore
from vidcore.backend import Inputs
from vidcore.errors import InvalidRequestError
from vidcore.request import load_inputs, resolve
from vidcore.seeds import initial_noise

DATA = Path(__file__).parent / "data"
T2V = next(b for b in BACKENDS if b.name == "hunyuan-video-t2v")
I2V = next(b for b in BACKENDS if b.name == "hunyuan-video-i2v")
REF = json.loads((DATA / "hunyuan_defaults.json").read_text())["tasks"]


def test_registered_through_the_plugin():
    assert vidcore.plugins.get_backend("hunyuan-video-t2v").name == "hunyuan-video-t2v"
    assert {b.name for b in BACKENDS} == {"hunyuan-video-t2v", "hunyuan-video-i2v", "hunyuan-video-i2v-dynamic"}


def test_defaults_are_the_official_ones():
    t2v = REF["hunyuanvideo/t2v-720p"]
    d = T2V.defaults
    assert d.steps == t2v["infer_steps"]["value"] == 50
    assert d.frames == t2v["video_length"]["value"] == 129 and d.fps == t2v["fps"]["value"] == 24
    assert d.schedule_options["shift"] == t2v["flow_shift"]["value"] == 7.0
    assert d.guidance_options["embedded"] == t2v["embedded_cfg_scale"]["value"] == 6.0
    assert d.guidance == t2v["cfg_scale"]["value"] == 1.0
    assert NEGATIVE == t2v["default_negative_prompt"]["value"]
    h, w = t2v["video_size_default"]["value"]
    assert d.size == (w, h)
    i2v = REF["hunyuanvideo-i2v/i2v-720p"]
    assert NEGATIVE_I2V == i2v["default_negative_prompt"]["value"]
    assert I2V.defaults.guidance_options["embedded"] == i2v["embedded_cfg_scale"]["value"]
    assert T2V.spec.text_len == t2v["text_len"]["value"] and T2V.spec.skip_layer == 2
    assert T2V.spec.vae.scaling_factor == t2v["vae_scaling_factor"]["value"]


def test_t2v_sizes_are_the_official_table():
    table = REF["hunyuanvideo/t2v-720p"]["resolution_buckets"]["value"]
    for tier, ratios in table.items():
        for ratio, (h, w) in ratios.items():
            assert T2V_SIZES[tier][ratio] == (w, h)
            T2V.sizes.check(w, h)
    assert len(T2V.sizes.allowed) == 10


def _error(backend, **kw) -> str:
    with pytest.raises(InvalidRequestError) as e:
        req = resolve(backend, "a cat", **kw)
        load_inputs(backend, req)
        backend.validate(req, Inputs())
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_bad_requests_fail_in_one_line_before_any_weights():
    msg = _error(T2V, size="1280x704")
    assert "nearest" in msg and "1280x720 (720p h:w 9:16)" in msg
    assert "544x960" in _error(T2V, size="540x960")
    assert "4n+1" in _error(T2V, frames=128)
    assert "image" in _error(I2V)
    assert ">= 1" in _error(T2V, guidance=0.5)
    assert "embedded" in _error(T2V, guidance_options={"embedded": None})


def test_schedule_is_the_official_flow_grid():
    sched = vidcore.Scheduler(T2V.defaults.schedule, **T2V.defaults.schedule_options)(50)
    t = torch.linspace(1, 0, 51)  # FlowMatchDiscreteScheduler.set_timesteps, float32, reverse=True
    sig = 7.0 * t / (1 + 6.0 * t)
    assert torch.equal(sched.sigmas.float(), sig)
    assert torch.equal(sched.timesteps, (sig[:-1] * 1000).to(torch.float32))
    assert sched.kind == "flow" and float(sched.sigmas[0]) == 1.0


def test_noise_is_the_official_draw():
    req = resolve(T2V, "a cat", size="960x544", frames=129, seed=42)
    noise = initial_noise(T2V, req, torch.device("cpu"))
    assert noise.shape == (1, 16, 33, 68, 120) and noise.dtype == torch.float32
    gen = torch.Generator("cpu").manual_seed(42)
    want = torch.randn((1, 16, 33, 68, 120), generator=gen, dtype=torch.float16).float()
    assert torch.equal(noise, want)


class _FakeDiT(torch.nn.Module):
    def __init__(self, dtype):
        super().__init__()
        self.dtype, self.seen = dtype, {}

    def forward(self, x, t, states, mask, pooled, g):
        self.seen.update(t=t, g=g)
        return torch.zeros_like(x).to(self.dtype)


def test_embedded_guidance_is_cast_then_scaled_like_the_official_pipeline():
    for dtype, want in ((torch.bfloat16, 6016.0), (torch.float32, 6000.0)):
        fake = _FakeDiT(dtype)
        net = _network(fake)
        out = net(torch.zeros(1, 16, 2, 4, 4), torch.tensor([1000.0]), text_states=None, text_mask=None,
                  text_states_2=None, guidance=torch.tensor([6.0]))
        assert out.dtype == torch.float32 and float(fake.seen["g"][0]) == want


def test_key_maps_unwrap_official_files():
    dit = T2V.key_map("denoiser", ["module.img_in.proj.weight", "ema.img_in.proj.weight"])
    assert dit == {"module.img_in.proj.weight": "img_in.proj.weight", "ema.img_in.proj.weight": None}
    assert T2V.key_map("denoiser", ["img_in.proj.weight"]) == {"img_in.proj.weight": "img_in.proj.weight"}
    vae = T2V.key_map("vae", ["state_dict.vae.encoder.conv_in.conv.weight", "state_dict.loss.w"])
    assert vae == {"state_dict.vae.encoder.conv_in.conv.weight": "encoder.conv_in.conv.weight",
                   "state_dict.loss.w": None}
    name = "decoder.conv_in.conv.bias"
    assert T2V.key_map("vae", [name]) == {name: name}
    layout = T2V.layout.files
    assert layout["denoiser"] == ("hunyuan-video-t2v-720p/transformers/mp_rank_00_model_states.pt",)
    assert layout["vae"] == ("hunyuan-video-t2v-720p/vae/pytorch_model.pt",)
    assert I2V.layout.files["denoiser"] == ("hunyuan-video-i2v-720p/transformers/mp_rank_00_model_states.pt",)


def test_vidcore_inspect_matches_the_official_manifests(capsys):
    """`vidcore inspect --json` (meta device, full size): DiT and VAE == official manifests, text encoders sized."""
    from vidcore.cli import main

    assert main(["inspect", "--json", "hunyuan-video-t2v"]) in (0, None)
    got = json.loads(capsys.readouterr().out)
    for comp, manifest in (("denoiser", "hunyuan_t2v_dit.json"), ("vae", "hunyuan_vae.json")):
        want = json.loads((DATA / manifest).read_text())["tensors"]
        assert {k: list(v["shape"]) for k, v in got[comp].items()} == want
    counts = {c: sum(math.prod(v["shape"]) for v in t.values()) for c, t in got.items()}
    assert counts["text_encoder"] == 7_505_186_816  # Llama-3-8B body (vocab 128320), no LM head
    assert counts["text_encoder_2"] == 123_060_480  # CLIP ViT-L/14 text tower


def test_prompt_rewrite_is_an_optional_local_hook():
    seen = []
    rewrite = PromptRewrite(lambda text: seen.append(text) or "A cat surfs a big wave at dusk.", "Master")
    assert rewrite("猫冲浪") == "A cat surfs a big wave at dusk." and "猫冲浪" in seen[0]
    assert PromptRewrite(lambda text: "  ", "Normal")("keep me") == "keep me"
    with pytest.raises(InvalidRequestError):
        PromptRewrite(lambda t: t, "Poet")
    assert T2V.prompt_rewriter is None  # off unless a user sets one
