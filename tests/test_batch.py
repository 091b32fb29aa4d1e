"""Batches: each prompt done exactly once across ranks and restarts; failures recorded; kills leave no partials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vidcore.batch import read_jobs, run_batch
from vidcore.errors import InvalidRequestError, VidcoreError

TESTS = Path(__file__).parent


def write_prompts(path: Path, n: int, bad: int | None = None) -> Path:
    lines = []
    for i in range(n):
        item = {"prompt": f"clip number {i}" + (" (bad)" if i == bad else ""), "steps": 2}
        lines.append(json.dumps(item))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def bad_prompts_fail(monkeypatch):
    """Prompts containing "(bad)" fail at decode time, after their line passed every check."""
    import toy_backend

    orig = toy_backend.ToyBackend.decode

    def decode(self, components, latents, request, *, conditions):
        if "(bad)" in request.prompt:
            raise RuntimeError("decoder ran out of memory (simulated)")
        return orig(self, components, latents, request, conditions=conditions)

    monkeypatch.setattr(toy_backend.ToyBackend, "decode", decode)


def complete_records(out: Path) -> dict[str, dict]:
    recs = {}
    for p in out.glob("*.json"):
        if p.name.startswith("summary") or p.name.endswith(".error.json"):
            continue
        data = json.loads(p.read_text())
        if data.get("complete"):
            recs[p.stem] = data
    return recs


def test_failures_are_recorded_and_resume_skips_done(toy_ckpt, tmp_path, bad_prompts_fail):
    prompts = write_prompts(tmp_path / "p.jsonl", 4, bad=2)
    out = tmp_path / "out"
    out.mkdir()
    s = run_batch(prompts, out, backend="toy", ckpt=str(toy_ckpt), device="cpu", progress=False)
    bad = "00002-clip-number-2-bad"
    assert len(s.done) == 3 and s.failed == [bad] and not s.skipped
    err = json.loads((out / f"{bad}.error.json").read_text())
    assert "simulated" in err["error"] and err["line"] == 3
    seeds = {r["request"]["seed"] for r in complete_records(out).values()}
    assert seeds == {0, 1, 3}  # base seed + line index, stable across restarts
    s2 = run_batch(prompts, out, backend="toy", ckpt=str(toy_ckpt), device="cpu", progress=False)
    assert len(s2.skipped) == 3 and s2.failed == [bad] and not s2.done
    summary = json.loads((out / "summary.rank0.json").read_text())
    assert summary["skipped"] == s2.skipped and summary["busy"] == []
    assert not [p.name for p in out.iterdir() if ".vidcore-" in p.name]  # no temp or lock file left


def test_every_line_is_resolved_before_any_weights_load(toy_ckpt, tmp_path, monkeypatch):
    import vidcore.pipeline

    def no_load(*args, **kwargs):
        raise AssertionError("weights loaded before the prompts were checked")

    monkeypatch.setattr(vidcore.pipeline, "load", no_load)
    out = tmp_path / "out"
    out.mkdir()
    for line3, message in [({"size": "20x16"}, "size 20x16 is not supported"),
                           ({"steps": "two"}, "steps"),
                           ({"sampler": "nope"}, "unknown sampler 'nope'"),
                           ({"image": str(tmp_path / "missing.png")}, "image"),
                           ({"backend": "other"}, "asks for backend 'other'")]:
        lines = [{"prompt": "a", "steps": 2}, {"prompt": "b"}, {"prompt": "c", **line3}]
        prompts = tmp_path / "p.jsonl"
        prompts.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
        with pytest.raises(VidcoreError) as info:
            run_batch(prompts, out, backend="toy", ckpt=str(toy_ckpt), device="cpu", progress=False)
        text = str(info.value)
        assert text.startswith("p.jsonl line 3") and message in text and "\n" not in text, text
        assert not list(out.iterdir())


@pytest.mark.parametrize("name, message", [
    ("/tmp/abs", "path separator"),
    ("../important", "path separator"),
    ("sub/clip", "path separator"),
    ("a\\b", "path separator"),
    ("..", "path separator"),
    (".hidden", "starts with a dot"),
    ("nul\u0000byte", "control character"),
    ("new\nline", "control character"),
    ("x" * 300, "bytes; at most 226 fit"),
    ("é" * 114, "bytes; at most 226 fit"),  # 228 bytes in UTF-8
    ("a:b", "Windows"),
    ("CON", "reserved device name"),
    ("trailing.", "ends with a space or a dot"),
    ("clip.vidcore-part", "reserves for its temporary files"),
    ("summary.rank0", "collide with the batch's own files"),
    ("x.error", "collide with the batch's own files"),
    ("", "is empty"),
])
def test_names_must_be_plain_file_names(tmp_path, name, message):
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"prompt": "ok", "name": "fine"}) + "\n" + json.dumps({"prompt": "a", "name": name}))
    with pytest.raises(InvalidRequestError, match="p.jsonl line 2") as info:
        read_jobs(p, out_dir=tmp_path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_longest_allowed_name_writes_all_its_files(tmp_path):
    from vidcore.fileio import claim, write_json_atomic

    name = "n" * 226
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"prompt": "a", "name": name}))
    (job,) = read_jobs(p, out_dir=tmp_path)
    mp4 = job.output(tmp_path)
    with claim(mp4) as c:  # the lock file, and the temp name of the longest file beside the video
        write_json_atomic(tmp_path / f"{name}.error.json", {}, claim=c)
    assert sorted(q.name for q in tmp_path.iterdir()) == sorted(["p.jsonl", f"{name}.error.json"])


def test_names_outside_the_output_folder_touch_nothing(toy_ckpt, tmp_path):
    important = tmp_path / "important.mp4"
    important.write_bytes(b"precious")  # a video without a complete record: the old clean-up deleted it
    out = tmp_path / "out"
    out.mkdir()
    for name in ("../important", str(important.with_suffix(""))):
        p = tmp_path / "p.jsonl"
        p.write_text(json.dumps({"prompt": "a", "steps": 2, "name": name}) + "\n")
        with pytest.raises(InvalidRequestError, match="p.jsonl line 1: output name .* contains a path separator"):
            run_batch(p, out, backend="toy", ckpt=str(toy_ckpt), device="cpu", progress=False)
    assert important.read_bytes() == b"precious"
    assert sorted(q.name for q in tmp_path.iterdir()) == ["important.mp4", "out", "p.jsonl", "toy-ckpt"]
    assert not list(out.iterdir())


def test_names_differing_only_in_case_are_refused(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"prompt": "a", "name": "Clip"}) + "\n" + json.dumps({"prompt": "b", "name": "clip"}))
    with pytest.raises(InvalidRequestError, match="line 2: output name differs only in case from 'Clip' \\(line 1\\)"):
        read_jobs(p)


def test_ranks_share_the_work_without_overlap(toy_ckpt, tmp_path, monkeypatch):
    prompts = write_prompts(tmp_path / "p.jsonl", 5)
    out = tmp_path / "out"
    out.mkdir()
    done = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        s = run_batch(prompts, out, backend="toy", ckpt=str(toy_ckpt), device="cpu", progress=False)
        done.append(set(s.done))
    assert done[0].isdisjoint(done[1]) and len(done[0] | done[1]) == 5
    assert {n[:5] for n in done[1]} == {"00001", "00003"}


@pytest.mark.parametrize("content, message", [
    ('{"prompt": "a"}\nnot json\n', "line 2 is not valid JSON"),
    ('{"text": "a"}\n', 'line 1 needs a "prompt" string'),
    ('{"prompt": "a", "colour": "red"}\n', "unknown settings \\['colour'\\]"),
    ('{"prompt": "a", "name": "x"}\n{"prompt": "b", "name": "x"}\n', "duplicate output name 'x'"),
    ("\n", "has no prompts"),
])
def test_bad_prompt_files(tmp_path, content, message):
    p = tmp_path / "p.jsonl"
    p.write_text(content)
    with pytest.raises(InvalidRequestError, match=message):
        read_jobs(p)


RUNNER = """
import sys, time
sys.path.insert(0, {tests!r})
import toy_backend
slow = float(sys.argv[1])
orig = toy_backend.ToyBackend.decode
def decode(self, components, latents, request, *, conditions):
    time.sleep(slow)
    return orig(self, components, latents, request, conditions=conditions)
toy_backend.ToyBackend.decode = decode
from vidcore import plugins
plugins.reset(extra_plugins=[("toy", toy_backend)])
from vidcore.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_sigterm_midway_then_restart_does_each_prompt_exactly_once(toy_ckpt, tmp_path):
    n = 6
    prompts = write_prompts(tmp_path / "p.jsonl", n)
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "runner.py"
    script.write_text(RUNNER.format(tests=str(TESTS)))
    env = dict(os.environ, VIDCORE_LOAD_PLUGINS="")
    args = ["batch", str(prompts), "--out", str(out), "--backend", "toy", "--ckpt", str(toy_ckpt), "--device",
            "cpu", "--quiet"]
    proc = subprocess.Popen([sys.executable, str(script), "0.5", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while len(complete_records(out)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    died_early = proc.poll() is not None
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert not died_early, f"the batch ended before it was killed: {err[-2000:]}"
    assert proc.returncode != 0
    first = complete_records(out)
    assert 2 <= len(first) < n
    assert not [p.name for p in out.iterdir() if ".vidcore-part" in p.name]  # no partial file
    assert all((out / f"{name}.json").exists() for name in (p.stem for p in out.glob("*.mp4")))
    stamps = {name: (out / f"{name}.mp4").stat().st_mtime_ns for name in first}

    proc = subprocess.run([sys.executable, str(script), "0", *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"{n - len(first)} done, 0 failed, {len(first)} skipped" in proc.stdout
    final = complete_records(out)
    assert len(final) == n and len(list(out.glob("*.mp4"))) == n
    assert all((out / f"{name}.mp4").stat().st_mtime_ns == stamps[name] for name in first)  # not redone
    assert not [p.name for p in out.iterdir() if ".vidcore-" in p.name]  # no temp or lock file left


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60) | st.text(alphabet="./\\\x00 :ab", max_size=12))
def test_an_accepted_name_never_leaves_the_output_folder(name):
    from vidcore.batch import Job, name_problem
    from vidcore.fileio import Claim, check_name

    out = Path("/srv/out")
    if name_problem(name) is not None:
        return
    try:
        check_name(name, out, extra=len(".mp4"))
    except InvalidRequestError:
        return
    mp4 = Job(0, name, {}).output(out)
    c = Claim(mp4)
    files = [mp4, out / f"{name}.json", out / f"{name}.error.json", c.lock, c.temp(),
             c.temp(out / f"{name}.json"), c.temp(out / f"{name}.error.json")]
    for p in files:
        assert os.path.dirname(os.path.normpath(p)) == str(out), p
        assert "\x00" not in str(p) and len(os.fsencode(p.name)) <= 255


def test_batch_size_groups_lines_of_one_shape_and_gives_the_same_videos(toy_ckpt, tmp_path, monkeypatch):
    import vidcore.pipeline
    from vidcore.video import read_video

    lines = [{"prompt": f"clip {i}", "steps": 2 if i != 3 else 3} for i in range(5)]
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    alone, grouped = tmp_path / "alone", tmp_path / "grouped"
    alone.mkdir()
    grouped.mkdir()
    run_batch(prompts, alone, backend="toy", ckpt=str(toy_ckpt), device="cpu", progress=False)
    sizes = []
    original = vidcore.pipeline.Pipeline.run_many

    def counting(self, requests, *args, **kwargs):
        sizes.append(len(requests))
        return original(self, requests, *args, **kwargs)

    monkeypatch.setattr(vidcore.pipeline.Pipeline, "run_many", counting)
    s = run_batch(prompts, grouped, backend="toy", ckpt=str(toy_ckpt), device="cpu", progress=False, batch_size=2)
    assert len(s.done) == 5 and not s.failed
    assert sorted(sizes) == [1, 2, 2]  # lines 0-1 and 2+4 (steps 2) together, line 3 (steps 3) alone
    for name in s.done:
        a, _ = read_video(alone / f"{name}.mp4")
        b, _ = read_video(grouped / f"{name}.mp4")
        assert (a.int() - b.int()).abs().max() <= 3  # batched-matmul rounding, through the mp4 codec
        rec = json.loads((grouped / f"{name}.json").read_text())
        assert rec["complete"] and rec["request"]["prompt"] == json.loads((alone / f"{name}.json").read_text())[
            "request"]["prompt"]


def test_a_failing_batch_is_rerun_one_video_at_a_time(toy_ckpt, tmp_path, bad_prompts_fail):
    prompts = write_prompts(tmp_path / "p.jsonl", 4, bad=1)
    out = tmp_path / "out"
    out.mkdir()
    s = run_batch(prompts, out, backend="toy", ckpt=str(toy_ckpt), device="cpu", progress=False, batch_size=4)
    bad = "00001-clip-number-1-bad"
    assert s.failed == [bad] and len(s.done) == 3
    assert "simulated" in json.loads((out / f"{bad}.error.json").read_text())["error"]


def test_batch_size_is_checked(toy_ckpt, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", 2)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InvalidRequestError, match="batch size"):
        run_batch(prompts, out, backend="toy", ckpt=str(toy_ckpt), device="cpu", progress=False, batch_size=0)
