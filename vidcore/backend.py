"""The contract a model plugin implements: one `Backend` object per model variant.

A backend is mostly data (defaults from the official release, the sizes and
frame counts it accepts, where its weights live) plus a handful of methods
that build its components and translate between the generic denoising loop
(`vidcore.pipeline`) and its own modules. It never writes its own loop.

Components are named ``nn.Module``s; the conventional names are
``text_encoder``, ``text_encoder_2``, ``image_encoder``, ``denoiser`` (or one
name per expert, e.g. ``high_noise``/``low_noise``) and ``vae``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoints import CheckpointLayout, Placement, component_files, load_components
from .errors import CheckpointError, InvalidRequestError

TASKS = ("t2v", "i2v", "ti2v", "predict")
Components = dict[str, nn.Module]


@dataclass(frozen=True)
class Defaults:
    """Generation settings of the official release (cite the source in the plugin's docs)."""

    size: tuple[int, int]  # (width, height)
    frames: int
    fps: int
    steps: int
    sampler: str
    schedule: str
    guidance: float | Mapping[str, float]
    negative: str = ""
    schedule_options: Mapping[str, Any] = field(default_factory=dict)
    sampler_options: Mapping[str, Any] = field(default_factory=dict)
    guidance_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sizes:
    """The (width, height) pairs a backend accepts: an explicit list, or any multiple within bounds."""

    allowed: tuple[tuple[int, int], ...] = ()
    multiple: int = 16
    min_side: int = 16
    max_side: int = 4096
    max_area: int | None = None

    def check(self, width: int, height: int) -> None:
        if self.allowed:
            if (width, height) not in self.allowed:
                raise InvalidRequestError(f"size {width}x{height} is not supported; use one of: {self.describe()}")
            return
        bad = (
            width % self.multiple or height % self.multiple
            or min(width, height) < self.min_side or max(width, height) > self.max_side
            or (self.max_area is not None and width * height > self.max_area)
        )
        if bad:
            raise InvalidRequestError(f"size {width}x{height} is not supported; use {self.describe()}")

    def describe(self) -> str:
        if self.allowed:
            return ", ".join(f"{w}x{h}" for w, h in self.allowed)
        text = f"width and height multiples of {self.multiple} between {self.min_side} and {self.max_side}"
        return text + (f" with at most {self.max_area} pixels" if self.max_area else "")


@dataclass(frozen=True)
class Frames:
    """Frame counts of the form ``step * n + offset`` (e.g. 4n+1 for a 4x temporal VAE) within bounds."""

    step: int = 4
    offset: int = 1
    min: int = 1
    max: int | None = None

    def check(self, frames: int) -> None:
        ok = frames >= self.min and (frames - self.offset) % self.step == 0
        ok = ok and (self.max is None or frames <= self.max)
        if not ok:
            raise InvalidRequestError(f"frame count {frames} is not supported; use {self.describe()}")

    def describe(self) -> str:
        form = f"{self.step}n+{self.offset}" if self.step > 1 else "any count"
        upper = f" up to {self.max}" if self.max else ""
        return f"{form} frames, at least {self.min}{upper}"

    def nearest(self, frames: int) -> int:
        n = max(0, math.floor((frames - self.offset) / self.step + 0.5))
        return max(self.min, n * self.step + self.offset)


@dataclass
class Conditions:
    """What `Backend.encode` produced for one run.

    ``cond``/``uncond`` are the denoiser's keyword arguments (``uncond`` for CFG); ``state``
    holds per-run values the backend keeps for itself (e.g. an image latent that pins frame
    0), handed back to its ``initial_noise`` and ``decode`` — never stored on the request.
    """

    cond: dict[str, Any]
    uncond: dict[str, Any] | None = None
    state: dict[str, Any] = field(default_factory=dict)


@dataclass
class Expert:
    """One denoiser of a (possibly single-expert) model.

    ``network(x, timestep, **cond)`` returns the raw prediction of kind
    ``prediction`` ("eps", "v", "x0" or "flow"); the expert runs for noise
    levels ``sigma >= boundary`` (experts are listed from high noise to low;
    the last one's boundary is 0).
    """

    name: str
    component: str
    network: Callable[..., torch.Tensor]
    prediction: str
    boundary: float = 0.0


@dataclass
class Inputs:
    """Media loaded for a request before any heavy work: uint8 tensors, channels last."""

    image: torch.Tensor | None = None  # (H, W, 3)
    video: torch.Tensor | None = None  # (T, H, W, 3)


class Backend:
    """Base class of a model family; instances (one per variant) are registered by plugins.

    Subclasses set the class attributes (or pass them to ``__init__``) and
    implement ``build``, ``encode``, ``latent_shape``, ``experts`` and ``decode``.
    Everything the pipeline asks of a backend is a method or attribute declared here.
    """

    name: str = ""
    description: str = ""
    tasks: tuple[str, ...] = ("t2v",)
    defaults: Defaults
    sizes: Sizes = Sizes()
    frames: Frames = Frames()
    layout: CheckpointLayout | None = None
    components: tuple[str, ...] = ("text_encoder", "denoiser", "vae")
    default_dtype: torch.dtype = torch.float32
    #: most sampling steps a request may ask for (1000: the training timesteps of DDPM-style models)
    max_steps: int = 1000
    #: where the initial noise is drawn: "cpu" (the same numbers on every machine) or "run" (the
    #: device the model runs on, as official pipelines that seed a CUDA generator do)
    noise_device: str = "cpu"
    #: the model takes a distilled guidance scale as an input (``guidance_options["embedded"]``); its
    #: ``guidance`` stays true classifier-free guidance (diffusers' names differ: see `vidcore.habits`)
    embedded_guidance: bool = False
    #: (latent channels, 3) colours of the latent channels for cheap step previews (`vidcore.preview`)
    latent_rgb: tuple[tuple[float, float, float], ...] | None = None

    #: folders (relative to the checkpoint folder) that must be there besides the weight files, e.g.
    #: tokenizers; `load` checks them before reading any weights
    required_folders: tuple[str, ...] = ()
    #: the document that says how to prepare a checkpoint folder by hand (e.g. "docs/hunyuan.md"), for
    #: messages; None: `vidcore download NAME --dir DIR` fetches one
    checkpoint_doc: str | None = None

    # -- building and loading ---------------------------------------------------------------
    def build(self, device: torch.device | str = "meta", dtype: torch.dtype | None = None) -> Components:
        """Construct every component with its architecture (random or empty weights) on ``device``."""
        raise NotImplementedError(f"{type(self).__name__} must implement Backend.build")

    def key_map(self, component: str, names: list[str]) -> dict[str, str]:
        """Map checkpoint tensor names to module names (identity for the official layout)."""
        return {n: n for n in names}

    def component_dtype(self, component: str, dtype: torch.dtype | None) -> torch.dtype | None:
        """The dtype ``component`` is built and loaded in when a run asks for ``dtype`` (None: as stored).

        Default: as asked. Override for components an official release runs at a fixed precision
        (e.g. a VAE always in float32); `load` applies it to the memory policy's placement.
        """
        return dtype

    def for_checkpoint(self, ckpt: Path | None) -> Backend:
        """The backend that loads and runs checkpoint ``ckpt``: ``self``, unless the files say what the
        model is (a config stored beside the weights), in which case a copy that knows it.

        The registered object never changes; `vidcore.load` keeps the returned backend in the pipeline.
        """
        return self

    def checkpoint_dir(self, ckpt: Path | None) -> Path:
        """The folder the layout's patterns are relative to, for ``ckpt`` as the user gave it (None: not given)."""
        if ckpt is None:
            raise InvalidRequestError(f"backend {self.name!r} needs --ckpt DIR ({_how_to_prepare(self, None)})")
        return Path(ckpt)

    def attach(self, components: Components, ckpt_dir: Path) -> None:
        """Give the loaded components what is not weights (tokenizers, image processors from ``ckpt_dir``).

        Called once, after every component's weights are in place; the default attaches nothing.
        """

    def load(self, ckpt_dir: Path | None, placement: Placement) -> Components:
        """The one loading recipe (backends declare data and hooks; none overrides this).

        `for_checkpoint`, then the folder (`checkpoint_dir`) and its `required_folders` are checked, the
        components are built on ``meta`` and each is materialised by `vidcore.checkpoints` straight into
        ``placement(component)``, its dtype passed through `component_dtype`; then `attach`.
        """
        backend = self.for_checkpoint(ckpt_dir)
        folder = backend.checkpoint_dir(ckpt_dir)
        layout = backend.layout
        if layout is None:
            raise CheckpointError(f"backend {backend.name!r} declares no checkpoint layout, so it loads no files")
        for rel in backend.required_folders:
            if not (folder / rel).is_dir():
                raise CheckpointError(f"checkpoint folder {folder} lacks {rel.rstrip('/')}/; "
                                      f"{_how_to_prepare(backend, folder)}")

        def place(component: str) -> tuple[torch.device, torch.dtype | None]:
            device, dtype = placement(component)
            return device, backend.component_dtype(component, dtype)

        modules = backend.build("meta")
        load_components(layout, modules, folder, place, key_map=backend.key_map, name=backend.name)
        backend.attach(modules, folder)
        return modules

    def checkpoint_files(self, ckpt_dir: Path, component: str) -> list[Path]:
        """The weight files of ``component`` found in ``ckpt_dir`` (resolving shard indexes)."""
        if self.layout is None:
            raise CheckpointError(f"backend {self.name!r} declares no checkpoint layout, so it loads no files")
        return component_files(self.layout, ckpt_dir, component, name=self.name)

    # -- the generic loop's questions -------------------------------------------------------
    def validate(self, request: Any, inputs: Inputs) -> None:
        """Backend-specific checks beyond sizes and frames (raise `InvalidRequestError`)."""

    def resolve_size(self, request: Any, inputs: Inputs) -> tuple[int, int] | None:
        """Override the size from the inputs (e.g. I2V follows the image's aspect ratio)."""
        return None

    def encode(self, components: Components, request: Any, inputs: Inputs, device: torch.device) -> Conditions:
        """Text (and image/video) conditions as denoiser keyword arguments."""
        raise NotImplementedError(f"{type(self).__name__} must implement Backend.encode")

    def latent_shape(self, request: Any) -> tuple[int, ...]:
        """Shape of the initial latent for one sample, e.g. (C, T', H', W')."""
        raise NotImplementedError(f"{type(self).__name__} must implement Backend.latent_shape")

    def encode_components(self, request: Any) -> list[str]:
        """The components `encode` runs, so the memory policy has them ready: the text and image
        encoders, and the VAE when an input image or video is encoded."""
        names = [c for c in self.components if c.startswith(("text_encoder", "image_encoder"))]
        if request.task in ("i2v", "ti2v", "predict") and "vae" in self.components:
            names.append("vae")
        return names

    def decode_components(self, request: Any) -> list[str]:
        """The components `decode` runs (the VAE, when the backend has one)."""
        return [c for c in self.components if c.startswith("vae")]

    def initial_noise(self, request: Any, generator: torch.Generator, *, conditions: Conditions) -> torch.Tensor:
        """The starting noise of one video (batch of one), drawn from ``generator``; override to match an
        official implementation's draw (its dtype, or a mix with an image latent from ``conditions``).

        ``generator`` comes from `vidcore.seeds.noise_generator`: seeded with the request's seed, on the
        device ``noise_device`` names. The result may stay on that device; the pipeline moves it.
        """
        return torch.randn((1, *self.latent_shape(request)), generator=generator, device=generator.device,
                           dtype=torch.float32)

    def experts(self, components: Components, request: Any) -> list[Expert]:
        """The denoiser(s) from high noise to low."""
        raise NotImplementedError(f"{type(self).__name__} must implement Backend.experts")

    def decode(self, components: Components, latents: torch.Tensor, request: Any, *,
               conditions: Conditions) -> torch.Tensor:
        """Latents of one video (batch of one) to frames: uint8 (1, T, H, W, 3); ``conditions`` are what
        `encode` returned for it (its ``state`` included)."""
        raise NotImplementedError(f"{type(self).__name__} must implement Backend.decode")

    # -- LoRA and step caching (optional: the defaults know no model family) -----------------------
    def lora_key_map(self, component: str, names: list[str]) -> dict[str, Any]:
        """Map tensor names of other layouts of ``component`` (e.g. diffusers') to its parameter names,
        for LoRA files trained on those layouts (`vidcore.lora`).

        A value is one of our parameter names, or a list of `vidcore.lora.Rows` when the other
        layout splits one of our tensors (diffusers' separate q, k, v of a fused qkv) or reorders its
        rows. Names the backend does not know are left out; it never raises. Default: `key_map`.
        """
        try:
            return dict(self.key_map(component, list(names)))
        except (KeyError, ValueError):
            out: dict[str, Any] = {}
            for name in names:
                try:
                    out.update(self.key_map(component, [name]))
                except (KeyError, ValueError):
                    continue
            return out

    def step_cache_options(self, component: str, module: nn.Module, kind: str, request: Any) -> dict[str, Any]:
        """Published settings of step cache ``kind`` ("teacache", "first-block") for ``component``: keyword
        arguments of `vidcore.cache.enable_step_cache` (``signal``, ``coefficients``, ``warmup``, ``stacks``)
        plus ``linked=True`` to let the first block stack decide for the others (one skip decision per
        network call, as TeaCache skips the whole model) and ``source`` (where the numbers come from).

        Default: none (the cache compares the first stack's input, unscaled).
        """
        return {}

    # -- benchmarking (optional; `vidcore bench` and bench/gpu use them) ------------------------
    def bench_conditions(self, request: Any, device: torch.device, dtype: torch.dtype) -> Conditions | None:
        """Random conditions shaped as `encode` would return them, without encoders or tokenizers.

        A full-size benchmark then needs no text-encoder weights (gigabytes of them) and no
        tokenizer files; None (the default) means the backend cannot be benchmarked that way.
        """
        return None

    def reference_denoiser(self, component: str, module: Any, device: torch.device,
                           dtype: torch.dtype) -> Callable[..., torch.Tensor] | None:
        """Another implementation of ``component`` (e.g. diffusers') holding ``module``'s weights,
        called like the expert's ``network(x, t, **cond)``; None when there is none installed.

        `vidcore bench --vs diffusers` times it against ours on the same weights and inputs.
        """
        return None

    def weight_sources(self) -> dict[str, Any]:
        """For `vidcore backends --json`: where the weights come from."""
        if self.layout is None:
            return {"repo_id": None, "files": {}}
        return {"repo_id": self.layout.repo_id, "files": {k: list(v) for k, v in self.layout.files.items()}}

    def describe(self) -> dict[str, Any]:
        d = self.defaults
        return {
            "name": self.name,
            "description": self.description,
            "tasks": list(self.tasks),
            "defaults": {
                "size": f"{d.size[0]}x{d.size[1]}", "frames": d.frames, "fps": d.fps, "steps": d.steps,
                "sampler": d.sampler, "schedule": d.schedule, "schedule_options": dict(d.schedule_options),
                "guidance": d.guidance if isinstance(d.guidance, (int, float)) else dict(d.guidance),
                "negative": d.negative, "guidance_options": dict(d.guidance_options),
            },
            "sizes": self.sizes.describe(),
            "frames": self.frames.describe(),
            "components": list(self.components),
            "weights": self.weight_sources(),
        }


def _how_to_prepare(backend: Backend, folder: Path | None) -> str:
    """The fix for a missing or incomplete checkpoint folder, for messages."""
    if backend.checkpoint_doc:
        return f"prepare it as {backend.checkpoint_doc} describes"
    return f"fetch it with `vidcore download {backend.name}" + (f" --dir {folder}`" if folder is not None else "`")
