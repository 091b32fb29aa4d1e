"""Image conditioning exactly as the official pipelines build it (sizes, resizing, masks), plus output frames.

Sources: ``wan/image2video.py`` (I2V-A14B: output size from the image's aspect
ratio and ``max_area``, bicubic resize of the whole image, a 4-channel first
frame mask), ``wan/textimage2video.py`` + ``wan/utils/utils.py``
(TI2V-5B: `best_output_size`, Lanczos resize and centre crop, the first latent
frame pinned to the image latent) and ``save_video`` (uint8 conversion).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F


def i2v_size(width: int, height: int, max_area: int, stride: int = 8, patch: int = 2) -> tuple[int, int]:
    """(w, h) of the I2V-A14B output for an input image: ``image2video.py`` lat_h/lat_w, in float64."""
    ar = height / width
    lat_h = round(math.sqrt(max_area * ar) // stride // patch * patch)
    lat_w = round(math.sqrt(max_area / ar) // stride // patch * patch)
    return lat_w * stride, lat_h * stride


def best_output_size(w: int, h: int, dw: int, dh: int, expected_area: int) -> tuple[int, int]:
    """TI2V-5B output (w, h): multiples of (dw, dh) within ``expected_area`` closest to the image's ratio."""
    ratio = w / h
    ow = (expected_area * ratio) ** 0.5
    oh = expected_area / ow
    ow1 = int(ow // dw * dw)
    oh1 = int(expected_area / ow1 // dh * dh)
    ratio1 = ow1 / oh1
    oh2 = int(oh // dh * dh)
    ow2 = int(expected_area / oh2 // dw * dw)
    ratio2 = ow2 / oh2
    if max(ratio / ratio1, ratio1 / ratio) < max(ratio / ratio2, ratio2 / ratio):
        return ow1, oh1
    return ow2, oh2


def to_unit_range(image: torch.Tensor) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [-1, 1] (``TF.to_tensor(img).sub_(0.5).div_(0.5)``)."""
    return image.permute(2, 0, 1).float().div(255).sub(0.5).div(0.5)


def load_rgb(path: str | Path | None, fallback: torch.Tensor | None) -> torch.Tensor:
    """The input image as uint8 (H, W, 3), decoded by Pillow as the official ``Image.open().convert('RGB')``.

    Pillow and FFmpeg decode JPEG with different IDCTs; Pillow is what the
    official code used. Without Pillow (or without a path) the already-decoded
    ``fallback`` is used.
    """
    if path is not None:
        try:
            from PIL import Image
        except ImportError:
            Image = None  # noqa: N806
        if Image is not None:
            import numpy as np

            with Image.open(path) as img:
                return torch.from_numpy(np.array(img.convert("RGB")))
    if fallback is None:
        raise ValueError("no input image")
    return fallback


def i2v_first_frame_video(image: torch.Tensor, width: int, height: int, frames: int) -> torch.Tensor:
    """(1, 3, frames, h, w): the image resized bicubically (float32, CPU) followed by zero frames."""
    x = to_unit_range(image)[None]
    x = F.interpolate(x, size=(height, width), mode="bicubic")
    video = torch.cat([x.transpose(0, 1), torch.zeros(3, frames - 1, height, width)], dim=1)
    return video[None]


def i2v_mask(frames: int, lat_h: int, lat_w: int) -> torch.Tensor:
    """(4, (frames-1)//4+1, lat_h, lat_w): 1 on the first frame (its 4 temporal slots), 0 elsewhere."""
    msk = torch.ones(1, frames, lat_h, lat_w)
    msk[:, 1:] = 0
    msk = torch.cat([msk[:, :1].repeat_interleave(4, dim=1), msk[:, 1:]], dim=1)
    return msk.view(1, msk.shape[1] // 4, 4, lat_h, lat_w).transpose(1, 2)[0]


def ti2v_image(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """(1, 3, 1, h, w): Lanczos-resize so the image covers (w, h), centre-crop, to [-1, 1] (needs Pillow)."""
    import numpy as np
    from PIL import Image

    img = Image.fromarray(image.numpy())
    iw, ih = img.width, img.height
    scale = max(width / iw, height / ih)
    img = img.resize((round(iw * scale), round(ih * scale)), Image.LANCZOS)
    x1, y1 = (img.width - width) // 2, (img.height - height) // 2
    img = img.crop((x1, y1, x1 + width, y1 + height))
    arr = torch.from_numpy(np.array(img))
    return to_unit_range(arr)[:, None][None]


def to_uint8_frames(video: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) in [-1, 1] -> uint8 (B, T, H, W, 3) exactly as the official ``save_video``.

    ``clamp(-1, 1)``, torchvision's ``normalize`` with value_range (-1, 1)
    (clamp, subtract -1, divide by 2), times 255, truncated by ``.type(uint8)``.
    """
    x = video.float().clamp(-1, 1)
    x = x.clamp(-1, 1).sub(-1).div(2)
    return (x * 255).to(torch.uint8).permute(0, 2, 3, 4, 1).contiguous()
