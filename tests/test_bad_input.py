"""Bad input through the CLI: one line, exit 2, before the weights load, and nothing written.

Each case is something a user (or an edited run record) really sends: NaN and
infinite numbers, absurd counts, devices this machine lacks, corrupt LoRAs,
records with missing fields or wrong types. The model loader is replaced by one
that fails the test, so "before any heavy work" is checked, not assumed. A real
bug is the other half: one line that says so and where its traceback was
logged, exit 1, and the traceback itself only with ``-v``.
"""

from __future__ import annotations

import errno
import json

import pytest
import torch

from vidcore.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def files_in(path):
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


def assert_one_line(code, err, message):
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and message in err, err


FLAGS = [
    (["--guidance", "nan"], "guidance must be a finite number; got nan"),
    (["--guidance", "inf"], "guidance must be a finite number; got inf"),
    (["--guidance", "1e9"], "guidance must be between 0 and 100"),
    (["--shift", "nan"], "shift must be a finite number"),
    (["--steps", "1000000000"], "steps must be between 1 and 1000; got 1000000000"),
    (["--steps", "abc"], "argument --steps: invalid int value: 'abc'"),
    (["--frames", "100000000"], "frames must be between 1 and 10000"),
    (["--seed", "-1"], "seed must be between 0 and"),
    (["--size", "0x0"], "width must be between 1 and"),
    (["--size", "16x16x16"], "is not WIDTHxHEIGHT"),
    (["--size", "1e9x16"], "is not WIDTHxHEIGHT"),
    (["--ulysses", "0"], "--ulysses and --ring must be at least 1"),
    (["--ring", "-3"], "--ulysses and --ring must be at least 1"),
    (["--device", "gpu"], "unknown device 'gpu'"),
    (["--device", "meta"], "device type 'meta' is not supported"),
    (["--device", "cuda:99"], "cuda:99"),
    (["--dtype", "int8"], "unknown dtype 'int8'"),
    (["--memory", "fast"], "unknown memory preset 'fast'"),
    (["--sampler", "flow_euler", "--schedule", "karras"], "flow_euler needs a flow schedule"),
    (["--sampler", "euler", "--schedule", "karras"], "a flow-velocity network needs a flow schedule"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
]


@pytest.mark.parametrize("extra, message", FLAGS, ids=[" ".join(f) for f, _ in FLAGS])
def test_bad_flags_are_one_line_before_loading(toy_ckpt, out_dir, capsys, no_load, extra, message):
    code, _, err = run(capsys, "generate", "x", "--backend", "toy", "--ckpt", str(toy_ckpt),
                       "--out", str(out_dir / "v.mp4"), *extra)
    assert_one_line(code, err, message)
    assert files_in(out_dir) == []


def test_cuda_without_a_gpu_is_one_line(toy_ckpt, out_dir, capsys, no_load):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, _, err = run(capsys, "generate", "x", "--backend", "toy", "--ckpt", str(toy_ckpt),
                       "--out", str(out_dir / "v.mp4"), "--device", "cuda")
    assert_one_line(code, err, "this torch build has no CUDA" if torch.version.cuda is None else "no GPU")


def _lora_cases(tmp_path):
    folder = tmp_path / "lora-folder.safetensors"
    folder.mkdir()
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a json header at all")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(b"\xff" * 5)
    pickle = tmp_path / "lora.bin"
    pickle.write_bytes(b"whatever")
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    return [
        (str(tmp_path / "missing.safetensors"), "does not exist"),
        (str(folder), "it is a folder"),
        (str(garbage), "corrupt safetensors header"),
        (str(truncated), "corrupt safetensors header"),
        (str(pickle), "is not .safetensors"),
        (str(empty), "holds no tensors"),
        (f"{empty}:nan", "LoRA scale"),
    ]


def test_bad_loras_are_one_line_before_loading(toy_ckpt, out_dir, tmp_path, capsys, no_load):
    for spec, message in _lora_cases(tmp_path):
        code, _, err = run(capsys, "generate", "x", "--backend", "toy", "--ckpt", str(toy_ckpt),
                           "--out", str(out_dir / "v.mp4"), "--lora", spec)
        assert_one_line(code, err, message)
    assert files_in(out_dir) == []


# -- run records ------------------------------------------------------------------------------
@pytest.fixture
def good_record(toy_ckpt, tmp_path, capsys):
    out = tmp_path / "rec" / "a.mp4"
    out.parent.mkdir()
    code, _, err = run(capsys, "generate", "a red ball", "--backend", "toy", "--ckpt", str(toy_ckpt),
                       "--seed", "9", "--out", str(out), "--quiet", "--device", "cpu")
    assert code == 0, err
    return json.loads(out.with_suffix(".json").read_text())


def _set(path, value):
    def edit(rec):
        *parents, last = path
        node = rec
        for key in parents:
            node = node[key]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
        return rec
    return edit


RECORDS = [
    (_set(["request", "seed"], -5), "seed must be between 0 and"),
    (_set(["request", "guidance"], -1.0), "guidance must be between 0 and 100"),
    (_set(["request", "guidance"], "high"), "guidance must be a number; got 'high'"),
    (_set(["request", "steps"], KeyError), "lacks request field(s) steps"),
    (_set(["request", "steps"], 2.5), "steps must be a whole number; got 2.5"),
    (_set(["request", "steps"], True), "steps must be a whole number; got True"),
    (_set(["request", "steps"], 10**9), "steps must be between 1 and 1000"),
    (_set(["request", "frames"], "5"), "frames must be a whole number"),
    (_set(["request", "prompt"], 42), "prompt must be a string"),
    (_set(["request", "sampler"], ["euler"]), "unknown sampler"),
    (_set(["request", "sampler_options"], "fast"), "sampler options must be a mapping"),
    (_set(["request", "backend"], "nope"), "unknown backend 'nope'"),
    (_set(["request"], "everything"), "'request' must be a JSON object"),
    (_set(["memory"], {"preset": 5}), "'memory.preset' must be a preset name"),
    (_set(["loras"], "lora.safetensors"), "'loras' must be a list"),
    (_set(["loras"], [{"path": "x.safetensors", "scale": "big"}]), "loras[0].scale must be a number"),
    (_set(["vidcore_record"], "one"), "bad 'vidcore_record' version"),
    (_set(["dtype"], 16), "'dtype' must be fp32, bf16 or fp16"),
]


@pytest.mark.parametrize("edit, message", RECORDS, ids=[m for _, m in RECORDS])
def test_edited_records_are_checked_like_flags(good_record, tmp_path, capsys, no_load, edit, message):
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(edit(json.loads(json.dumps(good_record)))))
    before = files_in(tmp_path)
    code, _, err = run(capsys, "generate", "--from-record", str(path), "--device", "cpu")
    assert_one_line(code, err, message)
    assert files_in(tmp_path) == before


@pytest.mark.parametrize("text, message", [
    ('{"request": {"seed": NaN}, "backend": "toy"}', "is not valid JSON"),
    ('{"request": {"seed": Infinity}, "backend": "toy"}', "is not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "is not valid JSON"),
    ("\xff\xfe not text", "is not valid JSON"),
    ("[1, 2]", "is not a vidcore run record"),
])
def test_unreadable_records_are_one_line(tmp_path, capsys, toy_registry, no_load, text, message):
    path = tmp_path / "bad.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text)
    code, _, err = run(capsys, "generate", "--from-record", str(path))
    assert_one_line(code, err, message)


# -- memory, disks and bugs -------------------------------------------------------------------
def test_a_video_larger_than_free_memory_is_refused_first(toy_ckpt, out_dir, capsys, no_load, monkeypatch):
    import vidcore.request

    monkeypatch.setattr(vidcore.request, "_available_bytes", lambda device: 1000)
    code, _, err = run(capsys, "generate", "x", "--backend", "toy", "--ckpt", str(toy_ckpt),
                       "--out", str(out_dir / "v.mp4"), "--device", "cpu")
    assert_one_line(code, err, "for its frames alone, and 0.0 GiB is free")


def test_full_disk_is_one_line_and_leaves_nothing(toy_ckpt, out_dir, capsys, monkeypatch):
    import vidcore.video

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(out_dir / "v.mp4"))

    monkeypatch.setattr(vidcore.video, "write_video", full)
    code, _, err = run(capsys, "generate", "x", "--backend", "toy", "--ckpt", str(toy_ckpt),
                       "--out", str(out_dir / "v.mp4"), "--device", "cpu", "--quiet")
    assert_one_line(code, err, "No space left on device")
    assert "free some disk space" in err
    assert [f for f in files_in(out_dir) if not f.startswith(".")] == []


@pytest.fixture
def broken_decode(monkeypatch, toy_registry):
    import toy_backend

    def decode(*args, **kwargs):
        raise RuntimeError("shape mismatch deep inside a plugin\nsecond line of detail")

    monkeypatch.setattr(type(toy_backend.TOY), "decode", decode)


def test_a_bug_is_one_line_with_a_log_and_exit_1(toy_ckpt, out_dir, tmp_path, capsys, monkeypatch, broken_decode):
    logs = tmp_path / "logs"
    monkeypatch.setenv("VIDCORE_LOG_DIR", str(logs))
    code, _, err = run(capsys, "generate", "x", "--backend", "toy", "--ckpt", str(toy_ckpt),
                       "--out", str(out_dir / "v.mp4"), "--device", "cpu", "--quiet")
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "internal error (RuntimeError: shape mismatch deep inside a plugin)" in err
    assert "this is a bug in vidcore or a plugin" in err
    (log,) = logs.iterdir()
    assert str(log) in err
    text = log.read_text()
    assert "Traceback" in text and "second line of detail" in text and "generate x" in text
    assert [f for f in files_in(out_dir) if not f.startswith(".")] == []


def test_verbose_shows_the_traceback(toy_ckpt, out_dir, tmp_path, capsys, monkeypatch, broken_decode):
    monkeypatch.setenv("VIDCORE_LOG_DIR", str(tmp_path / "logs"))
    code, _, err = run(capsys, "generate", "x", "--backend", "toy", "--ckpt", str(toy_ckpt),
                       "--out", str(out_dir / "v.mp4"), "--device", "cpu", "--quiet", "-v")
    assert code == 1 and "Traceback (most recent call last)" in err and "internal error" in err


def test_user_errors_show_a_traceback_only_with_verbose(toy_ckpt, out_dir, capsys, no_load):
    code, _, err = run(capsys, "-v", "generate", "x", "--backend", "toy", "--ckpt", str(toy_ckpt),
                       "--out", str(out_dir / "v.mp4"), "--guidance", "nan")
    assert code == 2 and "Traceback" in err and err.rstrip().endswith("guidance must be a finite number; got nan")


# -- the Python API meets the same rules -------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"memory": 123}, "memory must be a preset name"),
    ({"dtype": 5}, "unknown dtype 5"),
    ({"device": 3.5}, "unknown device '3.5'"),
    ({"ckpt": 123}, "ckpt must be a checkpoint folder path"),
])
def test_load_arguments_are_checked(toy_ckpt, kwargs, message):
    import vidcore
    from vidcore.errors import VidcoreError

    kwargs = {"ckpt": toy_ckpt, **kwargs}
    with pytest.raises(VidcoreError, match=message):
        vidcore.load("toy", **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"prompt": None}, "prompt must be a string; got None"),
    ({"steps": "3"}, "steps must be a whole number; got '3'"),
    ({"size": (16.5, 16)}, "width must be a whole number; got 16.5"),
    ({"fps": 0}, "fps must be greater than 0"),
    ({"fps": float("inf")}, "fps must be a finite number"),
    ({"guidance": [1, 2]}, "guidance must be a number"),
    ({"seed": 2**70}, "seed must be between 0 and"),
    ({"bogus": 1}, "unknown setting(s) bogus"),
    ({"sampler_options": {"eta": float("nan")}}, "must be a finite number"),
])
def test_call_settings_are_checked(toy_ckpt, kwargs, message):
    import vidcore
    from vidcore.errors import VidcoreError

    with vidcore.load("toy", toy_ckpt, device="cpu") as pipe:
        with pytest.raises(VidcoreError, match=re_escape(message)):
            pipe(**{"prompt": "x", **kwargs})


def re_escape(text):
    import re

    return re.escape(text)
