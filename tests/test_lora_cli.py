"""`--lora PATH[:SCALE][@COMPONENT]`: one file per expert on the two-expert toy, equal to a checkpoint merged by
hand; keys matched per component on stderr and in the record; replay; and every refusal one line before
any weight loads."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import vidcore
from vidcore.cli import main
from vidcore.video import read_video


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(code, err, message):
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err


def _pair(seed):
    """A kohya pair with alpha on blocks.0.film (Linear 9 -> 6) and a ComfyUI one on blocks.1.film."""
    g = torch.Generator().manual_seed(seed)
    return {
        "diffusion_model.blocks.0.film.lora_down.weight": torch.randn(2, 9, generator=g) * 0.5,
        "diffusion_model.blocks.0.film.lora_up.weight": torch.randn(6, 2, generator=g) * 0.5,
        "diffusion_model.blocks.0.film.alpha": torch.tensor(1.0),
        "diffusion_model.blocks.1.film.diff_b": torch.randn(6, generator=g) * 0.5,
    }


def _merge_by_hand(ckpt, comp, sd, scale):
    path = ckpt / comp / "model.safetensors"
    w = load_file(str(path))
    a, b = sd["diffusion_model.blocks.0.film.lora_down.weight"], sd["diffusion_model.blocks.0.film.lora_up.weight"]
    w["blocks.0.film.weight"] = w["blocks.0.film.weight"] + scale * (1.0 / 2) * b @ a
    w["blocks.1.film.bias"] = w["blocks.1.film.bias"] + scale * sd["diffusion_model.blocks.1.film.diff_b"]
    save_file(w, str(path))


@pytest.fixture
def files(tmp_path):
    hi, lo = tmp_path / "high_noise_model.safetensors", tmp_path / "low_noise_model.safetensors"
    save_file(_pair(1), str(hi))
    save_file(_pair(2), str(lo))
    return hi, lo


def test_one_file_per_expert_equals_a_hand_merged_checkpoint(toy_moe_ckpt, files, tmp_path, capsys):
    import shutil

    hi, lo = files
    base = ["--backend", "toy-moe", "--seed", "3", "--quiet", "--device", "cpu", "--lossless"]
    out = tmp_path / "lora.mp4"
    code, _, err = _run(capsys, "generate", "a cat", *base, "--ckpt", str(toy_moe_ckpt), "--out", str(out),
                        "--lora", f"{hi}:0.8@high", "--lora", f"{lo}@low")
    assert code == 0, err
    rec = json.loads(out.with_suffix(".json").read_text())
    assert [(e["components"], e["scale"], e["matched"], e["keys"]) for e in rec["loras"]] == [
        (["high"], 0.8, {"high": 4}, 4), (["low"], 1.0, {"low": 4}, 4)]
    merged = tmp_path / "merged-ckpt"
    shutil.copytree(toy_moe_ckpt, merged)
    _merge_by_hand(merged, "high", _pair(1), 0.8)
    _merge_by_hand(merged, "low", _pair(2), 1.0)
    ref = tmp_path / "merged.mp4"
    assert _run(capsys, "generate", "a cat", *base, "--ckpt", str(merged), "--out", str(ref))[0] == 0
    plain = tmp_path / "plain.mp4"
    assert _run(capsys, "generate", "a cat", *base, "--ckpt", str(toy_moe_ckpt), "--out", str(plain))[0] == 0
    got, want = read_video(out)[0].int(), read_video(ref)[0].int()
    assert (got - want).abs().max() <= 1 and (got != want).float().mean() < 0.01  # float32 rounding only
    assert not torch.equal(got, read_video(plain)[0].int())
    # the replay puts each file on its own expert again
    again = tmp_path / "again.mp4"
    assert _run(capsys, "generate", "--from-record", str(out.with_suffix(".json")), "--out", str(again),
                "--quiet", "--device", "cpu", "--lossless")[0] == 0
    assert torch.equal(read_video(again)[0], read_video(out)[0])


def test_keys_matched_are_reported_and_python_takes_components(toy_moe_ckpt, files, tmp_path, capsys):
    hi, _ = files
    out = tmp_path / "a.mp4"
    code, _, err = _run(capsys, "generate", "x", "--backend", "toy-moe", "--ckpt", str(toy_moe_ckpt), "--device",
                        "cpu", "--out", str(out), "--lora", f"{hi}@high,low")
    assert code == 0, err
    assert "LoRA high_noise_model.safetensors (scale 1): 4 keys; matched high 4, low 4" in err
    pipe = vidcore.load("toy-moe", toy_moe_ckpt, device="cpu")
    pipe.load_lora(hi, scale=0.5, components=["low"])
    assert pipe.loras == [{"path": str(hi), "scale": 0.5, "mode": "hook", "components": ["low"],
                           "matched": {"low": 4}, "keys": 4}]


def test_refusals_are_one_line_before_loading(toy_moe_ckpt, files, tmp_path, capsys, no_load, out_dir):
    hi, _ = files
    args = ["generate", "x", "--backend", "toy-moe", "--ckpt", str(toy_moe_ckpt), "--out", str(out_dir / "v.mp4")]
    _one_line(*_run(capsys, *args, "--lora", f"{hi}@mid")[::2],
              "LoRA component 'mid' for 'high_noise_model.safetensors' is not one of backend 'toy-moe''s; use "
              "PATH@COMPONENT with one of: high, low")
    other = tmp_path / "sdxl.safetensors"
    save_file({"lora_unet_down_blocks_0_attn.lora_down.weight": torch.zeros(2, 4),
               "lora_unet_down_blocks_0_attn.lora_up.weight": torch.zeros(4, 2)}, str(other))
    _one_line(*_run(capsys, *args, "--lora", str(other))[::2],
              "LoRA 'sdxl.safetensors' for 'high' matches nothing in this model (2 keys, e.g. "
              "lora_unet_down_blocks_0_attn.lora_down.weight")
    partly = tmp_path / "partly.safetensors"
    save_file({**_pair(1), "diffusion_model.blocks.5.film.diff_b": torch.zeros(6)}, str(partly))
    _one_line(*_run(capsys, *args, "--lora", f"{partly}@low")[::2],
              "LoRA 'partly.safetensors' for 'low' does not fit this model: 1 of 5 keys matches no layer of this "
              "model (diffusion_model.blocks.5.film.diff_b)")
    shape = tmp_path / "shape.safetensors"
    save_file({"blocks.0.film.diff": torch.zeros(6, 8)}, str(shape))
    _one_line(*_run(capsys, *args, "--lora", str(shape))[::2], "blocks.0.film.diff has shape (6, 8) but "
              "blocks.0.film.weight is (6, 9)")
    assert list(out_dir.iterdir()) == []


def test_batch_takes_loras(toy_ckpt, files, tmp_path, capsys):
    hi, _ = files
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "a", "seed": 1, "name": "a"}) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = _run(capsys, "batch", str(prompts), "--out", str(out), "--backend", "toy", "--ckpt",
                        str(toy_ckpt), "--device", "cpu", "--quiet", "--lora", f"{hi}:0.5")
    assert code == 0, err
    rec = json.loads((out / "a.json").read_text())
    assert rec["loras"][0]["matched"] == {"denoiser": 4} and rec["loras"][0]["scale"] == 0.5
