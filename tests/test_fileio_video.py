"""Atomic writes never leave partial files or replace existing ones; video/image files round-trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidcore.errors import InvalidRequestError
from vidcore.fileio import atomic_path, check_output_path
from vidcore.video import Video, read_image, read_video, to_uint8, write_image, write_video


def test_atomic_path_success_and_failure(tmp_path):
    dest = tmp_path / "a.txt"
    with atomic_path(dest) as tmp:
        tmp.write_text("hello")
        assert not dest.exists()
    assert dest.read_text() == "hello"
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("partial")
            raise RuntimeError("crash")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no partial, no temp left


def test_existing_file_is_never_replaced_without_overwrite(tmp_path):
    dest = tmp_path / "a.txt"
    dest.write_text("keep")
    with pytest.raises(InvalidRequestError, match="already exists; pass --overwrite"):
        with atomic_path(dest) as tmp:
            tmp.write_text("new")
    assert dest.read_text() == "keep"
    with atomic_path(dest, overwrite=True) as tmp:
        tmp.write_text("new")
    assert dest.read_text() == "new"


def test_file_appearing_meanwhile_is_not_clobbered(tmp_path):
    dest = tmp_path / "race.txt"
    with pytest.raises(InvalidRequestError, match="appeared while writing"):
        with atomic_path(dest) as tmp:
            tmp.write_text("mine")
            dest.write_text("theirs")
    assert dest.read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["race.txt"]


@pytest.mark.parametrize("name, message", [
    ("out.avi", "must end in .mp4"),
    ("missing_dir/out.mp4", "does not exist; create it first"),
])
def test_output_path_checks(tmp_path, name, message):
    with pytest.raises(InvalidRequestError, match=message):
        check_output_path(tmp_path / name, suffix=".mp4")


def _moving_square(t=8, h=32, w=48):
    frames = np.zeros((t, h, w, 3), np.uint8)
    for i in range(t):
        frames[i, 8:20, 2 + 4 * i: 14 + 4 * i] = (220, 40, 30)
    return torch.from_numpy(frames)


def test_video_round_trip_is_near_lossless(tmp_path):
    frames = _moving_square()
    write_video(tmp_path / "v.mp4", frames, fps=12, crf=0)
    back, fps = read_video(tmp_path / "v.mp4")
    assert back.shape == frames.shape and back.dtype == torch.uint8
    assert fps == pytest.approx(12)
    # crf 0 is lossless in YUV; the RGB<->yuv420p conversion costs a little at colour edges
    assert (back.float() - frames.float()).abs().mean() < 4.0


def test_odd_sizes_are_refused(tmp_path):
    with pytest.raises(InvalidRequestError, match="even width and height"):
        write_video(tmp_path / "v.mp4", torch.zeros(2, 15, 16, 3, dtype=torch.uint8), fps=8)
    assert not list(tmp_path.iterdir())


def test_image_round_trip(tmp_path):
    img = _moving_square(1)[0]
    write_image(tmp_path / "i.png", img)
    assert torch.equal(read_image(tmp_path / "i.png"), img)


def test_video_save_writes_record_beside(tmp_path):
    v = Video(_moving_square(), 8, {"backend": "x", "request": {}})
    out = v.save(tmp_path / "clip.mp4")
    rec = (tmp_path / "clip.json").read_text()
    assert '"complete": true' in rec and '"output": "clip.mp4"' in rec
    with pytest.raises(InvalidRequestError, match="already exists"):
        v.save(out)


def test_to_uint8_rounding():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0, -3.0])
    assert to_uint8(x).tolist() == [0, 128, 255, 255, 0]
    assert to_uint8(x, rounding="floor").tolist() == [0, 127, 255, 255, 0]


def test_outputs_follow_the_umask_not_mkstemps_private_mode(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "x.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.txt").stat().st_mode) == 0o644
