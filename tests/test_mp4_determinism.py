"""The same frames give a byte-identical mp4 in any process, whatever ran before and however many CPUs it sees.

x264 picks its thread count (and with it slices, lookahead and so the bits) from the CPUs
the process may use; `write_video` fixes it at one and muxes with ``+bitexact``. The old
default gave a different file for one CPU and for two, which these tests would catch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from vidcore.video import write_video

ENCODE = """
import os, sys
mode, out = sys.argv[1], sys.argv[2]
if "one-cpu" in mode and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
if "torch" in mode:
    import torch
    torch.set_num_threads(4)
    a = torch.randn(512, 512)
    for _ in range(10):
        a = torch.tanh(a @ a)
import numpy as np
from vidcore.video import write_video
frames = np.random.default_rng(7).integers(0, 256, (10, 240, 320, 3), dtype=np.uint8)
write_video(out, frames, fps=12, lossless="lossless" in mode)
"""


def frames() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (10, 240, 320, 3), dtype=np.uint8)


def encode_in_subprocess(tmp_path: Path, mode: str, name: str) -> bytes:
    out = tmp_path / name
    proc = subprocess.run([sys.executable, "-c", ENCODE, mode, str(out)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out.read_bytes()


@pytest.mark.parametrize("lossless", [False, True])
def test_same_frames_same_bytes_across_processes(tmp_path, lossless):
    extra = "+lossless" if lossless else ""
    a = encode_in_subprocess(tmp_path, "plain" + extra, "a.mp4")
    b = encode_in_subprocess(tmp_path, "torch+one-cpu" + extra, "b.mp4")
    write_video(tmp_path / "c.mp4", frames(), fps=12, lossless=lossless)  # this process, after other tests
    assert a == b == (tmp_path / "c.mp4").read_bytes()


def test_same_frames_same_bytes_in_one_process(tmp_path):
    for lossless in (False, True):
        write_video(tmp_path / "a.mp4", frames(), fps=12, lossless=lossless, overwrite=True)
        write_video(tmp_path / "b.mp4", frames(), fps=12, lossless=lossless, overwrite=True)
        assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


def test_no_varying_metadata(tmp_path):
    write_video(tmp_path / "a.mp4", frames()[:2], fps=12)
    data = (tmp_path / "a.mp4").read_bytes()
    assert b"Lavf" not in data  # no muxer version tag (+bitexact)
    assert b"threads=1 lookahead_threads=1 sliced_threads=0" in data  # x264's settings, as it records them
    with av.open(str(tmp_path / "a.mp4")) as c:
        assert "creation_time" not in c.metadata and "encoder" not in c.metadata
    assert os.path.getsize(tmp_path / "a.mp4") == len(data)
