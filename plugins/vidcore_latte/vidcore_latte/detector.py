"""An analytic judge of shape clips: colour masks, centroid tracks and the shape's fill ratio.

It needs no learning, so it can grade a generator objectively: the dominant
palette colour among bright pixels names the colour; the centroid's displacement
from the first to the last quarter of the clip names the direction; the ratio of
the shape's area to its bounding box names the shape (square ~1, circle ~pi/4,
our triangle ~1/2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .data.shapes import COLOURS

_PALETTE = torch.tensor(list(COLOURS.values()))  # (4, 3)
_NAMES = list(COLOURS)
SQUARE_MIN_FILL = 0.88
CIRCLE_MIN_FILL = 0.65


@dataclass(frozen=True)
class Detection:
    colour: str | None
    shape: str | None
    direction: str | None
    fill: float
    displacement: tuple[float, float]  # (dx, dy) in pixels, first quarter to last quarter

    def matches(self, caption_or_clip) -> dict[str, bool]:
        """Per-attribute agreement with a `ShapeClip` (or anything with colour/shape/direction)."""
        c = caption_or_clip
        return {"colour": self.colour == c.colour, "shape": self.shape == c.shape,
                "direction": self.direction == c.direction}


def _as_float(video: torch.Tensor) -> torch.Tensor:
    video = torch.as_tensor(video)
    if video.dtype == torch.uint8:
        return video.float() / 255.0
    return video.float().clamp(0, 1)


def detect(video: torch.Tensor, min_pixels: int = 6) -> Detection:
    """Judge one clip: uint8 or [0, 1] float (T, H, W, 3)."""
    v = _as_float(video)
    T, H, W, _ = v.shape
    bright = v.amax(-1) > 0.5
    dist = ((v[..., None, :] - _PALETTE) ** 2).sum(-1)  # (T, H, W, 4)
    label = dist.argmin(-1)
    counts = torch.stack([((label == k) & bright).sum() for k in range(len(_NAMES))])
    if counts.sum() < min_pixels:
        return Detection(None, None, None, 0.0, (0.0, 0.0))
    k = int(counts.argmax())
    mask = (label == k) & bright
    ys = torch.arange(H, dtype=torch.float32).view(1, H, 1)
    xs = torch.arange(W, dtype=torch.float32).view(1, 1, W)
    area = mask.sum((1, 2)).float()
    ok = area >= min_pixels
    cx = (mask * xs).sum((1, 2)) / area.clamp(min=1)
    cy = (mask * ys).sum((1, 2)) / area.clamp(min=1)
    direction, disp = None, (0.0, 0.0)
    q = max(1, T // 4)
    first, last = ok[:q], ok[T - q:]
    if first.any() and last.any():
        dx = float(cx[T - q:][last].mean() - cx[:q][first].mean())
        dy = float(cy[T - q:][last].mean() - cy[:q][first].mean())
        disp = (dx, dy)
        if abs(dx) >= abs(dy):
            direction = "right" if dx > 0 else "left"
        else:
            direction = "down" if dy > 0 else "up"
    fills = []
    for t in range(T):
        if not ok[t]:
            continue
        rows = mask[t].any(1).nonzero().flatten()
        cols = mask[t].any(0).nonzero().flatten()
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
        if y0 == 0 or x0 == 0 or y1 == H - 1 or x1 == W - 1:
            continue  # touching the border: the box is cut
        fills.append(float(area[t]) / ((y1 - y0 + 1) * (x1 - x0 + 1)))
    if not fills:
        return Detection(_NAMES[k], None, direction, 0.0, disp)
    fill = float(torch.tensor(fills).median())
    shape = "square" if fill >= SQUARE_MIN_FILL else "circle" if fill >= CIRCLE_MIN_FILL else "triangle"
    return Detection(_NAMES[k], shape, direction, fill, disp)


def score(videos, clips) -> dict[str, float]:
    """Accuracy of colour, shape, direction and all three over paired clips and videos."""
    tally = {"colour": 0, "shape": 0, "direction": 0, "all": 0}
    n = 0
    for video, clip in zip(videos, clips):
        m = detect(video).matches(clip)
        for key, good in m.items():
            tally[key] += int(good)
        tally["all"] += int(all(m.values()))
        n += 1
    return {key: value / max(n, 1) for key, value in tally.items()}
