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

from vidcore.batch import read_jobs, run_batch
from vidcore.errors import InvalidRequestError

TESTS = Path(__file__).parent


def write_prompts(path: Path, n: int, bad: int | None = None) -> Path:
    lines = []
    for i in range(n):
        item = {"prompt": f"clip number {i}", "steps": 2}
        if i == bad:
            item["size"] = "20x16"  # not a multiple of 8: this one fails
        lines.append(json.dumps(item))
    path.write_text("\n".join(lines) + "\n")
    return path


def complete_records(out: Path) -> dict[str, dict]:
    recs = {}
    for p in out.glob("*.json"):
        if p.name.startswith("summary") or p.name.endswith(".error.json"):
            continue
        data = json.loads(p.read_text())
        if data.get("complete"):
            recs[p.stem] = data
    return recs


def test_failures_are_recorded_and_resume_skips_done(toy_ckpt, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", 4, bad=2)
    out = tmp_path / "out"
    out.mkdir()
    s = run_batch(prompts, out, backend="toy", ckpt=str(toy_ckpt), device="cpu", progress=False)
    assert len(s.done) == 3 and s.failed == ["00002-clip-number-2"] and not s.skipped
    err = json.loads((out / "00002-clip-number-2.error.json").read_text())
    assert "size 20x16 is not supported" in err["error"]
    seeds = {r["request"]["seed"] for r in complete_records(out).values()}
    assert seeds == {0, 1, 3}  # base seed + line index, stable across restarts
    s2 = run_batch(prompts, out, backend="toy", ckpt=str(toy_ckpt), device="cpu", progress=False)
    assert len(s2.skipped) == 3 and s2.failed == ["00002-clip-number-2"] and not s2.done


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
def decode(self, components, latents, request):
    time.sleep(slow)
    return orig(self, components, latents, request)
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
    assert not list(out.glob(".*.part*"))  # no partial file
    assert all((out / f"{name}.json").exists() for name in (p.stem for p in out.glob("*.mp4")))
    stamps = {name: (out / f"{name}.mp4").stat().st_mtime_ns for name in first}

    proc = subprocess.run([sys.executable, str(script), "0", *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"{n - len(first)} done, 0 failed, {len(first)} skipped" in proc.stdout
    final = complete_records(out)
    assert len(final) == n and len(list(out.glob("*.mp4"))) == n
    assert all((out / f"{name}.mp4").stat().st_mtime_ns == stamps[name] for name in first)  # not redone
