"""Wan LoRAs as they are published, on the tiny Wan DiT, each against a merge done by hand in our names:
diffusers names (through the plugin's key map), ComfyUI/kohya with alpha, musubi-tuner underscores,
LightX2V full-tensor deltas; the Lightning pair one file per expert through the CLI with a Lightning-shaped
preset; the preset's grid against Wan2.2-Lightning's Euler scheduler; TeaCache with the published fit."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from vidcore_wan22.backends import WanBackend
from vidcore_wan22.speedups import _LIGHTNING, PRESETS, WAN21_RET_FITS
from wan22_helpers import TinyPlugin, one_thread, tiny_specs, write_official_checkpoint  # noqa: F401

from vidcore import plugins
from vidcore.errors import CheckpointError
from vidcore.lora import apply_lora
from vidcore.presets import GenerationPreset


@pytest.fixture(scope="module")
def tiny():
    backends = {s.name: WanBackend(s) for s in tiny_specs()}
    plugins.reset(extra_plugins=[("wan22-tiny", TinyPlugin(list(backends.values())))])
    yield backends
    plugins.reset()


@pytest.fixture
def dit(tiny):
    torch.manual_seed(0)
    module = tiny["tiny-t2v-a14b"].build("cpu")["high_noise"].requires_grad_(False)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return module


def _inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, 4, 1, 4, 4, generator=g), torch.tensor([700.0]), torch.randn(1, 5, 16, generator=g)


def _pair(out_f, in_f, rank, g):
    return torch.randn(rank, in_f, generator=g) * 0.2, torch.randn(out_f, rank, generator=g) * 0.2


def _by_hand(module, changes, scale):
    ref = copy.deepcopy(module)
    params = dict(ref.named_parameters())
    with torch.no_grad():
        for name, delta in changes.items():
            params[name].add_(scale * delta)
    return ref


def _check(module, sd, changes, *, key_map=None, scale=0.7):
    expected = _by_hand(module, changes, scale)(*_inputs())
    assert not torch.allclose(expected, module(*_inputs()), atol=1e-4)
    for mode in ("hook", "merge"):
        m = copy.deepcopy(module)
        handle = apply_lora(m, sd, scale=scale, mode=mode, key_map=key_map)
        assert handle.plan.matched == len(sd)
        assert torch.allclose(m(*_inputs()), expected, rtol=1e-5, atol=1e-5), mode


def test_diffusers_named_lora_goes_through_the_key_map(tiny, dit):
    g = torch.Generator().manual_seed(2)
    sd, changes = {}, {}
    for theirs, ours, (o, i) in [("blocks.0.attn1.to_q", "blocks.0.self_attn.q", (32, 32)),
                                 ("blocks.1.attn2.to_out.0", "blocks.1.cross_attn.o", (32, 32)),
                                 ("blocks.1.ffn.net.0.proj", "blocks.1.ffn.0", (48, 32)),
                                 ("condition_embedder.time_proj", "time_projection.1", (192, 32)),
                                 ("proj_out", "head.head", (16, 32))]:
        a, b = _pair(o, i, 3, g)
        sd[f"transformer.{theirs}.lora_A.weight"], sd[f"transformer.{theirs}.lora_B.weight"] = a, b
        changes[f"{ours}.weight"] = b @ a  # no alpha: alpha = rank
    sd["transformer.blocks.0.scale_shift_table.diff"] = delta = torch.randn(1, 6, 32, generator=g) * 0.1
    changes["blocks.0.modulation"] = delta
    backend = tiny["tiny-t2v-a14b"]
    _check(dit, sd, changes, key_map=lambda names: backend.lora_key_map("high_noise", names))
    with pytest.raises(CheckpointError, match="matches nothing in this model"):  # without the map: nobody's
        apply_lora(copy.deepcopy(dit), sd)


def test_comfyui_kohya_with_alpha_and_lightx2v_deltas(dit):
    g = torch.Generator().manual_seed(3)
    sd, changes = {}, {}
    for path, alpha in (("blocks.0.self_attn.q", 6.0), ("blocks.0.cross_attn.k", 1.5), ("blocks.1.ffn.2", None)):
        layer = dit.get_submodule(path)
        a, b = _pair(layer.out_features, layer.in_features, 4, g)
        sd[f"diffusion_model.{path}.lora_down.weight"], sd[f"diffusion_model.{path}.lora_up.weight"] = a, b
        if alpha is not None:
            sd[f"diffusion_model.{path}.alpha"] = torch.tensor(alpha)
        changes[f"{path}.weight"] = ((alpha or 4) / 4) * b @ a
    params = dict(dit.named_parameters())
    for key, param in {"blocks.0.self_attn.q.diff_b": "blocks.0.self_attn.q.bias",
                       "blocks.0.norm3.diff": "blocks.0.norm3.weight", "blocks.0.norm3.diff_b": "blocks.0.norm3.bias",
                       "blocks.1.self_attn.norm_q.diff": "blocks.1.self_attn.norm_q.weight",
                       "blocks.1.modulation.diff": "blocks.1.modulation", "head.modulation.diff": "head.modulation",
                       "head.head.diff": "head.head.weight", "head.head.diff_b": "head.head.bias",
                       "patch_embedding.diff": "patch_embedding.weight"}.items():
        sd[f"diffusion_model.{key}"] = delta = torch.randn(params[param].shape, generator=g) * 0.05
        changes[param] = changes.get(param, 0) + delta
    _check(dit, sd, changes)


def test_musubi_tuner_underscores(dit):
    g = torch.Generator().manual_seed(4)
    sd, changes = {}, {}
    for path in ("blocks.0.self_attn.q", "blocks.1.cross_attn.o", "blocks.0.ffn.0"):
        layer = dit.get_submodule(path)
        a, b = _pair(layer.out_features, layer.in_features, 2, g)
        key = "lora_unet_" + path.replace(".", "_")
        sd[f"{key}.lora_down.weight"], sd[f"{key}.lora_up.weight"], sd[f"{key}.alpha"] = a, b, torch.tensor(4.0)
        changes[f"{path}.weight"] = 2.0 * b @ a
    _check(dit, sd, changes)


def test_lightning_grid_is_the_distillation_schedulers():
    """Wan2.2-Lightning's EulerScheduler: timesteps linspace(1000, 0, n + 1) / 1000, shifted by 5."""
    from vidcore.sampling import Scheduler

    s = _LIGHTNING
    sched = Scheduler(s["schedule"], **s["schedule_options"], shift=s["shift"])(s["steps"])
    t = torch.from_numpy(__import__("numpy").linspace(1000, 0, 5, dtype="float32")) / 1000
    assert torch.equal(sched.sigmas.float(), 5.0 * t / (1 + 4.0 * t))
    assert "lightx2v/Wan2.2-Lightning" in PRESETS["lightning"].loras and "sample_shift 5.0" in PRESETS[
        "lightning"].source


def _merge_file(folder, sd, scale):
    path = folder / "diffusion_pytorch_model.safetensors"
    w = load_file(str(path))
    for key in [k for k in sd if k.endswith(".lora_down.weight")]:
        stem = key[len("diffusion_model."):-len(".lora_down.weight")]
        a, b = sd[key], sd[key.replace("lora_down", "lora_up")]
        alpha = float(sd[key.replace("lora_down.weight", "alpha")])
        w[f"{stem}.weight"] = w[f"{stem}.weight"] + scale * (alpha / a.shape[0]) * b @ a
    for key in [k for k in sd if k.endswith(".diff_b")]:
        stem = key[len("diffusion_model."):-len(".diff_b")]
        w[f"{stem}.bias"] = w[f"{stem}.bias"] + scale * sd[key]
    save_file(w, str(path))


def _lightning_like(backend, seed):
    """A Lightning-layout file: diffusion_model.<ours>.lora_down/lora_up/alpha (rank 4) plus bias deltas."""
    g = torch.Generator().manual_seed(seed)
    module = backend.build("meta")["high_noise"]
    sd = {}
    for path in ("blocks.0.self_attn.q", "blocks.0.cross_attn.v", "blocks.1.ffn.0", "blocks.1.self_attn.o"):
        layer = module.get_submodule(path)
        a, b = _pair(layer.out_features, layer.in_features, 4, g)
        sd[f"diffusion_model.{path}.lora_down.weight"] = a * 2
        sd[f"diffusion_model.{path}.lora_up.weight"] = b * 2
        sd[f"diffusion_model.{path}.alpha"] = torch.tensor(8.0)
        sd[f"diffusion_model.{path}.diff_b"] = torch.randn(layer.out_features, generator=g) * 0.2
    return sd


def test_lightning_pair_one_file_per_expert_through_the_cli(tiny, tmp_path, capsys):
    from vidcore.cli import main
    from vidcore.video import read_video

    name = "tiny-t2v-a14b"
    backend = tiny[name]
    ckpt = tmp_path / "ckpt"
    write_official_checkpoint(backend, ckpt, seed=3)
    plugins.register("generation preset", "tiny-lightning", GenerationPreset(
        "Lightning's settings on the tiny model", {name: dict(_LIGHTNING)}, source="vidcore_wan22.speedups"))
    files = {}
    for i, expert in enumerate(("high_noise", "low_noise")):
        files[expert] = tmp_path / f"{expert}_model.safetensors"
        save_file(_lightning_like(backend, 10 + i), str(files[expert]))
    base = ["--backend", name, "--preset", "tiny-lightning", "--seed", "5", "--dtype", "fp32", "--device", "cpu",
            "--quiet", "--lossless"]
    out = tmp_path / "lightning.mp4"
    assert main(["generate", "a cat", *base, "--ckpt", str(ckpt), "--out", str(out),
                 "--lora", f"{files['high_noise']}@high_noise", "--lora", f"{files['low_noise']}:0.9@low_noise"]) == 0
    rec = json.loads(out.with_suffix(".json").read_text())
    assert [e["matched"] for e in rec["loras"]] == [{"high_noise": 16}, {"low_noise": 16}]
    req = rec["request"]
    assert (req["preset"], req["steps"], req["sampler"], req["guidance"], req["schedule_options"]) == (
        "tiny-lightning", 4, "flow_euler", {"high_noise": 1.0, "low_noise": 1.0}, {"grid": "linspace", "shift": 5.0})
    merged = tmp_path / "merged"
    shutil.copytree(ckpt, merged)
    _merge_file(merged / "high_noise_model", load_file(str(files["high_noise"])), 1.0)
    _merge_file(merged / "low_noise_model", load_file(str(files["low_noise"])), 0.9)
    ref = tmp_path / "ref.mp4"
    assert main(["generate", "a cat", *base, "--ckpt", str(merged), "--out", str(ref)]) == 0
    got, want = read_video(out)[0].int(), read_video(ref)[0].int()
    assert (got - want).abs().max() <= 1 and (got != want).float().mean() < 0.01
    swapped = tmp_path / "swapped.mp4"  # each file on the other expert: a different video
    assert main(["generate", "a cat", *base, "--ckpt", str(ckpt), "--out", str(swapped),
                 "--lora", f"{files['high_noise']}@low_noise", "--lora", f"{files['low_noise']}:0.9@high_noise"]) == 0
    assert not torch.equal(read_video(swapped)[0], read_video(out)[0])
    capsys.readouterr()


def test_teacache_uses_the_published_fit_and_the_modulation_signal(tiny, dit):
    from vidcore.cache import step_caches
    from vidcore.cache_spec import apply_step_cache

    backend = tiny["tiny-t2v-a14b"]

    class Req:
        cache, width, height = {"kind": "teacache", "threshold": 10.0}, 48, 32

    report = apply_step_cache(backend, {"high_noise": dit}, ["high_noise"], Req())
    assert report["high_noise"]["coefficients"] == WAN21_RET_FITS["t2v-14B"]
    assert "TeaCache4Wan2.1" in report["high_noise"]["source"]
    (cache,) = step_caches(dit)
    x, _, ctx = _inputs()
    for t in (990.0, 980.0, 970.0, 960.0, 950.0, 940.0, 930.0):
        dit(x, torch.tensor([t]), ctx)
    assert cache.warmup == 5 and cache.stats.computed >= 5 and cache.stats.skipped >= 1
    assert backend.step_cache_options("high_noise", dit, "first-block", Req()) == {}
