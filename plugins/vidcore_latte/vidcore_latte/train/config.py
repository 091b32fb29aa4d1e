"""A training run as data: `TrainConfig` (YAML-friendly) around the model's `ModelConfig`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ..data.shapes import radius_range
from ..system import ModelConfig
from .objectives import check_blur

AMP_MODES = ("none", "bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: str = "denoiser"  # "denoiser" (DiT or U-Net) or "vae"
    data: str = "shapes"  # "shapes" (procedural) or a YAML split file
    data_seed: int = 0
    shape_radius: tuple[float, float] | None = None  # procedural shapes: half-extent range (None: data.shapes.RADIUS)
    seed: int = 0
    steps: int = 1000
    batch: int = 16  # global batch per optimizer step (all ranks, all accumulation micro-batches)
    grad_accum: int = 1
    lr: float = 5e-4
    min_lr_ratio: float = 0.1
    lr_schedule: str = "constant"  # or "cosine"
    warmup: int = 100
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    cond_dropout: float = 0.1  # probability of the null condition (classifier-free guidance)
    predict_prob: float = 0.0  # probability that a clip is trained as prediction (given past frames)
    max_context_frames: int = 8  # past frames given for prediction, drawn from 1..this (denoiser frames)
    amp: str = "none"
    time_shift: float = 1.0  # flow: training times drawn logit-normal, then shifted towards noise
    logit_mean: float = 0.0
    logit_std: float = 1.0
    blur_prob: float = 0.0  # probability that the signal under the noise is blurred (train/objectives.py)
    blur_sigma: tuple[float, float] = (1.0, 4.0)  # its Gaussian sigma range, pixels (latent cells for a VAE)
    kl_weight: float = 1e-6  # VAE only
    vae_model: str | None = None  # trained VAE file for latent denoisers (its weights are frozen)
    latent_cache: str | None = None  # file of precomputed VAE latents (made on first use)
    cache_size: int = 1024  # clips in the latent cache
    init: str | None = None  # start from these trained weights (.safetensors; fine-tuning); a resume wins
    train_only: tuple[str, ...] | None = None  # parameter-name prefixes to train (e.g. denoiser.refiner); rest frozen
    out: str = "runs/latte"
    save_every: int = 200
    keep: int = 2
    log_every: int = 10
    sample_every: int = 0  # write validation clips every N steps (0: only at the end)
    sample_prompts: tuple[str, ...] = ("a red circle moving right", "a blue square moving up")
    sample_steps: int = 20
    threads: int = 0  # torch CPU threads (0: leave torch's default)
    device: str = "cpu"

    def __post_init__(self):
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, not {self.amp!r}")
        if self.task not in ("denoiser", "vae"):
            raise ValueError(f"task must be 'denoiser' or 'vae', not {self.task!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', not {self.lr_schedule!r}")
        if self.shape_radius is not None:
            radius_range(self.shape_radius)
        check_blur(self.blur_prob, self.blur_sigma)
        if self.train_only is not None and (isinstance(self.train_only, str) or not self.train_only):
            raise ValueError(f"train_only {self.train_only!r} must be a non-empty list of parameter-name prefixes, "
                             "e.g. [denoiser.refiner]")
        if self.batch % self.grad_accum:
            raise ValueError(f"batch {self.batch} is not divisible by grad_accum {self.grad_accum}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown training settings {sorted(unknown)}; known: {sorted(known)}")
        data = dict(data)
        for f in fields(cls):
            if f.type in ("float", "int") and isinstance(data.get(f.name), str):
                data[f.name] = _number(f.name, data[f.name], float if f.type == "float" else int)
        if isinstance(data.get("model"), dict):
            data["model"] = ModelConfig(**data["model"])
        for key in ("betas", "sample_prompts", "shape_radius", "train_only", "blur_sigma"):
            if key in data:
                data[key] = tuple(data[key]) if data[key] is not None else None
        return cls(**data)

    def with_(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)


def _number(name: str, text: str, kind: type) -> float | int:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; accept it as the number it plainly is."""
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {text!r}") from None
