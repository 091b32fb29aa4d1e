"""Clip sources: ``item(g)`` returns training clip number ``g`` of an endless, seeded stream.

The trainer asks for global sample indices (step * batch + position), so a
run is deterministic, resumes exactly, and splits the same global batch over
any number of ranks.
"""

from __future__ import annotations

from typing import Protocol

from .shapes import clip_for, render


class ClipSource(Protocol):
    frames: int
    size: int

    def item(self, index: int) -> dict:
        """{"video": float (T, H, W, 3) in [0, 1], "caption": str, "label": int | None}."""
        ...


class ShapesSource:
    """The procedural shapes: clip ``g`` is ``clip_for(seed, g)``, so the stream never repeats."""

    def __init__(self, seed: int = 0, frames: int = 16, size: int = 64, radius: tuple[float, float] | None = None):
        self.seed, self.frames, self.size, self.radius = seed, frames, size, radius

    def item(self, index: int) -> dict:
        clip = clip_for(self.seed, index, self.frames, radius=self.radius)
        return {"video": render(clip, self.frames, self.size), "caption": clip.caption, "label": None}


def make_source(data: str, seed: int, frames: int, size: int, split: str = "train",
                shape_radius: tuple[float, float] | None = None) -> ClipSource:
    if data == "shapes":
        return ShapesSource(seed, frames, size, shape_radius)
    from .folders import FolderSource

    return FolderSource.from_split(data, split=split, seed=seed)
