"""Claims: one writer per output; a dead writer's leftovers are cleaned, a live writer's are never touched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vidcore import fileio
from vidcore.batch import run_batch
from vidcore.errors import OutputBusyError, OutputError
from vidcore.fileio import claim, holds, sweep

HOLDER = """
import sys, time
from pathlib import Path
from vidcore.fileio import claim
p = Path(sys.argv[1])
with claim(p) as c:
    c.temp(p).write_bytes(b"half a video")
    if len(sys.argv) > 2:
        p.write_bytes(b"a video whose record is not written yet")
    print("ready", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
    """Start a process that claims a path, writes its temp file (and optionally the output) and sleeps."""
    procs = []
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)

    def start(path: Path, *extra: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, str(script), str(path), *extra], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read()
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def debris(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".vidcore-" in p.name)


def test_claim_makes_a_lock_file_and_removes_it(tmp_path):
    out = tmp_path / "v.mp4"
    with claim(out) as c:
        assert c.lock == tmp_path / ".v.mp4.vidcore-lock" and c.lock.exists() and holds(out)
        assert c.temp() == tmp_path / ".v.mp4.vidcore-part.mp4"
        assert c.temp(tmp_path / "v.json") == tmp_path / ".v.mp4.vidcore-part.json"
        assert c.temp(tmp_path / "v.error.json") == tmp_path / ".v.mp4.vidcore-part.error.json"
        with pytest.raises(ValueError, match="does not cover"):
            c.temp(tmp_path / "w.json")
        with claim(out) as again:  # re-entrant in one process
            assert again == c
        assert c.lock.exists() and holds(out)
    assert not holds(out) and not list(tmp_path.iterdir())


def test_a_live_holder_makes_the_claim_busy_and_its_death_frees_it(tmp_path, holder):
    out = tmp_path / "v.mp4"
    proc = holder(out)
    t0 = time.monotonic()
    with pytest.raises(OutputBusyError) as info:
        with claim(out, wait=0.2):
            pass
    assert time.monotonic() - t0 >= 0.2  # it retried before giving up
    msg = str(info.value)
    assert f"is being written by another vidcore process (pid {proc.pid})" in msg and "\n" not in msg
    assert "choose another --out" in msg
    assert (tmp_path / ".v.mp4.vidcore-part.mp4").exists()  # its temp file is not ours to touch
    kill(proc)
    with claim(out, wait=0.0):  # the kernel dropped the dead holder's lock; taking it removes its temp file
        assert debris(tmp_path) == [".v.mp4.vidcore-lock"]
    assert debris(tmp_path) == []


def test_the_lock_file_removal_race(tmp_path):
    """A waiter that locked a lock file its holder removed meanwhile retries on the new file."""
    out = tmp_path / "v.mp4"
    lock = tmp_path / ".v.mp4.vidcore-lock"
    import fcntl

    fd = os.open(lock, os.O_RDWR | os.O_CREAT)  # another holder (flock conflicts across open files)
    fcntl.flock(fd, fcntl.LOCK_EX)
    got = {}

    def waiter():
        with claim(out, wait=5.0) as c:
            held = fileio._held[fileio._registry_key(c.lock)]
            got["same"] = fileio._same_file(held.fd, c.lock)
            got["old"] = os.fstat(held.fd).st_ino == old_inode

    old_inode = os.fstat(fd).st_ino
    keep = os.open(lock, os.O_RDONLY)  # pins the old inode: a freed number may be reused by the new file
    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.3)
    os.unlink(lock)  # the holder gives it back: unlink, then close
    os.close(fd)
    t.join(10)
    os.close(keep)
    assert got == {"same": True, "old": False}
    assert not lock.exists()


def test_sweep_cleans_only_free_claims_and_only_our_files(tmp_path, holder):
    live = tmp_path / "live.mp4"
    proc = holder(live)
    dead = tmp_path / "dead.mp4"
    (tmp_path / ".dead.mp4.vidcore-part.mp4").write_bytes(b"x")
    (tmp_path / ".dead.mp4.vidcore-part.json").write_bytes(b"x")
    (tmp_path / ".dead.mp4.vidcore-lock").write_text("12345 elsewhere\n")
    (tmp_path / ".orphan.mp4.vidcore-part.mp4").write_bytes(b"x")  # no lock file at all
    (tmp_path / ".skip.mp4.vidcore-part.mp4").write_bytes(b"x")
    others = [".clip.mp4.abcd1234.part.mp4", ".notes", "dead.mp4", "x.part"]
    for name in others:
        (tmp_path / name).write_bytes(b"not vidcore's temp file")
    assert sorted(sweep(tmp_path, skip={"skip.mp4"})) == ["dead.mp4", "orphan.mp4"]
    assert debris(tmp_path) == [".live.mp4.vidcore-lock", ".live.mp4.vidcore-part.mp4", ".skip.mp4.vidcore-part.mp4"]
    assert all((tmp_path / name).exists() for name in others) and dead.exists()
    kill(proc)
    assert sweep(tmp_path) == ["live.mp4", "skip.mp4"]
    assert debris(tmp_path) == []


def prompts_file(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"prompt": f"clip {i}", "steps": 2}) + "\n" for i in range(n)))
    return path


def test_batch_skips_a_job_another_process_holds_and_does_it_once_the_holder_dies(toy_ckpt, tmp_path, holder):
    prompts = prompts_file(tmp_path / "p.jsonl", 3)
    out = tmp_path / "out"
    out.mkdir()
    held = out / "00001-clip-1.mp4"
    proc = holder(held, "with-video")
    s = run_batch(prompts, out, backend="toy", ckpt=str(toy_ckpt), device="cpu", progress=False)
    assert s.busy == ["00001-clip-1"] and len(s.done) == 2 and not s.failed
    assert "1 busy" in s.line()
    # neither its temp file nor its record-less video was touched: they are the other process's
    assert (out / ".00001-clip-1.mp4.vidcore-part.mp4").read_bytes() == b"half a video"
    assert held.read_bytes() == b"a video whose record is not written yet"
    assert json.loads((out / "summary.rank0.json").read_text())["busy"] == ["00001-clip-1"]
    kill(proc)
    s2 = run_batch(prompts, out, backend="toy", ckpt=str(toy_ckpt), device="cpu", progress=False)
    assert s2.done == ["00001-clip-1"] and len(s2.skipped) == 2 and not s2.busy
    assert held.stat().st_size > 100 and json.loads((out / "00001-clip-1.json").read_text())["complete"]
    assert debris(out) == []


def test_a_read_only_folder_is_one_line_before_any_work(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    real_open = os.open

    def refuse(path, *args, **kwargs):
        if Path(path).parent == folder:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    for attempt in (lambda: fileio.check_output_path(folder / "v.mp4", suffix=".mp4"),
                    lambda: claim(folder / "v.mp4").__enter__(),
                    lambda: fileio.check_writable(folder)):
        with pytest.raises(OutputError) as info:
            attempt()
        msg = str(info.value)
        assert msg.startswith(f"cannot write to folder {str(folder)!r} (Permission denied)") and "\n" not in msg


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_folder_for_real(toy_ckpt, tmp_path):
    prompts = prompts_file(tmp_path / "p.jsonl", 1)
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="cannot write to folder .*Permission denied"):
            run_batch(prompts, folder, backend="toy", ckpt=str(toy_ckpt), device="cpu", progress=False)
    finally:
        folder.chmod(0o755)


def test_a_file_that_cannot_be_removed_is_one_line(toy_ckpt, tmp_path, monkeypatch):
    prompts = prompts_file(tmp_path / "p.jsonl", 1)
    out = tmp_path / "out"
    out.mkdir()
    stale = out / "00000-clip-0.mp4"
    stale.write_bytes(b"a video without a record")
    real_unlink = Path.unlink

    def refuse(self, *args, **kwargs):
        if self == stale:
            raise PermissionError(1, "Operation not permitted", str(self))
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", refuse)
    with pytest.raises(OutputError) as info:
        run_batch(prompts, out, backend="toy", ckpt=str(toy_ckpt), device="cpu", progress=False)
    assert str(info.value).startswith(f"cannot remove {str(stale)!r} (Operation not permitted)")
    assert stale.exists() and debris(out) == []
