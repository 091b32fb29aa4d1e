"""Clips from folders of mp4 files or of frame images, described by a YAML split file.

Split file (paths relative to the file, or to ``root``)::

    root: data                 # optional
    clip_length: 16            # frames per training clip
    stride: 1                  # take every stride-th frame
    resolution: 64             # square side, or [width, height]; frames are centre-cropped and resized
    train:
      - {path: clips/a.mp4, caption: "a red circle moving right"}
      - {path: frames/b, label: 2}      # a folder of png/jpg frames, sorted by name
      - clips/c.mp4                     # caption from clips/c.txt when present
    val:
      - {path: clips/d.mp4, caption: "..."}

A plain folder instead of a YAML file means: every mp4 and frame folder in
it, for training. Files that cannot be read or are too short are reported by
path (a warning) and skipped, so one bad file never stops a run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of ``n`` items in ``epoch`` (a pure function of seed and epoch)."""
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=gen)


@dataclass(frozen=True)
class Entry:
    path: Path
    caption: str = ""
    label: int | None = None


def _read_frames(path: Path) -> torch.Tensor:
    """uint8 (T, H, W, 3) from a video file or a folder of images."""
    if path.is_dir():
        import numpy as np
        from PIL import Image

        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError("no image frames in the folder")
        return torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files]))
    import av
    import numpy as np

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise ValueError("no decodable video frames")
    return torch.from_numpy(np.stack(frames))


def _resize(video: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (T, height, width, 3) in [0, 1]: centre crop to the aspect, then area resize."""
    T, H, W, _ = video.shape
    scale = min(H / height, W / width)
    ch, cw = int(round(height * scale)), int(round(width * scale))
    y0, x0 = (H - ch) // 2, (W - cw) // 2
    x = video[:, y0: y0 + ch, x0: x0 + cw].permute(0, 3, 1, 2).float() / 255
    if (ch, cw) != (height, width):
        x = F.interpolate(x, size=(height, width), mode="area" if scale > 1 else "bilinear", align_corners=None)
    return x.permute(0, 2, 3, 1).clamp(0, 1)


class FolderSource:
    """A seeded, endless stream over a split's clips (reshuffled each epoch, deterministic by seed)."""

    def __init__(self, entries: list[Entry], clip_length: int = 16, stride: int = 1,
                 resolution: tuple[int, int] = (64, 64), seed: int = 0, check: bool = True):
        self.clip_length, self.stride, self.seed = clip_length, stride, seed
        self.width, self.height = resolution
        self.frames, self.size = clip_length, resolution[0]
        self.bad: list[tuple[Path, str]] = []
        self.entries = [e for e in entries if not check or self._usable(e)]
        if not self.entries:
            raise ValueError(f"no usable clips (of {len(entries)}); see the warnings above")

    def _usable(self, entry: Entry) -> bool:
        need = (self.clip_length - 1) * self.stride + 1
        try:
            if not entry.path.exists():
                raise ValueError("missing")
            n = _read_frames(entry.path).shape[0]
            if n < need:
                raise ValueError(f"{n} frames, fewer than the {need} a clip needs")
        except Exception as exc:  # any unreadable file is reported and skipped
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("skipping %s: %s", entry.path, reason)
            self.bad.append((entry.path, reason))
            return False
        return True

    @classmethod
    def from_split(cls, path: str | Path, split: str = "train", seed: int = 0) -> FolderSource:
        path = Path(path)
        if path.is_dir():
            return cls(scan_folder(path), seed=seed)
        spec = yaml.safe_load(path.read_text()) or {}
        root = (path.parent / spec.get("root", ".")).resolve()
        res = spec.get("resolution", 64)
        res = (int(res), int(res)) if isinstance(res, int) else (int(res[0]), int(res[1]))
        entries = []
        for item in spec.get(split) or []:
            item = {"path": item} if isinstance(item, str) else dict(item)
            p = root / item["path"]
            caption = item.get("caption")
            if caption is None and p.with_suffix(".txt").exists():
                caption = p.with_suffix(".txt").read_text().strip()
            entries.append(Entry(p, caption or "", item.get("label")))
        return cls(entries, int(spec.get("clip_length", 16)), int(spec.get("stride", 1)), res, seed)

    def __len__(self) -> int:
        return len(self.entries)

    def item(self, index: int) -> dict:
        n = len(self.entries)
        for attempt in range(n):
            g = index + attempt
            order = epoch_order(n, self.seed, g // n)
            entry = self.entries[int(order[g % n])]
            try:
                video = _read_frames(entry.path)
            except Exception as exc:
                log.warning("skipping %s: %s", entry.path, exc)
                continue
            span = (self.clip_length - 1) * self.stride + 1
            gen = torch.Generator().manual_seed(self.seed * 7919 + index)
            start = int(torch.randint(0, video.shape[0] - span + 1, (), generator=gen))
            clip = video[start: start + span: self.stride]
            return {"video": _resize(clip, self.width, self.height), "caption": entry.caption,
                    "label": entry.label}
        raise RuntimeError("no clip could be read")


def scan_folder(folder: Path) -> list[Entry]:
    """Every video file and every folder of images directly inside ``folder`` (captions from .txt)."""
    entries = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in VIDEO_SUFFIXES or (p.is_dir() and any(q.suffix.lower() in IMAGE_SUFFIXES
                                                                      for q in p.iterdir())):
            txt = p.with_suffix(".txt") if p.is_file() else p / "caption.txt"
            entries.append(Entry(p, txt.read_text().strip() if txt.exists() else ""))
    return entries
