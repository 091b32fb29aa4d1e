"""A generation request: every setting of one run, resolved against a backend and validated.

Everything a user can get wrong is checked here, before any weights load, so
a bad flag costs milliseconds and says in one line what to change.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .backend import Backend, Inputs
from .errors import InvalidRequestError, UnknownNameError

DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
}


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    if name is None or isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise UnknownNameError("dtype", name, ["fp32", "bf16", "fp16"])
    return DTYPES[name]


def dtype_name(dtype: torch.dtype | None) -> str | None:
    return None if dtype is None else {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(
        dtype, str(dtype).replace("torch.", ""))


def parse_size(text: str | tuple[int, int] | None) -> tuple[int, int] | None:
    if text is None or isinstance(text, tuple):
        return text
    try:
        w, h = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise InvalidRequestError(f"size {text!r} is not WIDTHxHEIGHT; e.g. --size 832x480") from None
    return w, h


@dataclass
class Request:
    """One video's settings; serialised verbatim into the run record."""

    backend: str
    prompt: str
    task: str
    negative: str
    width: int
    height: int
    frames: int
    fps: float
    steps: int
    sampler: str
    schedule: str
    seed: int
    guidance: float | dict[str, float]
    schedule_options: dict[str, Any] = field(default_factory=dict)
    sampler_options: dict[str, Any] = field(default_factory=dict)
    guidance_options: dict[str, Any] = field(default_factory=dict)
    image: str | None = None
    video: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Request:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise InvalidRequestError(f"run record has unknown request fields {sorted(unknown)}; was it edited?")
        return cls(**data)


def resolve(backend: Backend, prompt: str = "", *, task: str | None = None, negative: str | None = None,
            image: str | Path | None = None, video: str | Path | None = None,
            size: str | tuple[int, int] | None = None, frames: int | None = None, fps: float | None = None,
            steps: int | None = None, sampler: str | None = None, schedule: str | None = None,
            shift: float | None = None, guidance: float | Mapping[str, float] | None = None,
            seed: int | None = None, sampler_options: Mapping[str, Any] | None = None,
            schedule_options: Mapping[str, Any] | None = None,
            guidance_options: Mapping[str, Any] | None = None) -> Request:
    """Fill unset settings from the backend's official defaults and validate the result."""
    from .plugins import sampler_names
    from .sampling import Sampler, Scheduler

    d = backend.defaults
    if task is None:
        task = "predict" if video is not None and "predict" in backend.tasks else (
            "i2v" if image is not None and "i2v" in backend.tasks else
            "ti2v" if image is not None and "ti2v" in backend.tasks else backend.tasks[0])
    if task not in backend.tasks:
        raise InvalidRequestError(
            f"backend {backend.name!r} cannot do task {task!r}; it does {', '.join(backend.tasks)}")
    if image is not None and task not in ("i2v", "ti2v"):
        raise InvalidRequestError(f"--image is for image-to-video; backend {backend.name!r} task {task!r} takes none")
    if video is not None and task != "predict":
        raise InvalidRequestError(f"--video is for prediction; backend {backend.name!r} task {task!r} takes none")
    if task == "i2v" and image is None:
        raise InvalidRequestError(f"backend {backend.name!r} task i2v needs an input image; pass --image PATH")
    if task == "predict" and video is None:
        raise InvalidRequestError("task predict needs the past frames; pass --video CLIP.mp4")

    w, h = parse_size(size) or d.size
    n_frames = d.frames if frames is None else int(frames)
    n_steps = d.steps if steps is None else int(steps)
    if n_steps < 1:
        raise InvalidRequestError(f"steps must be at least 1; got {n_steps}")
    sampler = sampler or d.sampler
    if sampler not in sampler_names():
        raise UnknownNameError("sampler", sampler, sampler_names())
    # the official sampler options belong to the official sampler; another sampler starts from none
    sampler_opts = {**(dict(d.sampler_options) if sampler == d.sampler else {}), **(sampler_options or {})}
    Sampler.validate(sampler, sampler_opts)
    schedule = schedule or d.schedule
    # like the sampler's, the backend's schedule options belong to its own schedule
    sched_opts = dict(d.schedule_options) if schedule == d.schedule else {}
    sched_opts.update(schedule_options or {})
    if shift is not None:
        sched_opts["shift"] = float(shift)
    Scheduler(schedule, **sched_opts)  # unknown schedule names and bad options fail here
    g = d.guidance if guidance is None else guidance
    if isinstance(g, Mapping):
        g = {k: float(v) for k, v in g.items()}
        scales = list(g.values())
    else:
        g = float(g)
        scales = [g]
    if any(s < 0 for s in scales):
        raise InvalidRequestError(f"guidance must be >= 0; got {guidance}")
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    if not 0 <= int(seed) < 2**63:
        raise InvalidRequestError(f"seed must be a non-negative integer; got {seed}")
    req = Request(
        backend=backend.name, prompt=prompt, task=task, negative=d.negative if negative is None else negative,
        width=int(w), height=int(h), frames=n_frames, fps=float(fps or d.fps), steps=n_steps, sampler=sampler,
        schedule=schedule, seed=int(seed), guidance=g, schedule_options=sched_opts,
        sampler_options=sampler_opts,
        guidance_options={**d.guidance_options, **(guidance_options or {})},
        image=str(image) if image is not None else None, video=str(video) if video is not None else None,
    )
    return req


def load_inputs(backend: Backend, req: Request) -> Inputs:
    """Read the request's media (cheap), let the backend adjust the size, then check size and frames."""
    from .video import read_image, read_video

    inputs = Inputs()
    if req.image is not None:
        inputs.image = read_image(req.image)
    if req.video is not None:
        inputs.video, _ = read_video(req.video)
    resized = backend.resolve_size(req, inputs)
    if resized is not None:
        req.width, req.height = resized
    backend.sizes.check(req.width, req.height)
    backend.frames.check(req.frames)
    backend.validate(req, inputs)
    return inputs
