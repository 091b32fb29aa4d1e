"""Procedural clips of coloured shapes moving in a straight line, captioned in words.

Every clip is a pure function of ``(seed, index)``: the generator is seeded
with both, so a dataset is reproducible on any machine and two workers never
draw the same clip. Shapes are rendered from signed distances with a one-pixel
linear ramp, which anti-aliases the edges without supersampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
# half a shape's extent, as a fraction of the frame side: 11-13 pixels of 64, big enough that a circle's
# and a square's outlines differ by whole 8x8 patches (the first demo runs used 0.11-0.13)
RADIUS: tuple[float, float] = (0.17, 0.20)


def radius_range(value: tuple[float, float]) -> tuple[float, float]:
    """A checked ``(low, high)`` range of half-extents: the shape must fit in the frame."""
    if len(value) != 2 or not 0 < value[0] <= value[1] <= 0.25:
        raise ValueError(f"shape_radius {list(value)} must be [low, high] with "
                         "0 < low <= high <= 0.25 (fractions of the frame side)")
    return float(value[0]), float(value[1])


@dataclass(frozen=True)
class ShapeClip:
    """Everything that determines one clip; positions and sizes are fractions of the frame side."""

    shape: str
    colour: str
    direction: str
    radius: float  # half the shape's extent
    speed: float  # distance per frame
    x0: float  # centre at frame 0
    y0: float

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.shape} moving {self.direction}"

    def centre(self, frame: int) -> tuple[float, float]:
        dx, dy = DIRECTIONS[self.direction]
        return self.x0 + dx * self.speed * frame, self.y0 + dy * self.speed * frame


def sample_clip(rng: np.random.Generator, frames: int = 16, shape: str | None = None, colour: str | None = None,
                direction: str | None = None, radius: tuple[float, float] | None = None) -> ShapeClip:
    """Draw a clip whose shape stays inside the frame for ``frames`` frames (attributes may be fixed).

    ``radius`` is the range of half-extents drawn from (default ``RADIUS``).
    """
    shape = shape or SHAPES[rng.integers(len(SHAPES))]
    colour = colour or list(COLOURS)[rng.integers(len(COLOURS))]
    direction = direction or list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
    lo, hi = radius_range(radius or RADIUS)
    radius = float(rng.uniform(lo, hi))
    travel = float(rng.uniform(0.38, 0.44))  # the distance covered over a 16-frame clip
    speed = travel / 15.0
    span = speed * (frames - 1)
    margin = radius + 0.02
    along = float(rng.uniform(margin, max(margin, 1.0 - margin - span)))
    across = float(rng.uniform(margin, 1.0 - margin))
    dx, dy = DIRECTIONS[direction]
    start = along if (dx + dy) > 0 else 1.0 - along
    x0, y0 = (start, across) if dx else (across, start)
    return ShapeClip(shape, colour, direction, radius, speed, x0, y0)


def clip_for(seed: int, index: int, frames: int = 16, **fixed) -> ShapeClip:
    """The clip number ``index`` of the dataset with ``seed`` (deterministic)."""
    return sample_clip(np.random.default_rng([int(seed), int(index)]), frames, **fixed)


def _sdf(shape: str, px: torch.Tensor, py: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, r: float) -> torch.Tensor:
    """Signed distance (pixels, negative inside) to a circle, square or upward isosceles triangle."""
    dx, dy = px - cx, py - cy
    if shape == "circle":
        return torch.sqrt(dx * dx + dy * dy) - r
    if shape == "square":
        return torch.maximum(dx.abs(), dy.abs()) - r
    if shape == "triangle":
        # apex (0, -r), base y = +r from -r to +r: half-planes of the base and both slanted sides
        norm = 1.0 / math.sqrt(5.0)
        side = (2.0 * dx.abs() - dy - r) * norm
        return torch.maximum(dy - r, side)
    raise ValueError(f"unknown shape {shape!r}")


def render(clip: ShapeClip, frames: int = 16, size: int = 64) -> torch.Tensor:
    """The clip as float32 (T, H, W, 3) in [0, 1] on a black background."""
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    py, px = coords.view(1, size, 1), coords.view(1, 1, size)
    t = torch.arange(frames, dtype=torch.float32).view(frames, 1, 1)
    dx, dy = DIRECTIONS[clip.direction]
    cx = (clip.x0 + dx * clip.speed * t) * size
    cy = (clip.y0 + dy * clip.speed * t) * size
    dist = _sdf(clip.shape, px, py, cx, cy, clip.radius * size)
    cover = (0.5 - dist).clamp(0.0, 1.0)
    return cover[..., None] * torch.tensor(COLOURS[clip.colour])


def to_uint8(video: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats to uint8 with rounding."""
    return (video.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)


class ShapesDataset(torch.utils.data.Dataset):
    """``length`` clips of (video float (T, H, W, 3) in [0, 1], caption) drawn from ``seed``."""

    def __init__(self, length: int = 100_000, seed: int = 0, frames: int = 16, size: int = 64):
        self.length, self.seed, self.frames, self.size = length, seed, frames, size

    def __len__(self) -> int:
        return self.length

    def clip(self, index: int) -> ShapeClip:
        return clip_for(self.seed, index, self.frames)

    def __getitem__(self, index: int) -> dict:
        clip = self.clip(index)
        return {"video": render(clip, self.frames, self.size), "caption": clip.caption, "index": index}


def grid_clips(seeds: int = 1, frames: int = 16, base_seed: int = 1234) -> list[ShapeClip]:
    """Every colour x shape x direction combination, ``seeds`` times: the evaluation set."""
    out = []
    for s in range(seeds):
        for ci, colour in enumerate(COLOURS):
            for si, shape in enumerate(SHAPES):
                for di, direction in enumerate(DIRECTIONS):
                    index = ((s * 4 + ci) * 3 + si) * 4 + di
                    rng = np.random.default_rng([base_seed, index])
                    out.append(sample_clip(rng, frames, shape=shape, colour=colour, direction=direction))
    return out
