"""SIGKILL a real `vidcore batch` mid-run, run it again: done videos stay, the rest complete, no debris is left.

SIGKILL runs no clean-up at all, so what the killed process leaves (its lock file, a half
written temporary file, a video whose record never came) must be recognised and removed
by the next run, which may only do so because the kernel released the dead process's claims.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("vidcore_latte")

PROMPTS = [
    {"prompt": "a red ball moving left", "steps": 2, "name": "first"},
    {"prompt": "a blue square moving up", "steps": 12, "name": "second"},  # ~1 s each: killed during this one
    {"prompt": "a green ball moving down", "steps": 12, "name": "third"},
]


def complete(out: Path) -> set[str]:
    names = set()
    for p in out.glob("*.json"):
        try:
            if json.loads(p.read_text()).get("complete") and (out / f"{p.stem}.mp4").exists():
                names.add(p.stem)
        except (OSError, ValueError):
            continue  # being written
    return names


def debris(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if ".vidcore-" in p.name)


def test_sigkill_then_rerun_finishes_the_rest_and_leaves_no_debris(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "vidcore", "batch", str(prompts), "--out", str(out), "--backend", "latte-shapes",
           "--device", "cpu", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not complete(out) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    ended_early = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert not ended_early, f"the batch ended before it was killed: {err[-2000:]}"
    first = complete(out)
    assert "first" in first and len(first) < 3, first
    left_by_kill = debris(out)  # normally the lock file of the job in flight
    # what a kill at other moments leaves: a half-written temp file, a video whose record never came
    todo = sorted({"second", "third"} - first)
    (out / f".{todo[0]}.mp4.vidcore-part.mp4").write_bytes(b"half an mp4")
    (out / f".{todo[0]}.mp4.vidcore-part.json").write_text('{"complete": fal')
    (out / f"{todo[-1]}.mp4").write_bytes(b"a video without its record")
    kept = {name: (out / f"{name}.mp4").stat() for name in first}
    kept_records = {name: (out / f"{name}.json").read_bytes() for name in first}

    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"{3 - len(first)} done, 0 failed, {len(first)} skipped" in proc.stdout
    assert complete(out) == {"first", "second", "third"}
    for name, st in kept.items():  # not redone: the very same file
        now = (out / f"{name}.mp4").stat()
        assert (now.st_ino, now.st_mtime_ns, now.st_size) == (st.st_ino, st.st_mtime_ns, st.st_size)
        assert (out / f"{name}.json").read_bytes() == kept_records[name]
    assert (out / f"{todo[-1]}.mp4").stat().st_size > 1000  # the record-less video was redone
    assert debris(out) == [], f"left by the kill: {left_by_kill}"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{n}.{ext}" for n in ("first", "second", "third") for ext in ("mp4", "json")] + ["summary.rank0.json"])
    assert sorted(os.listdir(tmp_path)) == ["out", "p.jsonl"]  # nothing outside --out
