"""Where a job's files live: named by its server-made id under ``--out``, never by anything a client sent.

``<out>/videos/<id>.mp4`` and its run record ``<id>.json``; an uploaded input
image is ``<out>/inputs/<id>.<png|jpg|webp>``, its type read from its bytes.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..fileio import remove_output
from ..video import record_path

ID_PATTERN = re.compile(r"video_[0-9a-f]{32}")
IMAGE_TYPES = {"png": b"\x89PNG\r\n\x1a\n", "jpg": b"\xff\xd8\xff"}


def new_id() -> str:
    return f"video_{secrets.token_hex(16)}"


def is_id(text: str) -> bool:
    return ID_PATTERN.fullmatch(text) is not None


def image_type(data: bytes) -> str | None:
    """``png``, ``jpg`` or ``webp`` from the file's first bytes; None for anything else."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((ext for ext, magic in IMAGE_TYPES.items() if data.startswith(magic)), None)


@dataclass(frozen=True)
class JobFiles:
    out: Path
    id: str

    def __post_init__(self) -> None:
        if not is_id(self.id):  # the one gate between a name and the file system
            raise ValueError(f"not a job id: {self.id[:80]!r}")

    @property
    def video(self) -> Path:
        return self.out / "videos" / f"{self.id}.mp4"

    @property
    def record(self) -> Path:
        return record_path(self.video)

    def input(self, ext: str) -> Path:
        if ext not in ("png", "jpg", "webp"):
            raise ValueError(f"not an input image type: {ext!r}")
        return self.out / "inputs" / f"{self.id}.{ext}"

    def inputs(self) -> list[Path]:
        return [self.input(ext) for ext in ("png", "jpg", "webp")]

    def remove_outputs(self) -> None:
        for p in (self.video, self.record):
            remove_output(p)

    def remove_all(self) -> None:
        self.remove_outputs()
        for p in self.inputs():
            remove_output(p)


def make_folders(out: Path) -> None:
    for name in ("videos", "inputs"):
        (out / name).mkdir(parents=True, exist_ok=True)
