"""The generic loop: seeded and reproducible, experts switch under the memory policy, records are complete."""

from __future__ import annotations

import contextlib

import pytest
import torch

import vidcore
from vidcore.errors import Cancelled
from vidcore.memory import MemoryPolicy


def test_generate_is_seeded_and_reproducible(toy_ckpt):
    pipe = vidcore.load("toy", toy_ckpt, device="cpu")
    a = pipe("a red ball", seed=3, progress=False)
    b = pipe("a red ball", seed=3, progress=False)
    c = pipe("a red ball", seed=4, progress=False)
    assert a.frames.dtype == torch.uint8 and a.frames.shape == (5, 16, 16, 3)
    assert torch.equal(a.frames, b.frames)
    assert not torch.equal(a.frames, c.frames)


def test_prompt_changes_the_video(toy_ckpt):
    pipe = vidcore.load("toy", toy_ckpt, device="cpu")
    assert not torch.equal(pipe("one", seed=1).frames, pipe("two", seed=1).frames)


def test_callback_sees_every_step_and_can_cancel(toy_ckpt):
    pipe = vidcore.load("toy", toy_ckpt, device="cpu")
    seen = []
    pipe("x", seed=0, steps=4, callback=lambda info: seen.append(info["i"]))
    assert seen == [0, 1, 2, 3]

    def cancel(info):
        if info["i"] == 1:
            raise Cancelled()

    with pytest.raises(Cancelled):
        pipe("x", seed=0, steps=4, callback=cancel)


class RecordingPolicy(MemoryPolicy):
    """Resident, but logs which component is in use when (a stand-in for an offloading policy)."""

    name = "recording"

    def __init__(self, batched=True):
        super().__init__(None)
        self.batched_guidance = batched
        self.events: list[str] = []

    @contextlib.contextmanager
    def use(self, component):
        self.events.append(f"+{component}")
        try:
            yield self.components[component]
        finally:
            self.events.append(f"-{component}")


def test_experts_switch_by_noise_level_under_the_policy(toy_moe_ckpt):
    policy = RecordingPolicy()
    pipe = vidcore.load("toy-moe", toy_moe_ckpt, memory=policy, device="cpu")
    pipe("x", seed=0, steps=4)
    # encode, then high-noise expert, one switch to the low-noise one, each entered once and released
    assert policy.events == ["+text_encoder", "-text_encoder", "+high", "-high", "+low", "-low"]


def test_batched_and_sequential_guidance_give_identical_videos(toy_moe_ckpt):
    a = vidcore.load("toy-moe", toy_moe_ckpt, memory=RecordingPolicy(True), device="cpu")("x", seed=5)
    b = vidcore.load("toy-moe", toy_moe_ckpt, memory=RecordingPolicy(False), device="cpu")("x", seed=5)
    assert torch.equal(a.frames, b.frames)


def test_guidance_scale_matters(toy_ckpt):
    pipe = vidcore.load("toy", toy_ckpt, device="cpu")
    assert not torch.equal(pipe("x", seed=0, guidance=1.0).frames, pipe("x", seed=0, guidance=4.0).frames)


def test_run_record_holds_what_reproduces_the_run(toy_ckpt):
    video = vidcore.load("toy", toy_ckpt, device="cpu")("a dog", seed=11, steps=2)
    rec = video.record
    assert rec["backend"] == "toy" and rec["plugin"] == "toy"
    assert rec["request"]["seed"] == 11 and rec["request"]["steps"] == 2 and rec["request"]["prompt"] == "a dog"
    assert set(rec["versions"]) >= {"python", "torch", "vidcore", "plugins"}
    files = rec["checkpoint"]["fingerprint"]
    assert files and all("sha256" in str(f) for f in (files if isinstance(files, list) else files.values()))
    assert rec["wall_time_s"] > 0 and "process_peak_rss_gib" in rec["peak_memory"]
    assert rec["memory"]["preset"] == "resident" and rec["device"]["type"] == "cpu"


def test_lora_changes_the_video_is_recorded_and_replays(toy_ckpt, tmp_path, capsys):
    import json

    from safetensors.torch import save_file

    from vidcore.cli import main
    from vidcore.video import read_video

    g = torch.Generator().manual_seed(0)
    lora = tmp_path / "style.safetensors"
    save_file({"blocks.0.film.lora_A.weight": torch.randn(2, 9, generator=g),
               "blocks.0.film.lora_B.weight": torch.randn(6, 2, generator=g)}, str(lora))
    pipe = vidcore.load("toy", toy_ckpt, device="cpu")
    plain = pipe("x", seed=2)
    pipe.load_lora(lora, scale=0.8)
    styled = pipe("x", seed=2)
    assert not torch.equal(plain.frames, styled.frames)
    assert styled.record["loras"][0]["scale"] == 0.8 and styled.record["loras"][0]["components"] == ["denoiser"]

    out = tmp_path / "a.mp4"
    base = ["--backend", "toy", "--ckpt", str(toy_ckpt), "--quiet", "--device", "cpu"]
    assert main(["generate", "x", *base, "--seed", "2", "--lora", f"{lora}:0.8", "--out", str(out)]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["loras"][0]["path"] == str(lora)
    assert main(["generate", "--from-record", str(out.with_suffix(".json")), "--out", str(tmp_path / "b.mp4"),
                 "--quiet", "--device", "cpu"]) == 0
    assert torch.equal(read_video(out)[0], read_video(tmp_path / "b.mp4")[0])
    capsys.readouterr()
    assert main(["generate", "x", *base, "--lora", str(tmp_path / "missing.safetensors"),
                 "--out", str(tmp_path / "c.mp4")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_offload_preset_gives_the_same_video_on_a_two_expert_model(toy_moe_ckpt):
    a = vidcore.load("toy-moe", toy_moe_ckpt, device="cpu")("x", seed=5)
    with vidcore.load("toy-moe", toy_moe_ckpt, memory="offload", device="cpu") as pipe:
        b = pipe("x", seed=5)
    assert torch.equal(a.frames, b.frames)
