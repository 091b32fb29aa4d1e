"""A cheap look at a run while it samples: the denoised latent mapped straight to RGB.

Decoding with the VAE at every step would cost as much as a step. Instead
each latent channel contributes a fixed colour (``Backend.latent_rgb``: a
(channels, 3) matrix when the backend has one) or, without one, the first
three channels are stretched to 0..255. The frames are at latent resolution
(a few dozen pixels a side) and only a hint of the final video.

The pipeline puts ``info["preview"]`` in each step's callback payload: a
function that computes the preview when called, so a callback that does not
look costs nothing. `notebook_preview()` is a ready callback for Jupyter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch


def latent_to_rgb(latent: torch.Tensor, factors: Sequence[Sequence[float]] | None = None) -> torch.Tensor:
    """uint8 frames (T, H, W, 3) of one video's latent (C, T, H, W) (or (C, H, W) for an image)."""
    x = latent.detach().float().cpu()
    if x.dim() == 3:
        x = x[:, None]
    if factors is not None:
        m = torch.tensor(factors, dtype=torch.float32)
        if m.shape != (x.shape[0], 3):
            raise ValueError(f"latent_rgb must be ({x.shape[0]}, 3) for this latent; got {tuple(m.shape)}")
        rgb = torch.einsum("cthw,ck->thwk", x, m)
        rgb = (rgb.clamp(-1, 1) + 1) * 127.5
    else:
        rgb = x[:3].permute(1, 2, 3, 0)
        if rgb.shape[-1] < 3:
            rgb = rgb[..., :1].expand(*rgb.shape[:-1], 3)
        lo, hi = rgb.amin(), rgb.amax()
        rgb = (rgb - lo) / (hi - lo).clamp_min(1e-6) * 255
    return rgb.round().clamp(0, 255).to(torch.uint8)


def preview_of(info: dict[str, Any], factors: Sequence[Sequence[float]] | None) -> Callable[[], torch.Tensor]:
    """The lazy ``info["preview"]``: video 0 of the batch's denoised estimate at this step."""

    def preview() -> torch.Tensor:
        return latent_to_rgb(info["denoised"][0], factors)

    return preview


def notebook_preview(every: int = 1, frame: str | int = "middle") -> Callable[[dict[str, Any]], None]:
    """A step callback that shows one preview frame in a Jupyter output, updated in place."""
    from IPython.display import Image, display  # only in a notebook

    handle: list[Any] = []

    def callback(info: dict[str, Any]) -> None:
        if int(info["i"]) % every:
            return
        frames = info["preview"]()
        k = frames.shape[0] // 2 if frame == "middle" else int(frame)
        png = _png(frames[k])
        if handle:
            handle[0].update(Image(data=png))
        else:
            handle.append(display(Image(data=png), display_id=True))

    return callback


def _png(image: torch.Tensor) -> bytes:
    import tempfile
    from pathlib import Path

    from .video import write_image

    with tempfile.TemporaryDirectory() as tmp:
        return write_image(Path(tmp) / "p.png", image).read_bytes()
