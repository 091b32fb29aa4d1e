"""`vidcore generate` killed while it writes: nothing half-written stays, and the next run cleans up and succeeds.

The child process is the real CLI; it is only slowed down at one point (the
encoder has just opened its temporary file) so the kill lands mid-write every
time instead of by luck.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("vidcore_latte")

CHILD = r"""
import sys, time
from pathlib import Path
import av
import vidcore.video as video

ready = Path(sys.argv[1])
real_open = av.open

def slow_open(*args, **kwargs):
    container = real_open(*args, **kwargs)
    if kwargs.get("mode") == "w" or (len(args) > 1 and args[1] == "w"):
        ready.write_text("writing")
        time.sleep(120)
    return container

video.av.open = slow_open
from vidcore.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("VIDCORE_LOAD_PLUGINS", None)
    return env


def _visible_and_hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_killed_generate_leaves_no_output_and_the_rerun_cleans_up(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    ready = tmp_path / "ready"
    argv = ["generate", "a red ball", "--steps", "2", "--seed", "5", "--out", str(out_dir / "v.mp4"), "--quiet",
            "--device", "cpu"]
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(ready), *argv], env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert child.poll() is None, child.communicate()[1].decode()
            assert time.monotonic() < deadline, "the child never started writing"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    # no final output, no record: a reader never sees half a video
    assert "v.mp4" not in _visible_and_hidden(out_dir) and "v.json" not in _visible_and_hidden(out_dir)

    rerun = subprocess.run([sys.executable, "-m", "vidcore", *argv], env=_env(), capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert _visible_and_hidden(out_dir) == ["v.json", "v.mp4"]  # the killed run's temporary files are gone
