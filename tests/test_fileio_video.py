"""Atomic writes never leave partial files or replace existing ones; video/image files round-trip."""

from __future__ import annotations

import errno
import json
import os

import av
import numpy as np
import pytest
import torch

from vidcore.errors import InvalidRequestError, OutputError, VidcoreError
from vidcore.fileio import atomic_path, check_output_path, claim, write_json_atomic
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
    ("afile/out.mp4", "is a file, not a folder"),
    ("folder.mp4", "is a folder; give a file name"),
    ("x" * 296 + ".mp4", "is 300 bytes; at most 230 fit"),
    ("x" * 227 + ".mp4", "is 231 bytes; at most 230 fit"),  # fits alone, not with ".x.mp4.vidcore-part.error.json"
    ("clip.vidcore-lock.mp4", "reserves for its temporary files"),
])
@pytest.mark.parametrize("overwrite", [False, True])
def test_output_path_checks(tmp_path, name, message, overwrite):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "folder.mp4").mkdir()
    with pytest.raises(VidcoreError, match=message) as info:
        check_output_path(tmp_path / name, suffix=".mp4", overwrite=overwrite)
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder.mp4"]  # the probe left nothing


def test_the_longest_allowed_output_name_works(tmp_path):
    name = "x" * 226 + ".mp4"
    out = check_output_path(tmp_path / name, suffix=".mp4")
    Video(_moving_square(2), 8, {"backend": "x", "request": {}}).save(out)
    with claim(out) as c:  # the longest temporary name: ".<name>.mp4.vidcore-part.error.json"
        write_json_atomic(tmp_path / ("x" * 226 + ".error.json"), {}, claim=c)
    assert len(list(tmp_path.iterdir())) == 3


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EIO, errno.EDQUOT])
def test_write_errors_are_one_line_and_leave_no_temp(tmp_path, monkeypatch, code):
    def failing_open(path, *args, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"half a video")
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(av, "open", failing_open)
    dest = tmp_path / "v.mp4"
    with pytest.raises(OutputError) as info:
        write_video(dest, _moving_square(), fps=8)
    msg = str(info.value)
    assert msg.startswith(f"cannot write {str(dest)!r} ({os.strerror(code)}); ") and "\n" not in msg
    assert not list(tmp_path.iterdir())


def test_errors_from_the_muxer_and_the_final_move_are_one_line(tmp_path, monkeypatch):
    import vidcore.fileio

    def no_space(*args, **kwargs):
        raise av.error.OSError(errno.ENOSPC, "No space left on device")

    real_open = av.open

    class Full:  # a container whose every mux fails as ffmpeg reports a full disk
        def __init__(self, *args, **kwargs):
            self.c = real_open(*args, **kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.c.close()

        def add_stream(self, *args, **kwargs):
            return self.c.add_stream(*args, **kwargs)

        def mux(self, packet):
            no_space()

    monkeypatch.setattr(av, "open", Full)
    with pytest.raises(OutputError, match=r"cannot write .*v\.mp4' \(No space left on device\); free some disk"):
        write_video(tmp_path / "v.mp4", _moving_square(), fps=8)
    assert not list(tmp_path.iterdir())
    monkeypatch.undo()

    def eio(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(vidcore.fileio.os, "replace", eio)
    with pytest.raises(OutputError, match=r"j\.json' \(Input/output error\); the disk reported an I/O error"):
        write_json_atomic(tmp_path / "j.json", {"a": 1}, overwrite=True)
    assert not list(tmp_path.iterdir())


def test_a_folder_in_the_way_of_an_overwrite_is_one_line(tmp_path):
    (tmp_path / "d.json").mkdir()
    with pytest.raises(OutputError, match="cannot write .*d.json' \\(Is a directory\\)"):
        write_json_atomic(tmp_path / "d.json", {}, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json"]


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
    # crf 0 is lossless in YUV, not in RGB: yuv420p halves the chroma resolution and rounds the conversion
    assert (back.float() - frames.float()).abs().mean() < 4.0
    assert not torch.equal(back, frames)


@pytest.mark.parametrize("shape", [(6, 32, 48, 3), (3, 17, 31, 3)])  # odd sizes too: RGB has no subsampling
def test_lossless_video_gives_back_exactly_the_frames(tmp_path, shape):
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
    write_video(tmp_path / "v.mp4", frames, fps=8, lossless=True)
    back, fps = read_video(tmp_path / "v.mp4")
    assert torch.equal(back, frames) and fps == pytest.approx(8)
    with av.open(str(tmp_path / "v.mp4")) as c:
        assert c.format.name.startswith("mov,mp4") and c.streams.video[0].codec_context.name == "h264"


def test_the_record_says_how_the_video_was_encoded(tmp_path):
    v = Video(_moving_square(), 8, {"backend": "x", "request": {}})
    v.save(tmp_path / "a.mp4")
    v.save(tmp_path / "b.mp4", lossless=True)
    a = json.loads((tmp_path / "a.json").read_text())["encoding"]
    b = json.loads((tmp_path / "b.json").read_text())["encoding"]
    assert a == {"format": "mp4", "codec": "libx264", "pix_fmt": "yuv420p", "crf": 18, "lossless": False}
    assert b["lossless"] is True and b["codec"] == "libx264rgb" and b["pix_fmt"] == "rgb24"
    assert torch.equal(read_video(tmp_path / "b.mp4")[0], v.frames)


def test_overwrite_removes_the_old_record_before_replacing_the_video(tmp_path, monkeypatch):
    import vidcore.video

    v = Video(_moving_square(), 8, {"backend": "x", "request": {}})
    v.save(tmp_path / "a.mp4")

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(vidcore.video, "write_video", full_disk)
    with pytest.raises(OSError):
        v.save(tmp_path / "a.mp4", overwrite=True)
    # the old video stays, but no complete record claims it is the new one
    assert (tmp_path / "a.mp4").exists() and not (tmp_path / "a.json").exists()


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
