"""The I2V reference image: bucket, resize and centre-crop exactly as the official torchvision transform.

``transforms.Resize(min(bucket))`` on a PIL image scales the shorter side to
``min(bucket)`` (the longer one to ``int(min * long / short)``) with PIL's
bilinear filter; ``CenterCrop(bucket)`` then cuts at
``round((size - crop) / 2)``; ``ToTensor`` + ``Normalize(0.5, 0.5)`` maps to
[-1, 1]. We do the same with PIL directly (no torchvision dependency).
"""

from __future__ import annotations

import numpy as np
import torch

from vidcore.errors import InvalidRequestError


def _pil(image: torch.Tensor):
    from PIL import Image

    return Image.fromarray(image.cpu().numpy().astype(np.uint8), mode="RGB")


def resize_center_crop(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, height, width) in [-1, 1], the official I2V preprocessing."""
    from PIL import Image

    pil = _pil(image)
    w, h = pil.size
    side = min(height, width)
    if w <= h:
        new_w, new_h = side, int(side * h / w)
    else:
        new_w, new_h = int(side * w / h), side
    pil = pil.resize((new_w, new_h), Image.BILINEAR)
    if new_w < width or new_h < height:
        raise InvalidRequestError(f"image {w}x{h} cannot be cropped to {width}x{height}; use a larger image")
    top = int(round((new_h - height) / 2.0))
    left = int(round((new_w - width) / 2.0))
    pil = pil.crop((left, top, left + width, top + height))
    x = torch.from_numpy(np.asarray(pil, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
    return (x - 0.5) / 0.5


def clip_pixels(image_processor, image: torch.Tensor) -> torch.Tensor:
    """The LLaVA vision input: the *original* image through the checkpoint's CLIP image processor."""
    return image_processor(_pil(image), return_tensors="pt")["pixel_values"]
