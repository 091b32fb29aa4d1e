"""The Wan2.2 backends: official defaults, sizes, layouts, noise, conditioning, and full-size builds."""

import json

import pytest
import torch
from vidcore_wan22 import conditioning as cond
from vidcore_wan22.backends import BACKENDS, NEGATIVE
from wan22_helpers import manifest, one_thread  # noqa: F401

from vidcore.errors import InvalidRequestError
from vidcore.seeds import initial_noise

BY_NAME = {b.name: b for b in BACKENDS}
TASK = {"wan2.2-t2v-a14b": "wan2.2/t2v-A14B", "wan2.2-i2v-a14b": "wan2.2/i2v-A14B", "wan2.2-ti2v-5b": "wan2.2/ti2v-5B"}


def _wh(s: str) -> tuple[int, int]:
    w, h = s.split("*")
    return int(w), int(h)


@pytest.mark.parametrize("name", list(TASK))
def test_defaults_equal_official(name, defaults_json=None):
    ref = manifest("defaults.json")["tasks"][TASK[name]]
    for b in (BY_NAME[name], BY_NAME[name + "-diffusers"]):
        d = b.defaults
        assert d.steps == ref["sample_steps"]["value"]
        assert d.schedule == "wan_flow" and d.schedule_options["shift"] == ref["sample_shift"]["value"]
        assert ref["sample_solver"]["value"] == "unipc" and d.sampler == "unipc"
        assert d.frames == ref["frame_num"]["value"] and d.fps == ref["sample_fps"]["value"]
        assert d.negative == ref["sample_neg_prompt"]["value"] == NEGATIVE
        g = ref["sample_guide_scale"]["value"]
        if isinstance(g, dict):
            assert d.guidance == {"high_noise": g["high_noise_expert"], "low_noise": g["low_noise_expert"]}
            assert b.spec.boundary == ref["boundary"]["value"]
        else:
            assert d.guidance == g
        assert set(b.spec.official_sizes) == {_wh(s) for s in ref["supported_sizes"]["value"]}
        assert d.size in b.spec.official_sizes
        assert b.spec.vae.stride == tuple(ref["vae_stride"]["value"])
        assert list(b.spec.vae.mean) == ref["vae_latent_mean"]["value"]
        assert list(b.spec.vae.std) == ref["vae_latent_std"]["value"]


@pytest.mark.parametrize("name", ["wan2.2-t2v-a14b", "wan2.2-i2v-a14b"])
def test_expert_switch_by_sigma_equals_official_timestep_rule(name):
    """Experts switch on sigma >= boundary; the official code on int64 t >= boundary*1000: same steps."""
    from vidcore.sampling import Scheduler

    b = BY_NAME[name]
    for steps in (10, 40, 50):
        s = Scheduler("wan_flow", **b.defaults.schedule_options)(steps)
        ours = [float(x) >= b.spec.boundary for x in s.sigmas[:-1]]
        official = [int(t) >= b.spec.boundary * 1000 for t in s.timesteps]
        assert ours == official and any(ours) and not all(ours)


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_full_size_build_matches_manifests(name):
    b = BY_NAME[name]
    comps = b.build("meta")
    dit_file = {"t2v-a14b": "wan22_t2v_a14b_dit.json", "i2v-a14b": "wan22_i2v_a14b_dit.json",
                "ti2v-5b": "wan22_ti2v_5b_dit.json"}[name.split("wan2.2-")[1].replace("-diffusers", "")]
    ref = manifest(dit_file)["tensors"]
    for comp, _, _ in b.spec.experts:
        assert {k: list(v.shape) for k, v in comps[comp].state_dict().items()} == ref
    vae_file = "wan21_vae.json" if b.spec.vae.version == "2.1" else "wan22_vae.json"
    assert {k: list(v.shape) for k, v in comps["vae"].state_dict().items()} == manifest(vae_file)["tensors"]
    assert len(comps["text_encoder"].state_dict()) == manifest("wan_umt5_xxl.json")["count"]
    if b.spec.layout_kind == "diffusers":  # the key map takes the diffusers names back to ours
        dref = {"t2v-a14b": "diffusers_wan_a14b_transformer.json",
                "i2v-a14b": "diffusers_wan_a14b_i2v_transformer.json",
                "ti2v-5b": "diffusers_wan_ti2v_5b_transformer.json"}[name.split("wan2.2-")[1][:-10]]
        names = list(manifest(dref)["tensors"])
        assert set(b.key_map(b.spec.experts[0][0], names).values()) == set(ref)
        vnames = list(manifest("diffusers_" + vae_file)["tensors"])
        assert set(b.key_map("vae", vnames).values()) == set(manifest(vae_file)["tensors"])


def test_layouts_and_repo_ids():
    t2v = BY_NAME["wan2.2-t2v-a14b"].layout
    assert t2v.repo_id == "Wan-AI/Wan2.2-T2V-A14B"
    pats = t2v.allow_patterns
    for p in ("high_noise_model/*.safetensors", "low_noise_model/*.safetensors.index.json", "Wan2.1_VAE.pth",
              "models_t5_umt5-xxl-enc-bf16.pth", "google/umt5-xxl/*", "high_noise_model/config.json"):
        assert p in pats
    ti2v = BY_NAME["wan2.2-ti2v-5b"].layout
    assert "Wan2.2_VAE.pth" in ti2v.allow_patterns and "*.safetensors" in ti2v.files["denoiser"]
    d = BY_NAME["wan2.2-t2v-a14b-diffusers"].layout
    assert d.repo_id == "Wan-AI/Wan2.2-T2V-A14B-Diffusers"
    assert d.files["high_noise"][0].startswith("transformer/") and d.files["low_noise"][0].startswith("transformer_2/")


class _Req:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def test_initial_noise_is_the_official_draw():
    b = BY_NAME["wan2.2-t2v-a14b"]
    req = _Req(seed=42, frames=81, width=832, height=480)
    noise = initial_noise(b, req, torch.device("cpu"))
    g = torch.Generator(device="cpu")
    g.manual_seed(42)
    ref = torch.randn(16, 21, 60, 104, dtype=torch.float32, device="cpu", generator=g)
    assert noise.shape == (1, 16, 21, 60, 104) and torch.equal(noise[0], ref)
    b5 = BY_NAME["wan2.2-ti2v-5b"]
    assert b5.latent_shape(_Req(frames=121, width=1280, height=704)) == (48, 31, 44, 80)


def test_sizes_frames_and_images():
    from vidcore.backend import Inputs

    t2v, i2v, ti2v = BY_NAME["wan2.2-t2v-a14b"], BY_NAME["wan2.2-i2v-a14b"], BY_NAME["wan2.2-ti2v-5b"]
    with pytest.raises(InvalidRequestError, match="not supported"):
        t2v.sizes.check(1024, 576)
    with pytest.raises(InvalidRequestError, match="4n\\+1"):
        t2v.frames.check(80)
    with pytest.raises(InvalidRequestError, match="not supported"):
        ti2v.resolve_size(_Req(width=1280, height=720), Inputs())
    img = torch.zeros(750, 1000, 3, dtype=torch.uint8)
    req = _Req(width=1280, height=720)
    w, h = i2v.resolve_size(req, Inputs(image=img))
    assert (w, h) == cond.i2v_size(1000, 750, 1280 * 720) == (1104, 816)
    # a derived size (as a run record stores it) is accepted unchanged; others are refused
    assert i2v.resolve_size(_Req(width=w, height=h), Inputs(image=img)) is None
    with pytest.raises(InvalidRequestError):
        i2v.resolve_size(_Req(width=1104, height=800), Inputs(image=img))
    assert ti2v.resolve_size(_Req(width=1280, height=704), Inputs(image=img)) == cond.best_output_size(
        1000, 750, 32, 32, 1280 * 704)
    with pytest.raises(InvalidRequestError, match="image"):
        i2v.validate(_Req(task="i2v"), Inputs())


def test_i2v_size_formula_independent():
    """lat = round(sqrt(area * ar) // 8 // 2 * 2), recomputed with numpy float64."""
    import numpy as np

    for iw, ih, area in [(1000, 750, 1280 * 720), (720, 1280, 832 * 480), (1920, 1080, 1280 * 720), (333, 777, 399360)]:
        ar = ih / iw
        lh = round(np.sqrt(area * ar) // 8 // 2 * 2)
        lw = round(np.sqrt(area / ar) // 8 // 2 * 2)
        assert cond.i2v_size(iw, ih, area) == (lw * 8, lh * 8)


def test_masks_and_uint8():
    m = cond.i2v_mask(9, 2, 3)
    assert m.shape == (4, 3, 2, 3)
    assert torch.all(m[:, 0] == 1) and torch.all(m[:, 1:] == 0)
    v = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.999, 1.0, 3.0]).view(1, 1, 7, 1, 1).expand(1, 3, 7, 1, 1)
    out = cond.to_uint8_frames(v)
    assert out.shape == (1, 7, 1, 1, 3) and out.dtype == torch.uint8
    assert out[0, :, 0, 0, 0].tolist() == [0, 0, 63, 127, 254, 255, 255]  # truncation, as .type(torch.uint8)


def test_official_layout_json_roundtrip():
    b = BY_NAME["wan2.2-i2v-a14b"]
    json.dumps(b.describe())
    assert b.describe()["defaults"]["guidance"] == {"high_noise": 3.5, "low_noise": 3.5}


def test_inspect_equals_official_manifests():
    """`vidcore inspect wan2.2-t2v-a14b` (core manifest of the meta build) == the official manifests."""
    from vidcore.manifest import manifest as inspect

    data = inspect(BY_NAME["wan2.2-t2v-a14b"])
    assert list(data) == ["text_encoder", "high_noise", "low_noise", "vae"]
    shapes = {c: {k: v["shape"] for k, v in t.items()} for c, t in data.items()}
    assert shapes["text_encoder"] == manifest("wan_umt5_xxl.json")["tensors"]
    assert shapes["high_noise"] == shapes["low_noise"] == manifest("wan22_t2v_a14b_dit.json")["tensors"]
    assert shapes["vae"] == manifest("wan21_vae.json")["tensors"]
