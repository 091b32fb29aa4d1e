"""A create request's fields -> a checked `vidcore.request.Request`, before anything is queued.

The fields are OpenAI's (``model``, ``prompt``, ``seconds``, ``size``,
``input_reference``) plus ours (``steps``, ``seed``, ``guidance``,
``negative_prompt``, ``sampler``, ``frames``). A multipart form sends every
value as text, JSON sends typed values; both go through the same code as a
CLI flag (`vidcore.request.resolve` and `load_inputs`), so a bad value is the
same one line. ``seconds`` becomes the nearest frame count the backend takes.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import validate
from ..backend import Backend
from ..errors import InvalidRequestError, UnknownNameError, VidcoreError
from ..request import Request, check_fits, load_inputs, resolve
from .files import image_type

OPENAI_FIELDS = ("model", "prompt", "seconds", "size", "input_reference")
OUR_FIELDS = ("steps", "seed", "guidance", "negative_prompt", "sampler", "frames")
FIELDS = OPENAI_FIELDS + OUR_FIELDS
_INT = re.compile(r"[+-]?\d{1,30}")


@dataclass
class Accepted:
    """A request that passed every check, with the size and duration the API reports for it."""

    request: Request
    size: str
    seconds: str


def form_value(text: str) -> Any:
    """A multipart text value as the number it spells, when it spells one; else the text (for the check to name)."""
    s = text.strip()
    if _INT.fullmatch(s):
        return int(s)
    try:
        return float(s)
    except ValueError:
        return text


NUMBERS = ("seconds", "steps", "seed", "guidance", "frames")


def from_form(form: Mapping[str, str]) -> dict[str, Any]:
    """Multipart text fields with the numeric ones read as numbers."""
    return {k: form_value(v) if k in NUMBERS and isinstance(v, str) else v for k, v in form.items()}


def check_fields(fields: Mapping[str, Any]) -> None:
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise InvalidRequestError(f"unknown field(s) {', '.join(unknown)}; accepted: {', '.join(FIELDS)}")


def reference_bytes(value: Any) -> bytes:
    """A JSON ``input_reference``: ``{"image_url": "data:image/...;base64,..."}`` (no URLs are fetched)."""
    if not isinstance(value, Mapping):
        raise InvalidRequestError("input_reference must be an image upload, or {\"image_url\": \"data:image/png;"
                                  "base64,...\"} in JSON")
    if "file_id" in value:
        raise InvalidRequestError("input_reference file_id is not supported here; upload the image instead")
    url = value.get("image_url")
    if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
        raise InvalidRequestError("input_reference image_url must be a base64 data URL (data:image/png;base64,...); "
                                  "this server fetches no URLs")
    try:
        return base64.b64decode(url.partition(";base64,")[2], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError("input_reference image_url is not valid base64") from None


def check_image(data: bytes) -> str:
    """The upload's type (``png``, ``jpg``, ``webp``), read from its bytes; anything else is refused."""
    ext = image_type(data)
    if ext is None:
        raise InvalidRequestError("input_reference must be a PNG, JPEG or WebP image")
    return ext


def _model(fields: Mapping[str, Any], served: Mapping[str, Backend]) -> Backend:
    name = fields.get("model")
    if name is None:
        return next(iter(served.values()))
    if not isinstance(name, str) or name not in served:
        raise UnknownNameError("model", str(name)[:80], list(served))
    return served[name]


def _frames(fields: Mapping[str, Any], backend: Backend) -> int | None:
    if fields.get("seconds") is None:
        return fields.get("frames")
    if fields.get("frames") is not None:
        raise InvalidRequestError("give seconds or frames, not both")
    value = fields["seconds"]  # OpenAI's SDK sends it as text ("4") even in JSON
    seconds = validate.number("seconds", form_value(value) if isinstance(value, str) else value, lo=0.0,
                              lo_open=True, hi=3600.0)
    return backend.frames.nearest(round(seconds * backend.defaults.fps))


def accept(fields: Mapping[str, Any], served: Mapping[str, Backend], *, image: Path | None = None,
           device: torch.device | str = "cpu") -> Accepted:
    """Resolve and check a create request exactly as `vidcore generate` would; raises a one-line `VidcoreError`."""
    check_fields(fields)
    if fields.get("prompt") is None:
        raise InvalidRequestError("prompt is required")
    backend = _model(fields, served)
    try:
        req = resolve(backend, fields["prompt"], size=fields.get("size"), frames=_frames(fields, backend),
                      steps=fields.get("steps"), seed=fields.get("seed"), guidance=fields.get("guidance"),
                      negative=fields.get("negative_prompt"), sampler=fields.get("sampler"), image=image)
        shaped = dataclasses.replace(req)  # load_inputs may size the video after the image
        load_inputs(backend, shaped)
        check_fits(backend, shaped, device)
    except VidcoreError as exc:
        if image is None:
            raise
        # the message names the input by its field, not by where the server keeps it
        message = str(exc).replace(repr(str(image)), "input_reference").replace(str(image), "input_reference")
        raise InvalidRequestError(message) from None
    return Accepted(req, f"{shaped.width}x{shaped.height}", f"{shaped.frames / shaped.fps:g}")
