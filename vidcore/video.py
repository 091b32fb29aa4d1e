"""Video and image files through PyAV, frames as uint8 (T, H, W, 3) tensors.

Default mp4 output is H.264 in yuv420p at crf 18: what every player and
browser plays, and *not exact*. It needs even width and height, stores colour
(chroma) at a quarter of the resolution (half in each direction), rounds each
pixel through the RGB to YUV conversion, and crf 18 is "visually lossless"
compression, not lossless; even ``crf=0`` (lossless in YUV) gives back
different RGB. Decoded pixels typically differ by a few levels and by far more
at sharp colour edges.

``lossless=True`` stores the RGB frames exactly: H.264 in RGB (``libx264rgb``,
``qp 0``, High 4:4:4 profile) in mp4, any width and height; `read_video`
returns exactly the frames written. Such files are several times larger and
play in ffmpeg, VLC and mpv but not in most browsers. Use it when the pixels
matter (metrics, regression tests, further processing).

Encoding is deterministic: one encoder thread and ``+bitexact`` muxing (no
library version tag, no creation time), so the same frames give a
byte-identical file in any process on any machine with the same x264 build.
Writes are atomic and claimed (`vidcore.fileio`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from .errors import InvalidRequestError, OutputError
from .fileio import Claim, atomic_path, check_output_path, claim, remove_output, write_json_atomic

log = logging.getLogger(__name__)


def _as_uint8_frames(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3); got {arr.dtype} {tuple(arr.shape)}")
    return np.ascontiguousarray(arr)


def video_encoding(*, crf: int = 18, lossless: bool = False) -> dict[str, Any]:
    """How `write_video` encodes, as saved in run records (``"encoding"``)."""
    if lossless:
        return {"format": "mp4", "codec": "libx264rgb", "pix_fmt": "rgb24", "qp": 0, "crf": None, "lossless": True}
    return {"format": "mp4", "codec": "libx264", "pix_fmt": "yuv420p", "crf": int(crf), "lossless": False}


def write_video(path: str | Path, frames: torch.Tensor | np.ndarray, fps: float, *, crf: int = 18,
                lossless: bool = False, overwrite: bool = False, claim: Claim | None = None) -> Path:
    """Encode frames as mp4 atomically and deterministically: H.264 yuv420p at ``crf``, or exact RGB (``lossless``)."""
    arr = _as_uint8_frames(frames)
    _, h, w, _ = arr.shape
    enc = video_encoding(crf=crf, lossless=lossless)
    if not lossless and (h % 2 or w % 2):
        raise InvalidRequestError(f"H.264 in yuv420p needs even width and height; got {w}x{h} (lossless RGB "
                                  "takes any size)")
    if not 0 <= int(crf) <= 51:
        raise InvalidRequestError(f"crf {crf} is out of range; use 0 to 51 (18 is visually lossless)")
    # one thread: x264's output depends on its thread count, which otherwise follows the CPUs it sees
    options = {"threads": "1", "qp": "0"} if lossless else {"threads": "1", "crf": str(int(crf))}
    with atomic_path(path, overwrite=overwrite, claim=claim) as tmp:
        try:
            with av.open(str(tmp), mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
                stream = container.add_stream(enc["codec"], rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height, stream.pix_fmt = w, h, enc["pix_fmt"]
                stream.thread_count = 1
                stream.options = options
                for frame in arr:
                    for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
        except OSError:
            raise  # atomic_path names the file and the reason
        except av.error.FFmpegError as exc:
            raise OutputError(f"cannot encode {str(path)!r} with {enc['codec']}: {exc}") from None
    return Path(path)


def read_video(path: str | Path, *, max_frames: int | None = None) -> tuple[torch.Tensor, float]:
    """Decode a video file into uint8 (T, H, W, 3) and its frame rate."""
    p = _readable(path, "video")
    try:
        with av.open(str(p)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0) or 0.0
            frames = []
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except (av.error.FFmpegError, IndexError) as exc:
        raise InvalidRequestError(f"cannot read video {str(p)!r}: {exc}; give an mp4/webm/avi clip") from None
    if not frames:
        raise InvalidRequestError(f"video {str(p)!r} has no frames")
    return torch.from_numpy(np.stack(frames)), fps


def read_image(path: str | Path) -> torch.Tensor:
    """Decode a png/jpg/webp image into uint8 (H, W, 3)."""
    p = _readable(path, "image")
    try:
        with av.open(str(p)) as container:
            frame = next(container.decode(video=0))
            return torch.from_numpy(frame.to_ndarray(format="rgb24"))
    except (av.error.FFmpegError, StopIteration, IndexError) as exc:
        raise InvalidRequestError(f"cannot read image {str(p)!r}: {exc}; give a png or jpg file") from None


def write_image(path: str | Path, image: torch.Tensor | np.ndarray, *, overwrite: bool = False) -> Path:
    """Write a uint8 (H, W, 3) image as png (lossless) atomically."""
    arr = _as_uint8_frames(np.asarray(image)[None] if not isinstance(image, torch.Tensor) else image[None])[0]
    with atomic_path(path, overwrite=overwrite) as tmp:
        with av.open(str(tmp), mode="w", format="image2") as container:
            stream = container.add_stream("png")
            stream.width, stream.height, stream.pix_fmt = arr.shape[1], arr.shape[0], "rgb24"
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return Path(path)


def _readable(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise InvalidRequestError(f"{what} {str(p)!r} does not exist or is not a file")
    try:
        with open(p, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise InvalidRequestError(f"{what} {str(p)!r} is not readable: {exc.strerror}") from None
    return p


def to_uint8(x: torch.Tensor, *, rounding: str = "round") -> torch.Tensor:
    """Map [-1, 1] floats to uint8; ``rounding="floor"`` truncates as ``(x * 255).to(uint8)`` does."""
    y = (x.float().clamp(-1, 1) + 1) * 127.5
    y = y.round() if rounding == "round" else y.floor()
    return y.to(torch.uint8)


@dataclass
class Video:
    """A generated video: uint8 frames (T, H, W, 3), its frame rate and the run record that made it."""

    frames: torch.Tensor
    fps: float
    record: dict[str, Any] | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        t, h, w, _ = self.frames.shape
        rec = self.record or {}
        req = rec.get("request") or {}
        made = f", {req['backend']}, seed {req['seed']}" if "backend" in req and "seed" in req else ""
        length = f"{t / self.fps:.1f} s" if self.fps else "? s"
        return f"Video({t} frames, {w}x{h}, {self.fps:g} fps, {length}{made})"

    def to_numpy(self) -> np.ndarray:
        """The frames as a uint8 numpy array (T, H, W, 3)."""
        return self.frames.numpy()

    def to_pil(self) -> list[Any]:
        """The frames as PIL images (needs Pillow: ``pip install pillow``)."""
        try:
            from PIL import Image
        except ImportError:
            raise InvalidRequestError("Video.to_pil needs Pillow; pip install pillow (or use to_numpy())") from None
        return [Image.fromarray(f) for f in self.to_numpy()]

    def _repr_html_(self) -> str:
        """An inline player in Jupyter: the mp4 (H.264, browsers play it) embedded as a data URL."""
        import base64
        import html
        import tempfile

        frames = self.frames
        if frames.shape[1] % 2 or frames.shape[2] % 2:  # yuv420p needs even sides: repeat the last row/column
            frames = torch.nn.functional.pad(frames.permute(0, 3, 1, 2).float(),
                                             (0, frames.shape[2] % 2, 0, frames.shape[1] % 2),
                                             mode="replicate").permute(0, 2, 3, 1).to(torch.uint8)
        with tempfile.TemporaryDirectory() as tmp:
            path = write_video(Path(tmp) / "preview.mp4", frames, self.fps or 16)
            data = base64.b64encode(path.read_bytes()).decode("ascii")
        return (f'<video controls loop autoplay muted playsinline title="{html.escape(repr(self))}" '
                f'width="{self.frames.shape[2]}" src="data:video/mp4;base64,{data}"></video>')

    def save(self, path: str | Path, *, overwrite: bool = False, crf: int = 18, lossless: bool = False,
             record: bool = True) -> Path:
        """Write the mp4 and, beside it, the run record (``<name>.json``) needed to reproduce it.

        Both are written under one claim on the mp4 (`vidcore.fileio.claim`,
        re-entrant, so a caller may already hold it). With ``overwrite`` the
        old record goes first, so a complete record always describes the video
        beside it. The record says how the video was encoded (``"encoding"``).
        """
        out = check_output_path(path, suffix=".mp4", overwrite=overwrite)
        rec_path = record_path(out)
        with claim(out) as c:
            if record and self.record is not None and rec_path.exists() and not overwrite:
                raise InvalidRequestError(f"{str(rec_path)!r} already exists; pass --overwrite or choose another "
                                          "--out")
            if overwrite:
                remove_output(rec_path)
            write_video(out, self.frames, self.fps, crf=crf, lossless=lossless, overwrite=overwrite, claim=c)
            if record and self.record is not None:
                data = dict(self.record, output=out.name, encoding=video_encoding(crf=crf, lossless=lossless),
                            complete=True)
                write_json_atomic(rec_path, data, overwrite=overwrite, claim=c)
        log.info("wrote %s (%d frames, %sx%s, %.3g fps)", out, *self.frames.shape[:3], self.fps)
        return out

    def __len__(self) -> int:
        return int(self.frames.shape[0])


def record_path(video_path: str | Path) -> Path:
    p = Path(video_path)
    return p.with_suffix(".json")
