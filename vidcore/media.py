"""Input images and videos as users hold them: a path, a PIL image, a numpy array or a tensor.

Everything becomes the pipeline's form, uint8 channels last ((H, W, 3) for an
image, (T, H, W, 3) for a video), with one clear line when it cannot. Media
given in memory have no path for the run record, so the record names them by
the sha256 of their pixels; a replay then asks for the same pixels again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import InvalidRequestError

#: prefix of the request's image/video field for media given in memory (not a file name)
IN_MEMORY = "in-memory:"


def is_in_memory(label: str | None) -> bool:
    return label is not None and label.startswith(IN_MEMORY)


def is_path(obj: Any) -> bool:
    return isinstance(obj, (str, Path))


def as_image(obj: Any) -> torch.Tensor:
    """uint8 (H, W, 3) from a PIL image, an array or tensor (H, W, 3) / (3, H, W), uint8 or float in [0, 1]."""
    arr = _pixels(obj, "image")
    if arr.ndim == 2:  # greyscale
        arr = arr[..., None].expand(*arr.shape, 3)
    if arr.ndim != 3:
        raise InvalidRequestError(f"image must be (H, W, 3) or (3, H, W); got shape {tuple(arr.shape)}")
    if arr.shape[-1] not in (1, 3, 4) and arr.shape[0] in (1, 3, 4):
        arr = arr.permute(1, 2, 0)
    return _rgb(arr, "image")


def as_video(obj: Any) -> torch.Tensor:
    """uint8 (T, H, W, 3) from a list of images, an array or tensor (T, H, W, 3) / (T, 3, H, W)."""
    if isinstance(obj, (list, tuple)):
        if not obj:
            raise InvalidRequestError("video is an empty list of frames; give at least one frame")
        frames = [as_image(f) for f in obj]
        if len({f.shape for f in frames}) > 1:
            raise InvalidRequestError("video frames differ in size; give frames of one size")
        return torch.stack(frames)
    arr = _pixels(obj, "video")
    if arr.ndim != 4:
        raise InvalidRequestError(f"video must be (T, H, W, 3) or (T, 3, H, W); got shape {tuple(arr.shape)}")
    if arr.shape[-1] not in (1, 3, 4) and arr.shape[1] in (1, 3, 4):
        arr = arr.permute(0, 2, 3, 1)
    if arr.shape[0] < 1:
        raise InvalidRequestError("video has no frames")
    return _rgb(arr, "video")


def label(pixels: torch.Tensor, what: str) -> str:
    """The request's name for in-memory media: kind, shape and a digest of the pixels."""
    digest = hashlib.sha256(pixels.contiguous().numpy().tobytes()).hexdigest()[:16]
    shape = "x".join(str(s) for s in pixels.shape)
    return f"{IN_MEMORY}{what} {shape} sha256:{digest}"


def _pixels(obj: Any, what: str) -> torch.Tensor:
    if type(obj).__module__.startswith("PIL."):  # a PIL image, without importing PIL
        return torch.from_numpy(np.array(obj.convert("RGB")))
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    raise InvalidRequestError(f"{what} must be a file path, a PIL image, a numpy array or a torch tensor; "
                              f"got {type(obj).__name__}")


def _rgb(arr: torch.Tensor, what: str) -> torch.Tensor:
    if arr.shape[-1] == 1:
        arr = arr.expand(*arr.shape[:-1], 3)
    elif arr.shape[-1] == 4:  # drop alpha
        arr = arr[..., :3]
    elif arr.shape[-1] != 3:
        raise InvalidRequestError(f"{what} must have 1, 3 or 4 channels; got shape {tuple(arr.shape)}")
    if arr.dtype == torch.uint8:
        return arr.contiguous()
    if arr.dtype.is_floating_point:
        if not torch.isfinite(arr).all():
            raise InvalidRequestError(f"{what} holds NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise InvalidRequestError(f"a float {what} must hold values in [0, 1]; got [{lo:.3g}, {hi:.3g}] "
                                      "(give uint8 for 0..255)")
        return (arr.float() * 255).round().to(torch.uint8).contiguous()
    raise InvalidRequestError(f"{what} must be uint8 or float in [0, 1]; got {arr.dtype}")
