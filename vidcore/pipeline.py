"""The one loop shared by every backend: encode, denoise, decode.

validate requests -> load inputs -> encode conditions -> initial noise ->
denoise (`vidcore.denoise`: experts, guidance, sampler) -> decode -> videos.
Backends describe their components; memory policies decide where weights
live; this loop never knows which model family it runs. One video or several
of the same shape go through the same code: a batch stacks the noise and the
conditions, keeps each video's generators, and returns one video (and one run
record) per request.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from . import conditions as batching
from .backend import Backend, Components, Conditions, Inputs
from .denoise import denoise
from .errors import InvalidRequestError
from .habits import translate as translate_diffusers
from .memory import MemoryPolicy, get_policy
from .plugins import backend_plugin, get_backend
from .preview import preview_of
from .request import (
    Request,
    check_fits,
    check_inputs,
    check_request,
    dtype_name,
    load_inputs,
    parse_device,
    parse_dtype,
    read_inputs,
    resolve,
)
from .seeds import initial_noise, sampler_generators
from .video import Video

log = logging.getLogger(__name__)
StepCallback = Callable[[dict[str, Any]], None]
#: request fields that may differ between the videos of one batch; every other field is the batch's shape
PER_VIDEO = ("prompt", "negative", "seed", "image", "video")


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


class Pipeline:
    """A backend with its components loaded under a memory policy; call it to make a video (or several)."""

    def __init__(self, backend: Backend, components: Components, policy: MemoryPolicy, device: torch.device,
                 *, dtype: torch.dtype | None = None, ckpt_dir: Path | None = None,
                 checkpoint: dict[str, Any] | None = None, memory_name: str = "resident", parallel: Any = None):
        self.backend, self.components, self.policy = backend, components, policy
        self.device, self.dtype, self.ckpt_dir = device, dtype, ckpt_dir
        self.checkpoint = checkpoint
        self.memory_name = memory_name
        #: a vidcore.distributed.Parallel when one video spans several ranks (given to `load`)
        self.parallel = parallel
        self.loras: list[dict[str, Any]] = []

    # -- public API -------------------------------------------------------------------------
    def __call__(self, prompt: str | Sequence[str] = "", *, callback: StepCallback | None = None,
                 progress: bool | None = None, **settings: Any) -> Video | list[Video]:
        """Generate a video; settings are those of `vidcore.request.resolve` (size, frames, steps, ...), and
        diffusers' names where they mean the same (`vidcore.habits`).

        ``image=``/``video=`` take a path, a PIL image, a numpy array or a tensor (a video also a list of
        frames). A list of prompts, or of seeds or negative prompts, makes one video per entry in one
        batched run and returns a list; a single value there applies to every video (in a batched call a
        list given as ``image``/``video`` is one per video).
        """
        from . import media

        settings = translate_diffusers(self.backend, settings)
        accepted = _setting_names()
        unknown = sorted(set(settings) - set(accepted))
        if unknown:
            raise InvalidRequestError(f"unknown setting(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}")
        everything = {"prompt": prompt, **settings}
        lists = {k for k in ("prompt", "negative", "seed") if isinstance(everything.get(k), (list, tuple))}
        batched = bool(lists)
        if batched:
            lists |= {k for k in ("image", "video") if isinstance(everything.get(k), (list, tuple))}
        counts = {k: len(everything[k]) for k in lists}
        n = next(iter(counts.values())) if counts else 1
        if any(c != n for c in counts.values()) or n == 0:
            raise InvalidRequestError(f"batched settings must list one value per video, the same number each; "
                                      f"got {', '.join(f'{k}: {c}' for k, c in counts.items())}")
        reqs, ins = [], []
        for i in range(n):
            one = {k: (v[i] if k in lists else v) for k, v in everything.items()}
            pixels = {}
            for kind, convert in (("image", media.as_image), ("video", media.as_video)):
                value = one.get(kind)
                if value is not None and not media.is_path(value):
                    pixels[kind] = convert(value)
                    one[kind] = media.label(pixels[kind], kind)
            req = resolve(self.backend, one.pop("prompt"), **one)
            inputs = read_inputs(_without(req, pixels))  # files only; in-memory media have none
            inputs.image = pixels.get("image", inputs.image)
            inputs.video = pixels.get("video", inputs.video)
            ins.append(check_inputs(self.backend, req, inputs))
            reqs.append(req)
        videos = self.run_many(reqs, ins, callback=callback, progress=progress)
        return videos if batched else videos[0]

    def run(self, req: Request, inputs: Inputs | None = None, *, callback: StepCallback | None = None,
            progress: bool | None = None) -> Video:
        """One video for a resolved request (a run record's, a batch line's, or `resolve`'s)."""
        return self.run_many([req], None if inputs is None else [inputs], callback=callback, progress=progress)[0]

    def run_many(self, requests: Sequence[Request], inputs: Sequence[Inputs] | None = None, *,
                 callback: StepCallback | None = None, progress: bool | None = None) -> list[Video]:
        """Videos of one shape (they differ only in `PER_VIDEO` fields) denoised as one batch.

        Each keeps its own noise and sampler generators, so each equals its run alone up to the
        rounding of batched matmuls. Conditions that cannot stack (e.g. different text lengths)
        make the videos run one after another instead.
        """
        reqs = list(requests)
        if not reqs:
            return []
        for req in reqs:  # a hand-built or replayed request meets the rules resolve applies
            check_request(self.backend, req)
        if inputs is None:
            ins = [load_inputs(self.backend, r) for r in reqs]
        else:  # already read (and the size already adjusted to them): check what the backend needs
            ins = list(inputs)
            if len(ins) != len(reqs):
                raise InvalidRequestError(f"got {len(ins)} inputs for {len(reqs)} requests; give one per request")
            for req, i in zip(reqs, ins):
                check_inputs(self.backend, req, i, adjust=False)
        _check_one_shape(reqs)
        check_fits(self.backend, reqs[0], self.device, videos=len(reqs))
        t_start = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        timings: dict[str, float] = {}
        conds = self._encode(reqs, ins, timings)
        try:
            stacked = batching.stack(conds)
        except batching.NotStackable as why:
            log.info("running %d videos one by one: %s", len(reqs), why)
            return [v for r, i in zip(reqs, ins) for v in self.run_many([r], [i], callback=callback,
                                                                      progress=progress)]
        latents = self._denoise(reqs, conds, stacked, timings, callback, progress)
        frames = self._decode(reqs, conds, latents, timings)
        wall = time.perf_counter() - t_start
        return [Video(f[0].cpu(), r.fps, self._record(r, wall, timings, index=i, size=len(reqs)))
                for i, (r, f) in enumerate(zip(reqs, frames))]

    # -- the three stages -------------------------------------------------------------------
    def _encode(self, reqs: list[Request], ins: list[Inputs], timings: dict[str, float]) -> list[Conditions]:
        """Each video's conditions, on the run's device; the encoders are in use once for the batch."""
        t0 = time.perf_counter()
        names = self.backend.encode_components(reqs[0])
        out = []
        with contextlib.ExitStack() as stack, torch.no_grad():
            for name in names:
                stack.enter_context(self.policy.use(name))
            device = self.policy.input_device(names[0]) if names else self.device
            for req, inputs in zip(reqs, ins):
                c = self.backend.encode(self.components, req, inputs, device)
                uncond = batching.to_device(c.uncond, self.device) if c.uncond is not None else None
                out.append(Conditions(batching.to_device(c.cond, self.device), uncond, c.state))
        timings["encode"] = time.perf_counter() - t0
        return out

    def _denoise(self, reqs: list[Request], conds: list[Conditions], stacked: Conditions,
                 timings: dict[str, float], callback: StepCallback | None, progress: bool | None) -> torch.Tensor:
        noise = torch.cat([initial_noise(self.backend, r, self.device, c) for r, c in zip(reqs, conds)])
        bar = _progress_bar(reqs[0].steps, progress, self.backend.name)
        step_times: list[float] = []
        last = [time.perf_counter()]

        def on_step(info: dict[str, Any]) -> None:
            now = time.perf_counter()
            step_times.append(now - last[0])
            last[0] = now
            if bar is not None:
                bar.update(1)
            if callback is not None:
                info.setdefault("preview", preview_of(info, self.backend.latent_rgb))
                callback(info)

        t0 = time.perf_counter()
        try:
            latents = denoise(self.backend, self.components, self.policy, reqs[0], stacked, noise,
                              generator=sampler_generators(reqs), on_step=on_step, parallel=self.parallel)
        finally:
            if bar is not None:
                bar.close()
        timings["sample"] = time.perf_counter() - t0
        if step_times:
            timings["step_mean"] = sum(step_times) / len(step_times)
        return latents

    def _decode(self, reqs: list[Request], conds: list[Conditions], latents: torch.Tensor,
                timings: dict[str, float]) -> list[torch.Tensor]:
        """Frames of each video, decoded one at a time (a VAE's peak grows with the batch)."""
        t0 = time.perf_counter()
        split = self.parallel.decoding() if self.parallel is not None else contextlib.nullcontext()
        out = []
        with contextlib.ExitStack() as stack, torch.no_grad(), split:
            for name in self.backend.decode_components(reqs[0]):
                stack.enter_context(self.policy.use(name))
            for i, (req, c) in enumerate(zip(reqs, conds)):
                frames = self.backend.decode(self.components, latents[i:i + 1], req, conditions=c)
                if frames.dtype != torch.uint8 or frames.ndim != 5 or frames.shape[0] != 1 or frames.shape[-1] != 3:
                    raise RuntimeError(f"backend {self.backend.name!r} decode returned {frames.dtype} "
                                       f"{tuple(frames.shape)}, expected uint8 (1, T, H, W, 3)")
                out.append(frames)
        timings["decode"] = time.perf_counter() - t0
        return out

    def load_lora(self, path: str | Path, *, scale: float = 1.0, components: list[str] | None = None,
                  mode: str = "hook") -> None:
        """Apply a LoRA file (any layout of `vidcore.lora.formats`) to the denoisers, or to ``components``
        (e.g. ``["high_noise"]``), on the fly or merged; its record entry (keys matched per component)
        is appended to ``self.loras``."""
        from .lora import LoraSpec, load_into

        load_into(self, LoraSpec(str(path), scale, tuple(components) if components else None, mode))

    def close(self) -> None:
        """Release what the memory policy holds (hooks, device copies of streamed blocks)."""
        self.policy.teardown()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers ----------------------------------------------------------------------------
    def _record(self, req: Request, wall: float, timings: dict[str, float], *, index: int = 0,
                size: int = 1) -> dict[str, Any]:
        from .records import make_record

        try:
            plugin = backend_plugin(self.backend.name)
        except Exception:
            plugin = None
        ckpt = dict(self.checkpoint or {})
        if self.ckpt_dir is not None:
            ckpt.setdefault("dir", str(self.ckpt_dir))
        rec = make_record(request=req.to_dict(), plugin=plugin, memory=dict(self.policy.describe(),
                          preset=self.memory_name), dtype=dtype_name(self.dtype), device=self.device,
                          checkpoint=ckpt or None, wall_time_s=wall, timings=dict(timings))
        rec["loras"] = list(self.loras)
        if size > 1:  # the same video alone differs only by batched-matmul rounding
            rec["batch"] = {"size": size, "index": index}
        if self.parallel is not None:
            layout = self.parallel.layout
            rec["parallel"] = {"world": layout.world, "cfg": layout.cfg, "ulysses": layout.ulysses,
                               "ring": layout.ring}
        return rec


def _without(req: Request, fields: Mapping[str, Any]) -> Request:
    """A copy of ``req`` without the media given in memory (those have no file to read)."""
    return dataclasses.replace(req, **{k: None for k in fields})


def _setting_names() -> list[str]:
    import inspect

    return [p for p in inspect.signature(resolve).parameters if p not in ("backend", "prompt")]


def _check_one_shape(reqs: list[Request]) -> None:
    """Videos of one batch share every setting but the per-video ones (one line naming the first other)."""
    first = reqs[0]
    for i, req in enumerate(reqs[1:], start=1):
        for f in dataclasses.fields(first):
            if f.name not in PER_VIDEO and getattr(req, f.name) != getattr(first, f.name):
                raise InvalidRequestError(
                    f"videos of one batch must share {f.name}; video {i} has {getattr(req, f.name)!r}, video 0 "
                    f"{getattr(first, f.name)!r}: run them in separate batches")


def _in_notebook() -> bool:
    return "ipykernel" in sys.modules


def _progress_bar(total: int, progress: bool | None, desc: str):
    """A bar on a terminal or in a notebook (tqdm.auto picks the widget there); none when piped."""
    if progress is False or (progress is None and not (sys.stderr.isatty() or _in_notebook())):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True)


def load(backend: str | Backend, ckpt: str | Path | None = None, *, memory: str | MemoryPolicy = "resident",
         dtype: str | torch.dtype | None = None, device: str | torch.device | None = None,
         verify: bool = True, parallel: Any = None) -> Pipeline:
    """Load a backend's weights under a memory policy and return a ready `Pipeline`.

    ``ckpt`` is a checkpoint folder; without it, backends that ship their
    weights (the embedded demo) load them, and others look in the Hugging Face
    cache (`vidcore download` fills it). ``parallel`` (a `vidcore.distributed.Parallel`, from
    torchrun) spreads each video over the ranks: it is installed on the components here.
    """
    if not isinstance(backend, (str, Backend)):
        raise InvalidRequestError(f"backend must be a backend name or a vidcore.Backend; got {backend!r}")
    if not isinstance(memory, (str, MemoryPolicy)):
        raise InvalidRequestError(f"memory must be a preset name (e.g. 'low-vram') or a MemoryPolicy; got {memory!r}")
    if ckpt is not None and not isinstance(ckpt, (str, Path)):
        raise InvalidRequestError(f"ckpt must be a checkpoint folder path; got {ckpt!r}")
    b = get_backend(backend) if isinstance(backend, str) else backend
    wdtype = parse_dtype(dtype)
    dev = parse_device(device)
    policy = get_policy(memory, wdtype)
    memory_name = memory if isinstance(memory, str) else getattr(memory, "name", "custom")
    ckpt_dir: Path | None = None
    checkpoint: dict[str, Any] | None = None
    if b.layout is not None:
        from .checkpoints import fingerprint
        from .hub import resolve_checkpoint
        from .manifest import verify as verify_dir

        ckpt_dir = resolve_checkpoint(b, ckpt)
        if verify:
            verify_dir(b, ckpt_dir).raise_if_bad()
        checkpoint = {"dir": str(ckpt_dir), "fingerprint": fingerprint(b.layout, ckpt_dir, name=b.name)}
    elif ckpt is not None:
        ckpt_dir = Path(ckpt)
        if not ckpt_dir.exists():
            raise InvalidRequestError(f"checkpoint folder {str(ckpt_dir)!r} does not exist")
    t0 = time.perf_counter()
    b = b.for_checkpoint(ckpt_dir)  # a backend whose files say what the model is binds a copy; never the registered one
    components = b.load(ckpt_dir, policy.placement(dev, b.default_dtype if wdtype is None else wdtype))
    policy.setup(components, dev)  # the policy also turns on the VAE switches it wants
    for module in components.values():
        module.eval().requires_grad_(False)
    if parallel is not None:
        parallel.prepare(components)
    log.info("loaded %s in %.1f s (memory=%s, dtype=%s, device=%s)", b.name, time.perf_counter() - t0,
             memory_name, dtype_name(wdtype), dev)
    return Pipeline(b, components, policy, dev, dtype=wdtype, ckpt_dir=ckpt_dir, checkpoint=checkpoint,
                    memory_name=memory_name, parallel=parallel)
