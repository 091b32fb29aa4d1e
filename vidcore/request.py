"""A generation request: every setting of one run, resolved against a backend and validated.

Everything a user can get wrong is checked here, before any weights load, so
a bad flag costs milliseconds and says in one line what to change.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import validate
from .backend import Backend, Inputs
from .errors import InvalidRequestError, UnknownNameError

log = logging.getLogger(__name__)

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


def parse_device(device: str | torch.device | None) -> torch.device:
    """The torch device to run on, refused in one line when this machine does not have it."""
    if device is None:
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidRequestError(f"unknown device {str(device)!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise InvalidRequestError(f"device {str(device)!r} asked for, but {why}; use --device cpu "
                                      "(or omit --device to use what is there)")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise InvalidRequestError(f"device {str(device)!r} does not exist; this machine has {count} GPU(s), "
                                      f"cuda:0 to cuda:{count - 1}")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise InvalidRequestError(f"device {str(device)!r} (Apple GPU) is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise InvalidRequestError(f"device type {dev.type!r} is not supported; use cpu, cuda or cuda:N")
    return dev


def _available_bytes(device: torch.device) -> int | None:
    """Memory a run can still take on ``device`` (RAM for the CPU), or None when unknown."""
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def check_fits(backend: Backend, req: Request, device: torch.device | str, *, videos: int = 1) -> None:
    """Refuse, before any allocation, a video whose unavoidable tensors alone exceed the free memory.

    The bound counts only what every backend must hold: the decoded frames in
    float32 (before they become uint8) and the latent with a few sampler
    states. Real peaks are higher, so passing proves little; failing proves
    the run cannot finish, which is what a typo such as ``--frames 100000`` needs.
    """
    dev = torch.device(device)
    frames_bytes = req.frames * req.width * req.height * 3 * 4
    try:
        latent = math.prod(backend.latent_shape(req)) * 4 * 4
    except Exception:  # noqa: BLE001 - a backend that cannot say still gets the frames bound
        latent = 0
    need = frames_bytes + latent * videos  # a batch holds every latent; frames are decoded one video at a time
    free = _available_bytes(dev)
    if free is not None and need > free:
        what = f"a {req.width}x{req.height} video of {req.frames} frames" if videos == 1 else (
            f"a batch of {videos} {req.width}x{req.height} videos of {req.frames} frames")
        raise InvalidRequestError(
            f"{what} needs at least {need / 2**30:.1f} GiB on {dev.type} for its frames alone, and "
            f"{free / 2**30:.1f} GiB is free; ask for fewer --frames or a smaller --size"
            + (" or batch fewer videos" if videos > 1 else ""))


def parse_size(text: str | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    """``"832x480"`` (or a ``(width, height)`` pair) as a pair of ints."""
    if text is None:
        return None
    if isinstance(text, (tuple, list)):
        if len(text) != 2:
            raise InvalidRequestError(f"size {text!r} is not (width, height)")
        return validate.integer("width", text[0]), validate.integer("height", text[1])
    if not isinstance(text, str):
        raise InvalidRequestError(f"size {text!r} is not WIDTHxHEIGHT; e.g. --size 832x480")
    parts = text.strip().lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise InvalidRequestError(f"size {text!r} is not WIDTHxHEIGHT; e.g. --size 832x480")
    return int(parts[0]), int(parts[1])


#: ceilings no backend raises: beyond them a run is a typo, not a video (backends set tighter ones)
MAX_STEPS = 1000
MAX_FRAMES = 10_000
MAX_SIDE = 16_384
MAX_FPS = 240.0
MAX_GUIDANCE = 100.0
MAX_PROMPT_CHARS = 20_000


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
    #: the generation preset the settings came from (for the record; the settings above are already resolved)
    preset: str | None = None
    #: the step cache, ``{"kind": "teacache" | "first-block", "threshold": x}`` (`vidcore.cache_spec`), or None
    cache: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "run record") -> Request:
        """Rebuild a request from a record's ``request``; `check_request` still has to pass on it."""
        if not isinstance(data, Mapping):
            raise InvalidRequestError(f"{source} 'request' must be a JSON object; got {type(data).__name__}")
        fields = dataclasses.fields(cls)
        names = {f.name for f in fields}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InvalidRequestError(f"{source} has unknown request fields {unknown}; was it edited?")
        required = [f.name for f in fields if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]
        missing = [n for n in required if n not in data]
        if missing:
            raise InvalidRequestError(f"{source} lacks request field(s) {', '.join(missing)}; it is damaged or "
                                      "was written by another tool")
        return cls(**data)


def _guidance(backend: Backend, value: Any) -> float | dict[str, float]:
    """One scale, or one per expert (keys: the backend's default per-expert scales)."""
    default = backend.defaults.guidance
    if isinstance(value, Mapping):
        if not isinstance(default, Mapping):
            raise InvalidRequestError(f"backend {backend.name!r} has one denoiser; give guidance as one number")
        unknown = sorted(set(value) - set(default))
        if unknown:
            raise InvalidRequestError(f"guidance names unknown expert(s) {unknown}; "
                                      f"backend {backend.name!r} has {', '.join(default)}")
        merged = {**dict(default), **dict(value)}
        return {k: validate.number(f"guidance[{k!r}]", v, lo=0.0, hi=MAX_GUIDANCE) for k, v in merged.items()}
    return validate.number("guidance", value, lo=0.0, hi=MAX_GUIDANCE)


def check_request(backend: Backend, req: Request) -> Request:
    """Check every field of a request, wherever it came from; normalises types in place and returns it.

    `resolve` ends here, and so do run records, batch lines and hand-built
    `Request`s (the pipeline checks before it runs), so every source meets
    the same rules: types, finite numbers, ranges, names that are registered.
    Sizes and frame counts against the backend's rules are checked by
    `load_inputs` (an input image may still change the size).
    """
    from .plugins import sampler_names
    from .sampling import Scheduler

    if req.backend != backend.name:
        raise InvalidRequestError(f"request is for backend {req.backend!r}, not {backend.name!r}")
    req.prompt = validate.text("prompt", req.prompt, max_chars=MAX_PROMPT_CHARS)
    req.negative = validate.text("negative prompt", req.negative, max_chars=MAX_PROMPT_CHARS)
    if req.task not in backend.tasks:
        raise InvalidRequestError(
            f"backend {backend.name!r} cannot do task {req.task!r}; it does {', '.join(backend.tasks)}")
    req.image = validate.optional_text("image path", req.image, max_chars=4096)
    req.video = validate.optional_text("video path", req.video, max_chars=4096)
    if req.image is not None and req.task not in ("i2v", "ti2v"):
        raise InvalidRequestError(f"--image is for image-to-video; backend {backend.name!r} task {req.task!r} "
                                  "takes none")
    if req.video is not None and req.task != "predict":
        raise InvalidRequestError(f"--video is for prediction; backend {backend.name!r} task {req.task!r} takes none")
    if req.task == "i2v" and req.image is None:
        raise InvalidRequestError(f"backend {backend.name!r} task i2v needs an input image; pass --image PATH")
    if req.task == "predict" and req.video is None:
        raise InvalidRequestError("task predict needs the past frames; pass --video CLIP.mp4")
    # the backend's own size and frame rules are applied by load_inputs (an input image may resize)
    req.width = validate.integer("width", req.width, lo=1, hi=MAX_SIDE)
    req.height = validate.integer("height", req.height, lo=1, hi=MAX_SIDE)
    req.frames = validate.integer("frames", req.frames, lo=1, hi=MAX_FRAMES)
    req.fps = validate.number("fps", req.fps, lo=0.0, lo_open=True, hi=MAX_FPS)
    req.steps = validate.integer("steps", req.steps, lo=1, hi=backend.max_steps)
    req.seed = validate.integer("seed", req.seed, lo=0, hi=2**63 - 1)
    req.guidance = _guidance(backend, req.guidance)
    if isinstance(req.schedule_options, Mapping) and "shift" in req.schedule_options:
        req.schedule_options = {**req.schedule_options, "shift": validate.number(
            "shift", req.schedule_options["shift"], lo=0.0, lo_open=True, hi=100.0)}
    req.sampler_options = validate.options("sampler options", req.sampler_options)
    req.schedule_options = validate.options("schedule options", req.schedule_options)
    req.guidance_options = validate.options("guidance options", req.guidance_options)
    if not isinstance(req.sampler, str) or req.sampler not in sampler_names():
        raise UnknownNameError("sampler", str(req.sampler), sampler_names())
    from .sampling import Sampler

    Sampler.validate(req.sampler, req.sampler_options)
    from .cache_spec import check_cache_spec

    req.cache = check_cache_spec(req.cache)
    req.preset = validate.optional_text("preset", req.preset, max_chars=200)
    if not isinstance(req.schedule, str):
        raise InvalidRequestError(f"schedule must be a name; got {req.schedule!r}")
    schedule = Scheduler(req.schedule, **req.schedule_options)(req.steps)  # bad names and options fail here
    _check_guidance_options(req)
    _dry_run_sampler(req, schedule)
    return req


def _check_guidance_options(req: Request) -> None:
    import inspect

    from .guidance import Guidance

    opts = {k: v for k, v in req.guidance_options.items() if k != "batched"}
    accepted = [p for p in inspect.signature(Guidance).parameters if p not in ("scale", "batched")]
    bad = sorted(set(opts) - set(accepted))
    if bad:
        raise InvalidRequestError(f"unknown guidance option(s) {bad}; accepted: {', '.join(accepted)}")
    Guidance(scale=req.guidance, **opts)


def _dry_run_sampler(req: Request, schedule: Any) -> None:
    """Run the sampler on a one-number state so a sampler that cannot take this schedule says so now.

    Samplers check their schedule and options when they start (flow_euler needs a
    flow schedule, DDPM its own); a state of one element makes that cost microseconds
    instead of a model load. Anything but a `VidcoreError` is left for the real run.
    """
    from .errors import VidcoreError
    from .sampling import Sampler

    def zero_model(x: torch.Tensor, sigma: Any, **_: Any) -> torch.Tensor:
        return torch.zeros_like(x)

    try:
        Sampler.get(req.sampler)(zero_model, torch.zeros(1, 1, 1, 1, 1), schedule,
                                 generator=torch.Generator("cpu").manual_seed(0), **req.sampler_options)
    except VidcoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - the real run reports it with the real tensors
        log.debug("sampler dry run of %s raised %s; left to the real run", req.sampler, exc)


def check_schedule_fits_model(backend: Backend, req: Request) -> None:
    """Refuse a schedule the backend's networks cannot be sampled on (a flow network on a vp schedule).

    The backend's own schedule always fits, so only a changed one is checked;
    the check builds the components on ``meta`` (no memory, no weights) to ask
    which prediction each expert makes.
    """
    from .errors import VidcoreError
    from .sampling import Scheduler, wrap_network

    if req.schedule == backend.defaults.schedule:
        return
    schedule = Scheduler(req.schedule, **req.schedule_options)(req.steps)
    try:
        experts = backend.experts(backend.build("meta"), req)
    except VidcoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - the real run reports it with the loaded model
        log.debug("could not ask %s for its experts on meta (%s); left to the real run", backend.name, exc)
        return
    for expert in experts:
        wrap_network(expert.network, expert.prediction, schedule)


def resolve(backend: Backend, prompt: str = "", *, task: str | None = None, negative: str | None = None,
            image: str | Path | None = None, video: str | Path | None = None,
            size: str | tuple[int, int] | None = None, frames: int | None = None, fps: float | None = None,
            steps: int | None = None, sampler: str | None = None, schedule: str | None = None,
            shift: float | None = None, guidance: float | Mapping[str, float] | None = None,
            seed: int | None = None, sampler_options: Mapping[str, Any] | None = None,
            schedule_options: Mapping[str, Any] | None = None,
            guidance_options: Mapping[str, Any] | None = None, preset: str | None = None,
            cache: str | Mapping[str, Any] | None = None) -> Request:
    """Fill unset settings from the backend's official defaults and validate the result.

    ``preset`` (a `vidcore.presets.GenerationPreset` name registered for this backend) fills unset
    settings first; ``cache`` is a step-cache spec such as ``"teacache:0.2"`` (`vidcore.cache_spec`).
    """
    d = backend.defaults
    if preset is not None:
        from .presets import with_preset

        s = with_preset(backend, preset, {
            "negative": negative, "size": size, "frames": frames, "fps": fps, "steps": steps, "sampler": sampler,
            "schedule": schedule, "shift": shift, "guidance": guidance, "sampler_options": sampler_options,
            "schedule_options": schedule_options, "guidance_options": guidance_options, "cache": cache})
        negative, size, frames, fps, steps = s["negative"], s["size"], s["frames"], s["fps"], s["steps"]
        sampler, schedule, shift, guidance, cache = s["sampler"], s["schedule"], s["shift"], s["guidance"], s["cache"]
        sampler_options, schedule_options = s["sampler_options"], s["schedule_options"]
        guidance_options = s["guidance_options"]
    if task is None:
        task = "predict" if video is not None and "predict" in backend.tasks else (
            "i2v" if image is not None and "i2v" in backend.tasks else
            "ti2v" if image is not None and "ti2v" in backend.tasks else backend.tasks[0])
    w, h = parse_size(size) or d.size
    sampler = sampler or d.sampler
    if sampler_options is not None and not isinstance(sampler_options, Mapping):
        raise InvalidRequestError(f"sampler options must be a mapping; got {sampler_options!r}")
    if schedule_options is not None and not isinstance(schedule_options, Mapping):
        raise InvalidRequestError(f"schedule options must be a mapping; got {schedule_options!r}")
    if guidance_options is not None and not isinstance(guidance_options, Mapping):
        raise InvalidRequestError(f"guidance options must be a mapping; got {guidance_options!r}")
    # the official sampler options belong to the official sampler; another sampler starts from none
    sampler_opts = {**(dict(d.sampler_options) if sampler == d.sampler else {}), **(sampler_options or {})}
    schedule = schedule or d.schedule
    # like the sampler's, the backend's schedule options belong to its own schedule
    sched_opts = dict(d.schedule_options) if schedule == d.schedule else {}
    sched_opts.update(schedule_options or {})
    if shift is not None:
        sched_opts["shift"] = shift
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    req = Request(
        backend=backend.name, prompt=prompt, task=task, negative=d.negative if negative is None else negative,
        width=w, height=h, frames=d.frames if frames is None else frames, fps=d.fps if fps is None else fps,
        steps=d.steps if steps is None else steps, sampler=sampler, schedule=schedule, seed=seed,
        guidance=d.guidance if guidance is None else guidance, schedule_options=sched_opts,
        sampler_options=sampler_opts, guidance_options={**d.guidance_options, **(guidance_options or {})},
        image=str(image) if image is not None else None, video=str(video) if video is not None else None,
        preset=preset, cache=cache,  # type: ignore[arg-type]  # check_request normalises the cache spec
    )
    from .habits import warn_true_cfg_on_distilled

    warn_true_cfg_on_distilled(backend, req.guidance)
    return check_request(backend, req)


def load_inputs(backend: Backend, req: Request) -> Inputs:
    """Read the request's media (cheap), let the backend adjust the size, then check size and frames."""
    return check_inputs(backend, req, read_inputs(req))


def read_inputs(req: Request) -> Inputs:
    """The request's image and video files, decoded (one line if missing, unreadable or given in memory)."""
    from .media import is_in_memory
    from .video import read_image, read_video

    inputs = Inputs()
    for field_name, flag in (("image", "image"), ("video", "video")):
        given = getattr(req, field_name)
        if is_in_memory(given):
            raise InvalidRequestError(f"the {field_name} of this request was given in memory ({given}); pass it "
                                      f"again (pipe(..., {flag}=...)) or a file path")
    if req.image is not None:
        inputs.image = read_image(req.image)
    if req.video is not None:
        inputs.video, _ = read_video(req.video)
    return inputs


def check_inputs(backend: Backend, req: Request, inputs: Inputs, *, adjust: bool = True) -> Inputs:
    """With ``adjust``, let the backend adjust the size to the inputs (e.g. an image's aspect ratio; do it
    once per request); then check size, frames and the backend's own rules."""
    resized = backend.resolve_size(req, inputs) if adjust else None
    if resized is not None:
        req.width, req.height = resized
    backend.sizes.check(req.width, req.height)
    backend.frames.check(req.frames)
    backend.validate(req, inputs)
    return inputs
