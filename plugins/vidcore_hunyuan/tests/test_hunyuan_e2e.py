"""End to end on CPU: a tiny random checkpoint in the official layout through `vidcore.load`, and the
sampled latents (several steps, embedded guidance, true CFG) against diffusers' HunyuanVideoPipeline."""

from __future__ import annotations

import pytest
import torch
from hunyuan_tiny import tiny_llm_tokenizer, tiny_t2v_spec, write_tiny_checkpoint
from vidcore_hunyuan.backends import HunyuanBackend
from vidcore_hunyuan.convert import to_diffusers

import vidcore
from vidcore.seeds import initial_noise

diffusers = pytest.importorskip("diffusers")
PROMPT = "a cat surfing a wave at sunset"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tok = tiny_llm_tokenizer(PROMPT)
    spec = tiny_t2v_spec(tok)
    root = write_tiny_checkpoint(tmp_path_factory.mktemp("hunyuan_ckpt"), spec, tok)
    backend = HunyuanBackend(spec)
    return backend, root, vidcore.load(backend, root, dtype="fp32", device="cpu")


def _diffusers_pipe(pipe, spec):
    comps = pipe.components
    cfg = dict(in_channels=spec.dit.in_channels, out_channels=spec.dit.out_channels, num_attention_heads=spec.dit.heads,
               attention_head_dim=spec.dit.head_dim, num_layers=spec.dit.double_blocks,
               num_single_layers=spec.dit.single_blocks, num_refiner_layers=spec.dit.refiner_blocks,
               mlp_ratio=spec.dit.mlp_ratio, patch_size=2, patch_size_t=1, guidance_embeds=True,
               text_embed_dim=spec.dit.text_dim, pooled_projection_dim=spec.dit.pooled_dim, rope_theta=256.0,
               rope_axes_dim=spec.dit.rope_dims)
    dit = diffusers.HunyuanVideoTransformer3DModel(**cfg).eval()
    dit.load_state_dict(to_diffusers(comps["denoiser"].state_dict(), spec.dit.hidden_size))
    p = spec.vae
    vae = diffusers.AutoencoderKLHunyuanVideo(
        latent_channels=p.latent_channels, block_out_channels=p.block_out_channels,
        layers_per_block=p.layers_per_block, norm_num_groups=p.norm_groups, scaling_factor=p.scaling_factor).eval()
    vae.load_state_dict(comps["vae"].state_dict())
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0)
    return diffusers.HunyuanVideoPipeline(
        text_encoder=comps["text_encoder"].model, tokenizer=comps["text_encoder"].tokenizer, transformer=dit,
        vae=vae, scheduler=sched, text_encoder_2=comps["text_encoder_2"].model,
        tokenizer_2=comps["text_encoder_2"].tokenizer)


@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_latents_match_diffusers_pipeline(tiny, cfg):
    backend, _, pipe = tiny
    spec = backend.spec
    steps: list[torch.Tensor] = []
    video = pipe(PROMPT, size=(64, 48), frames=5, steps=3, seed=7, guidance=cfg, negative="blurry",
                 callback=lambda info: steps.append(info["x"].clone()))
    assert video.frames.shape == (5, 48, 64, 3) and video.frames.dtype == torch.uint8
    ours = steps[-1]
    req = vidcore.request.resolve(backend, PROMPT, size=(64, 48), frames=5, seed=7)
    state = {"noise_dtype": torch.float32}  # the text encoders' dtype in this fp32 run
    noise = initial_noise(backend, req, torch.device("cpu"), vidcore.Conditions({}, state=state))
    ref = _diffusers_pipe(pipe, spec)
    tpl = spec.template
    with torch.no_grad():
        want = ref(prompt=PROMPT, negative_prompt="blurry", height=48, width=64, num_frames=5, num_inference_steps=3,
                   guidance_scale=6.0, true_cfg_scale=cfg, latents=noise.clone(), output_type="latent",
                   prompt_template={"template": tpl.template, "crop_start": tpl.crop_start},
                   max_sequence_length=spec.text_len).frames
    assert ours.shape == want.shape
    scale = float(want.abs().max())
    torch.testing.assert_close(ours, want, rtol=0, atol=1e-4 * scale)


def test_same_seed_same_video_and_seed_matters(tiny):
    _, _, pipe = tiny
    a = pipe(PROMPT, size=(64, 48), frames=5, steps=2, seed=1).frames
    b = pipe(PROMPT, size=(64, 48), frames=5, steps=2, seed=1).frames
    c = pipe(PROMPT, size=(64, 48), frames=5, steps=2, seed=2).frames
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_cli_generate_on_the_official_layout(tiny, tmp_path, monkeypatch, capsys):
    """`vidcore generate` with the tiny backend registered as a plugin module (tests only), then a replay."""
    import types

    from vidcore_hunyuan import plugin as hunyuan_plugin

    from vidcore import plugins
    from vidcore.cli import main
    from vidcore.hookspecs import hookimpl
    from vidcore.video import read_video

    backend, root, _ = tiny
    mod = types.ModuleType("hunyuan_tiny_plugin")
    mod.register_backends = hookimpl(lambda register: register(backend))
    mod.register_schedules = hunyuan_plugin.register_schedules  # the backend's default, hunyuan_flow
    monkeypatch.setenv("VIDCORE_LOAD_PLUGINS", "")
    plugins.reset(extra_plugins=[("hunyuan-tiny", mod)])
    try:
        out = tmp_path / "cat.mp4"
        argv = ["generate", PROMPT, "--backend", backend.name, "--ckpt", str(root), "--size", "48x64", "--frames",
                "5", "--steps", "2", "--seed", "3", "--dtype", "fp32", "--device", "cpu", "--out", str(out), "--quiet"]
        assert main(argv) in (0, None)
        frames, _ = read_video(out)
        assert frames.shape == (5, 64, 48, 3)
        capsys.readouterr()
        assert main(["generate", PROMPT, "--backend", backend.name, "--ckpt", str(root), "--size", "50x64",
                     "--device", "cpu", "--out", str(tmp_path / "bad.mp4")]) not in (0, None)
        err = capsys.readouterr().err
        assert "nearest" in err and "48x64" in err and not (tmp_path / "bad.mp4").exists()
    finally:
        plugins.reset()
