"""The CLI: commands behave as documented, and each bad input is one line, exit 2, no file left behind."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from vidcore.cli import main
from vidcore.video import read_video


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def files_in(path):
    return sorted(p.name for p in path.rglob("*") if p.is_file())


def test_backends_json_lists_tasks_defaults_and_weights(toy_registry, capsys):
    code, out, _ = run(capsys, "backends", "--json")
    data = json.loads(out)
    toy = {b["name"]: b for b in data["backends"]}["toy"]
    assert code == 0 and toy["tasks"] == ["t2v", "i2v"] and toy["defaults"]["steps"] == 3
    assert toy["weights"]["repo_id"] == "vidcore-test/toy" and toy["plugin"] == "toy"


def test_generate_then_replay_from_record_gives_identical_frames(toy_ckpt, tmp_path, capsys):
    out = tmp_path / "out" / "a.mp4"
    out.parent.mkdir()
    code, stdout, err = run(capsys, "generate", "a red ball", "--backend", "toy", "--ckpt", str(toy_ckpt),
                            "--seed", "9", "--out", str(out), "--quiet", "--device", "cpu")
    assert code == 0, err
    assert stdout.strip() == str(out)
    record = json.loads((tmp_path / "out" / "a.json").read_text())
    assert record["complete"] and record["request"]["seed"] == 9
    replay = tmp_path / "out" / "b.mp4"
    code, _, err = run(capsys, "generate", "--from-record", str(tmp_path / "out" / "a.json"), "--out", str(replay),
                       "--quiet", "--device", "cpu")
    assert code == 0, err
    assert torch.equal(read_video(out)[0], read_video(replay)[0])


BAD = [
    (["--backend", "nope"], "unknown backend 'nope'"),
    (["--sampler", "nope"], "unknown sampler 'nope'"),
    (["--memory", "nope"], "unknown memory preset 'nope'"),
    (["--dtype", "int3"], "unknown dtype 'int3'"),
    (["--size", "20x16"], "size 20x16 is not supported"),
    (["--frames", "4"], "frame count 4 is not supported"),
    (["--steps", "0"], "steps must be between 1 and 1000; got 0"),
    (["--guidance", "-2"], "guidance must be between 0 and 100; got -2"),
    (["--schedule", "nope"], "unknown schedule 'nope'"),
    (["--shift", "0"], "shift must be greater than 0; got 0"),
    (["--image", "/nonexistent/cat.png"], "does not exist"),
]


@pytest.mark.parametrize("extra, message", BAD)
def test_bad_generate_inputs(toy_ckpt, out_dir, capsys, extra, message):
    argv = ["generate", "x", "--backend", "toy", "--ckpt", str(toy_ckpt), "--out", str(out_dir / "v.mp4"), *extra]
    if "--backend" in extra:
        argv = ["generate", "x", "--ckpt", str(toy_ckpt), "--out", str(out_dir / "v.mp4"), *extra]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert files_in(out_dir) == []


@pytest.mark.parametrize("out, message", [
    ("v.avi", "must end in .mp4"),
    ("missing/v.mp4", "does not exist; create it first"),
])
def test_bad_output_paths(toy_ckpt, out_dir, capsys, out, message):
    code, _, err = run(capsys, "generate", "x", "--backend", "toy", "--ckpt", str(toy_ckpt),
                       "--out", str(out_dir / out))
    assert code == 2 and message in err and files_in(out_dir) == []


def test_existing_output_needs_overwrite(toy_ckpt, out_dir, capsys):
    target = out_dir / "v.mp4"
    target.write_bytes(b"precious")
    code, _, err = run(capsys, "generate", "x", "--backend", "toy", "--ckpt", str(toy_ckpt), "--out", str(target))
    assert code == 2 and "already exists; pass --overwrite" in err
    assert target.read_bytes() == b"precious"
    code, _, err = run(capsys, "generate", "x", "--backend", "toy", "--ckpt", str(toy_ckpt), "--out", str(target),
                       "--overwrite", "--quiet", "--device", "cpu")
    assert code == 0, err and target.read_bytes() != b"precious"


def test_image_task_without_image(toy_registry, out_dir, capsys):
    import toy_backend

    from vidcore.request import resolve

    with pytest.raises(Exception, match="needs an input image"):
        resolve(toy_backend.TOY, "x", task="i2v")


def test_checkpoint_problems_fail_before_loading(toy_ckpt, out_dir, capsys):
    gen = ["generate", "x", "--backend", "toy", "--out", str(out_dir / "v.mp4"), "--ckpt"]
    code, _, err = run(capsys, *gen, str(out_dir / "no-such-ckpt"))
    assert code == 2 and "no-such-ckpt" in err
    # mis-shaped tensor
    bad = toy_ckpt / "text_encoder.safetensors"
    save_file({"embed.weight": torch.zeros(256, 4), "proj.weight": torch.zeros(8, 8), "proj.bias": torch.zeros(8)},
              str(bad))
    code, _, err = run(capsys, *gen, str(toy_ckpt))
    assert code == 2 and "embed.weight" in err and err.count("\n") == 1
    # corrupt header
    bad.write_bytes(b"\xff" * 64)
    code, _, err = run(capsys, *gen, str(toy_ckpt))
    assert code == 2 and "text_encoder.safetensors" in err and err.count("\n") == 1
    # incomplete folder
    bad.unlink()
    code, _, err = run(capsys, *gen, str(toy_ckpt))
    assert code == 2 and "text_encoder.safetensors" in err
    assert files_in(out_dir) == []


def test_offline_with_files_missing(toy_registry, out_dir, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code, _, err = run(capsys, "generate", "x", "--backend", "toy", "--out", str(out_dir / "v.mp4"))
    assert code == 2 and "vidcore download toy" in err and err.count("\n") == 1


def test_verify_reports_and_exits_nonzero(toy_ckpt, capsys):
    code, out, _ = run(capsys, "verify", "toy", str(toy_ckpt))
    assert code == 0
    (toy_ckpt / "denoiser" / "model.safetensors").unlink()
    code, out, _ = run(capsys, "verify", "toy", str(toy_ckpt))
    assert code == 1 and "denoiser" in out


def test_inspect_lists_every_tensor(toy_registry, capsys):
    code, out, _ = run(capsys, "inspect", "toy", "--json")
    data = json.loads(out)
    assert code == 0 and data["text_encoder"]["embed.weight"]["shape"] == [256, 8]
    assert "blocks.1.conv.weight" in data["denoiser"]


def test_doctor_reports_environment(toy_registry, capsys):
    code, out, _ = run(capsys, "doctor", "--json")
    rep = json.loads(out)
    assert rep["torch"] == torch.__version__ and "sdpa" in rep["attention_backends"]
    assert "toy_flow" in rep["schedules"] and "low-vram" in rep["memory_presets"]  # a plugin's, the core's
    assert {p["name"] for p in rep["plugins"]} >= {"vidcore", "toy"} and code == 0


def test_module_entry_point_prints_one_line_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "vidcore", "generate", "x", "--backend", "no-such-backend"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown backend 'no-such-backend'") and "Traceback" not in proc.stderr


def test_schedule_and_shift_flags_reach_the_request(toy_ckpt, tmp_path, capsys):
    out = tmp_path / "s.mp4"
    code, _, err = run(capsys, "generate", "a red ball", "--backend", "toy", "--ckpt", str(toy_ckpt), "--shift", "3",
                       "--out", str(out), "--quiet", "--device", "cpu")
    assert code == 0, err
    request = json.loads((tmp_path / "s.json").read_text())["request"]
    assert (request["schedule"], request["schedule_options"]) == ("flow", {"shift": 3.0})
    # another schedule starts from its own defaults, not the backend's flow shift
    code, _, err = run(capsys, "generate", "a red ball", "--backend", "toy", "--ckpt", str(toy_ckpt), "--schedule",
                       "toy_flow", "--out", str(tmp_path / "k.mp4"), "--quiet", "--device", "cpu")
    assert code == 0, err
    request = json.loads((tmp_path / "k.json").read_text())["request"]
    assert (request["schedule"], request["schedule_options"]) == ("toy_flow", {})
    # a schedule that does not fit the network is one clear line, before any weights load
    code, _, err = run(capsys, "generate", "a red ball", "--backend", "toy", "--ckpt", str(toy_ckpt), "--schedule",
                       "karras", "--sampler", "euler", "--out", str(tmp_path / "v.mp4"), "--quiet")
    assert code == 2 and "needs a flow schedule" in err and not (tmp_path / "v.mp4").exists()


def test_generate_help_says_every_default_and_lists_memory_presets(capsys):
    from vidcore.cli import main

    main(["generate", "--help"])  # help prints and returns (main turns argparse's exit into a code)
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--size WxH width x height", "--frames N frame count", "--steps N sampling steps",
                 "--sampler NAME flow_euler", "--guidance X classifier-free", "--negative TEXT negative prompt",
                 "--seed N random seed (default: a random one"):
        assert flag in text, flag
    assert "low-vram" in text and "offload" in text and "stream" in text


def test_verbose_works_after_the_subcommand(toy_ckpt, tmp_path, capsys):
    from vidcore.cli import main

    assert main(["backends", "-v"]) == 0


def test_the_package_declares_its_type_hints():
    import importlib.resources

    assert importlib.resources.files("vidcore").joinpath("py.typed").is_file()
