"""`vidcore generate` and its outputs: claimed before the weights load, held until the record is written.

A busy output, a folder that takes no files and an existing record are one
line and exit 2 before any heavy work (the loader is replaced by one that fails
the test); ``--lossless`` writes exactly the frames generated; a prompts file
that is not UTF-8 is one line naming it.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import av
import pytest
import torch

from vidcore import fileio
from vidcore.cli import main
from vidcore.video import read_video

HOLDER = """
import sys, time
from pathlib import Path
from vidcore.fileio import claim
p = Path(sys.argv[1])
with claim(p) as c:
    c.temp(p).write_bytes(b"half a video")
    print("ready", flush=True)
    time.sleep(600)
"""


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def assert_one_line(code, err, message):
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and message in err, err


def generate(capsys, toy_ckpt, out, *extra):
    return run(capsys, "generate", "a red ball", "--backend", "toy", "--ckpt", str(toy_ckpt), "--out", str(out),
               "--device", "cpu", "--quiet", *extra)


@pytest.fixture
def holder(tmp_path):
    """A live process that holds the claim on a path (and has written its temporary file)."""
    procs = []

    def start(path: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.communicate()


# -- claims -----------------------------------------------------------------------------------
def test_a_busy_output_is_one_line_before_loading(toy_ckpt, out_dir, capsys, no_load, holder):
    out = out_dir / "v.mp4"
    proc = holder(out)
    code, _, err = generate(capsys, toy_ckpt, out)
    assert_one_line(code, err, f"is being written by another vidcore process (pid {proc.pid})")
    assert visible(out_dir) == []
    assert (out_dir / ".v.mp4.vidcore-part.mp4").read_bytes() == b"half a video"  # the live writer's: untouched


def test_the_claim_is_held_from_before_loading_until_the_record_is_written(toy_ckpt, out_dir, capsys, monkeypatch):
    import vidcore.pipeline
    import vidcore.video

    out = out_dir / "v.mp4"
    held = []
    real_load, real_write_json = vidcore.pipeline.load, vidcore.video.write_json_atomic

    def load(*args, **kwargs):
        held.append(("load", fileio.holds(out)))
        return real_load(*args, **kwargs)

    def write_json(path, *args, **kwargs):
        held.append(("record", fileio.holds(out)))
        return real_write_json(path, *args, **kwargs)

    monkeypatch.setattr(vidcore.pipeline, "load", load)
    monkeypatch.setattr(vidcore.video, "write_json_atomic", write_json)
    code, _, err = generate(capsys, toy_ckpt, out)
    assert code == 0, err
    assert held == [("load", True), ("record", True)]
    assert not fileio.holds(out) and sorted(p.name for p in out_dir.iterdir()) == ["v.json", "v.mp4"]


def test_an_existing_record_is_refused_before_loading(toy_ckpt, out_dir, capsys, no_load):
    (out_dir / "v.json").write_text("{}\n")
    code, _, err = generate(capsys, toy_ckpt, out_dir / "v.mp4")
    assert_one_line(code, err, "v.json' already exists; pass --overwrite")
    assert visible(out_dir) == ["v.json"] and (out_dir / "v.json").read_text() == "{}\n"


# -- folders that take no files ----------------------------------------------------------------
def test_a_read_only_folder_is_one_line_before_loading(toy_ckpt, out_dir, capsys, no_load, monkeypatch):
    real_open = os.open

    def refuse(path, *args, **kwargs):  # what a read-only mount or a folder without write permission answers
        if Path(path).parent == out_dir:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    code, _, err = generate(capsys, toy_ckpt, out_dir / "v.mp4")
    assert_one_line(code, err, f"cannot write to folder {str(out_dir)!r} (Permission denied)")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_folder_for_real(toy_ckpt, out_dir, capsys, no_load):
    out_dir.chmod(0o555)
    try:
        code, _, err = generate(capsys, toy_ckpt, out_dir / "v.mp4")
    finally:
        out_dir.chmod(0o755)
    assert_one_line(code, err, "cannot write to folder")


def test_an_output_folder_that_is_a_file_is_one_line(toy_ckpt, out_dir, capsys, no_load):
    (out_dir / "notes").write_text("not a folder")
    code, _, err = generate(capsys, toy_ckpt, out_dir / "notes" / "v.mp4")
    assert_one_line(code, err, "is a file, not a folder")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc")
def test_a_virtual_folder_is_one_line_that_does_not_say_it_is_missing(toy_ckpt, capsys, no_load):
    code, _, err = generate(capsys, toy_ckpt, "/proc/x.mp4")
    assert_one_line(code, err, "cannot create files in folder '/proc'")
    assert "does not exist" not in err


# -- --lossless -------------------------------------------------------------------------------
def test_lossless_writes_exactly_the_frames_generated(toy_ckpt, out_dir, capsys, monkeypatch):
    import vidcore.video

    made = []
    real_save = vidcore.video.Video.save

    def save(self, *args, **kwargs):
        made.append(self.frames.clone())
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(vidcore.video.Video, "save", save)
    code, _, err = generate(capsys, toy_ckpt, out_dir / "v.mp4", "--lossless")
    assert code == 0, err
    back, _ = read_video(out_dir / "v.mp4")
    assert torch.equal(back, made[0])
    with av.open(str(out_dir / "v.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264"
    encoding = json.loads((out_dir / "v.json").read_text())["encoding"]
    assert encoding["lossless"] is True and encoding["codec"] == "libx264rgb" and encoding["pix_fmt"] == "rgb24"


def test_the_default_encoding_is_not_lossless(toy_ckpt, out_dir, capsys):
    code, _, err = generate(capsys, toy_ckpt, out_dir / "v.mp4")
    assert code == 0, err
    encoding = json.loads((out_dir / "v.json").read_text())["encoding"]
    assert encoding == {"format": "mp4", "codec": "libx264", "pix_fmt": "yuv420p", "crf": 18, "lossless": False}


# -- batch files that are not text -------------------------------------------------------------
@pytest.mark.parametrize("content", [
    b'{"prompt": "a"}\n' + b"\xff\xfe\x80" + random.Random(0).randbytes(300),
    '{"prompt": "a"}\n'.encode("utf-16"),
], ids=["random-bytes", "utf-16"])
def test_a_prompts_file_that_is_not_utf8_is_one_line_naming_it(toy_ckpt, out_dir, tmp_path, capsys, no_load,
                                                               content):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(content)
    code, _, err = run(capsys, "batch", str(prompts), "--out", str(out_dir), "--backend", "toy",
                       "--ckpt", str(toy_ckpt), "--device", "cpu", "--quiet")
    assert_one_line(code, err, f"prompts file {str(prompts)!r} is not UTF-8 text")
    assert list(out_dir.iterdir()) == []
