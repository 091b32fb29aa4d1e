"""Output sizes: the official T2V size table and the I2V aspect-ratio buckets.

T2V (README "Supported resolutions"; the official CLI accepts any size but
was trained and is documented on these): 720p and 540p at h:w = 9:16, 16:9,
4:3, 3:4, 1:1, 129 frames. I2V: the input image picks the bucket of
``generate_crop_size_list(base, 32)`` whose h/w ratio is closest on the image's
side of 1 (``get_closest_ratio``), then is resized and centre-cropped to it.
Sizes here are (width, height), as everywhere in vidcore.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vidcore.backend import Sizes
from vidcore.errors import InvalidRequestError

#: (width, height) by tier and h:w ratio, from the official README table (540p 4:3/3:4 keyed by their real ratio)
T2V_SIZES: dict[str, dict[str, tuple[int, int]]] = {
    "720p": {"9:16": (1280, 720), "16:9": (720, 1280), "4:3": (832, 1104), "3:4": (1104, 832), "1:1": (960, 960)},
    "540p": {"9:16": (960, 544), "16:9": (544, 960), "4:3": (624, 832), "3:4": (832, 624), "1:1": (720, 720)},
}
I2V_BASE = {"720p": 960, "540p": 720, "360p": 480}


def t2v_sizes() -> tuple[tuple[int, int], ...]:
    return tuple(s for tier in T2V_SIZES.values() for s in tier.values())


def _describe(w: int, h: int) -> str:
    for tier, table in T2V_SIZES.items():
        for ratio, size in table.items():
            if size == (w, h):
                return f"{w}x{h} ({tier} h:w {ratio})"
    return f"{w}x{h}"


@dataclass(frozen=True)
class BucketSizes(Sizes):
    """An explicit list of sizes whose error names the nearest ones (by aspect ratio, then pixel count)."""

    def nearest(self, width: int, height: int, n: int = 2) -> list[tuple[int, int]]:
        def key(s: tuple[int, int]) -> tuple[float, float]:
            return (abs(math.log((s[1] / s[0]) / (height / width))), abs(math.log(s[0] * s[1] / (width * height))))

        return sorted(self.allowed, key=key)[:n]

    def check(self, width: int, height: int) -> None:
        if (width, height) in self.allowed:
            return
        if width <= 0 or height <= 0:
            raise InvalidRequestError(f"size {width}x{height} is not a size; use WIDTHxHEIGHT, e.g. 1280x720")
        near = " or ".join(_describe(w, h) for w, h in self.nearest(width, height))
        raise InvalidRequestError(f"size {width}x{height} is not one of HunyuanVideo's sizes; the nearest are {near} "
                                  f"(all: {self.describe()})")


def crop_size_list(base: int, stride: int = 32, max_ratio: float = 4.0) -> list[tuple[int, int]]:
    """The official bucket list as (height, width) pairs (``generate_crop_size_list``)."""
    patches = round((base / stride) ** 2)
    out: list[tuple[int, int]] = []
    wp, hp = patches, 1
    while wp > 0:
        if max(wp, hp) / min(wp, hp) <= max_ratio:
            out.append((wp * stride, hp * stride))
        if (hp + 1) * wp <= patches:
            hp += 1
        else:
            wp -= 1
    return out


def closest_bucket(height: int, width: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The (height, width) bucket for an image, exactly as ``get_closest_ratio`` picks it.

    Ratios are rounded to 5 decimals; for an image at least as tall as wide only
    buckets no taller (ratio <= image ratio) count, otherwise only taller ones;
    ties go to the first in list order.
    """
    ratio = float(height) / float(width)
    diffs = [round(float(h) / float(w), 5) - ratio for h, w in buckets]
    cands = [(i, d) for i, d in enumerate(diffs) if (d <= 0 if ratio >= 1 else d > 0)]
    if not cands:
        raise InvalidRequestError(f"image {width}x{height} is more elongated than any HunyuanVideo-I2V bucket "
                                  "(at most 4:1); crop it first")
    best = min(cands, key=lambda c: abs(c[1]))[0]
    return buckets[best]
