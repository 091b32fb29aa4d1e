"""The embedded demo model: shipped weights, the generic pipeline, the CLI's first command, prediction."""

from __future__ import annotations

import json

import pytest
import torch
from vidcore_latte.backends import DEMO
from vidcore_latte.data.shapes import clip_for, render, sample_clip, to_uint8
from vidcore_latte.detector import detect
from vidcore_latte.system import read_config

import vidcore
from vidcore import plugins
from vidcore.video import read_video, write_video


@pytest.fixture(scope="module")
def pipe():
    plugins.reset()
    return vidcore.load("latte-shapes", device="cpu")


def test_shipped_weights_are_small_and_self_describing():
    assert DEMO.weights.exists()
    assert DEMO.weights.stat().st_size < 8 * 2**20
    cfg = read_config(DEMO.weights)
    assert (cfg.frames, cfg.size, cfg.denoiser, cfg.vae) == (16, 64, "dit", None)


def test_plugin_registers_backends_and_commands():
    plugins.reset()
    assert {"latte-shapes", "latte"} <= set(plugins.backends())
    assert {"train", "eval"} <= set(plugins.commands())


@pytest.mark.parametrize("prompt,seed", [("a red circle moving right", 0), ("a blue square moving up", 1)])
def test_demo_makes_what_the_prompt_says(pipe, prompt, seed):
    video = pipe(prompt, seed=seed, progress=False)
    assert video.frames.shape == (16, 64, 64, 3) and video.frames.dtype == torch.uint8
    det = detect(video.frames)
    words = prompt.split()
    assert (det.colour, det.direction) == (words[1], words[4])


def test_readme_command_writes_the_video_and_its_record(tmp_path, monkeypatch):
    from vidcore.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["generate", "a green triangle moving left", "--out", "demo.mp4", "--seed", "3", "--quiet"]) == 0
    frames, fps = read_video(tmp_path / "demo.mp4")
    assert frames.shape == (16, 64, 64, 3) and fps == 8
    record = json.loads((tmp_path / "demo.json").read_text())
    assert record["request"]["backend"] == "latte-shapes"
    assert detect(frames).colour == "green"


def test_prediction_continues_a_clip(pipe, tmp_path):
    import numpy as np

    clip = sample_clip(np.random.default_rng(7), shape="square", colour="yellow", direction="right")
    truth = to_uint8(render(clip))
    write_video(tmp_path / "past.mp4", truth[:4], 8, crf=0)
    given, _ = read_video(tmp_path / "past.mp4")
    video = pipe("a yellow square moving right", video=str(tmp_path / "past.mp4"), frames=16, seed=0,
                 progress=False)
    assert video.frames.shape == (16, 64, 64, 3)
    assert torch.equal(video.frames[:4], given)  # the given frames come back unchanged
    det = detect(video.frames)
    assert (det.colour, det.direction) == ("yellow", "right")
    future = truth[4:].float() / 255
    model_err = ((video.frames[4:].float() / 255 - future) ** 2).mean()
    copy_err = ((truth[3:4].float() / 255 - future) ** 2).mean()
    assert model_err < copy_err


def test_prediction_needs_frames_left_to_make(pipe, tmp_path):
    from vidcore.errors import InvalidRequestError

    write_video(tmp_path / "past.mp4", to_uint8(render(clip_for(0, 0)))[:8], 8)
    with pytest.raises(InvalidRequestError, match="nothing to predict"):
        pipe("a red circle", video=str(tmp_path / "past.mp4"), frames=8)
