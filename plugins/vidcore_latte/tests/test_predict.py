"""Prediction with a latent Latte model: the given frames go through the causal VAE into the denoiser."""

from __future__ import annotations

import pytest
import torch
from vidcore_latte.context import context_counts, denoiser_context
from vidcore_latte.data.shapes import clip_for, render, to_uint8
from vidcore_latte.generate import generate
from vidcore_latte.system import ModelConfig, build_components, save_model

import vidcore
from vidcore import plugins
from vidcore.video import read_video, write_video

VAE = {"base_channels": 8, "channel_mult": [1, 2], "temporal_down": [True], "groups": 4, "latent_channels": 4}


def latent_model() -> ModelConfig:
    return ModelConfig(vae=VAE, text={"dim": 16, "heads": 2, "layers": 1}, frames=9, size=16, latent_scale=0.7,
                       latent_shift=0.1, dit={"hidden": 32, "depth": 1, "heads": 2, "patch": 2,
                                              "temporal_patch": 1, "frame_conditioning": True})


def test_context_counts_keep_whole_vae_groups():
    pixel = ModelConfig(dit={"hidden": 32, "depth": 1, "heads": 2}, frames=16)
    assert context_counts(pixel, 4, 16) == (4, 4)
    assert context_counts(pixel, 20, 16) == (8, 8)  # at most 8 past frames
    assert context_counts(pixel, 20, 5) == (4, 4)  # and at least one frame left to predict
    latent = latent_model()  # temporal factor 2: 1 + 2m frames -> 1 + m latents
    assert [context_counts(latent, k, 9) for k in (1, 2, 3, 4, 5, 8)] == [(1, 1), (1, 1), (3, 2), (3, 2), (5, 3),
                                                                          (7, 4)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = latent_model()
    comps = build_components(cfg)
    for m in comps.values():  # AdaLN-Zero starts as the identity: give the zero layers values
        for p in m.parameters():
            if not p.abs().sum():
                torch.nn.init.normal_(p, std=0.02)
    path = tmp_path_factory.mktemp("latent") / "model.safetensors"
    save_model(path, comps, cfg)
    return path.parent


def test_latent_prediction_conditions_on_the_vae_latents_of_the_past(model_dir, tmp_path):
    plugins.reset()
    pipe = vidcore.load("latte", model_dir, device="cpu")
    clip = to_uint8(render(clip_for(0, 1), 9, 16))
    write_video(tmp_path / "past.mp4", clip[:4], 8, crf=0)
    given, _ = read_video(tmp_path / "past.mp4")
    seen = []
    hook = pipe.components["denoiser"].register_forward_hook(
        lambda mod, args, kwargs, out: seen.append(kwargs), with_kwargs=True)
    video = pipe("a red circle moving right", video=str(tmp_path / "past.mp4"), frames=9, size="16x16", seed=0, steps=2,
                 progress=False)
    hook.remove()
    assert video.frames.shape == (9, 16, 16, 3)
    # 4 given frames -> the last 3 (= 1 + 2 * 1) are used, filling 2 latent frames
    assert torch.equal(video.frames[:3], given[1:4])
    vae = pipe.components["vae"]
    want = (vae.encode_latents(given[1:4].permute(3, 0, 1, 2)[None].float() / 127.5 - 1) - 0.1) * 0.7
    got = seen[0]["cond_frames"]
    assert got.shape == (seen[0]["cond_frames"].shape[0], 4, 5, 8, 8)
    torch.testing.assert_close(got[:1, :, :2], want, atol=1e-5, rtol=1e-5)
    assert not got[:, :, 2:].any()
    assert seen[0]["cond_mask"].flatten(1)[0].tolist() == [1, 1, 0, 0, 0]


def test_batched_generate_matches_the_pipeline_on_prediction(model_dir, tmp_path):
    plugins.reset()
    pipe = vidcore.load("latte", model_dir, device="cpu")
    clip = to_uint8(render(clip_for(0, 2), 9, 16))
    write_video(tmp_path / "past.mp4", clip[:5], 8, crf=0)
    given, _ = read_video(tmp_path / "past.mp4")
    one = pipe("a blue square moving up", video=str(tmp_path / "past.mp4"), frames=9, size="16x16", seed=3, steps=2,
               guidance=2.0, progress=False).frames
    many = generate(pipe.components, pipe.backend.model_config(), ["a blue square moving up"], [3], steps=2,
                    guidance=2.0, shift=2.0, context=[given])
    assert torch.equal(many[0][:5], given)
    assert (many[0].int() - one.int()).abs().max() <= 1  # batched-matmul rounding only


def test_a_latent_model_needs_its_vae_for_context():
    with pytest.raises(ValueError, match="VAE"):
        denoiser_context(latent_model(), torch.zeros(3, 16, 16, 3, dtype=torch.uint8), 9, (4, 5, 8, 8))
