"""A Latte model as data: its networks' configurations, built into named components.

`ModelConfig` is what a checkpoint records (as JSON in the safetensors
metadata), so a file alone says how to rebuild its model. Components follow
the core's names: ``text_encoder``, ``denoiser`` and, for latent models, ``vae``.
Pixel-space models (``vae: null``) diffuse directly on frames scaled to [-1, 1].
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .models.dit import LatteConfig, LatteDiT
from .text import TextConfig, TextEncoder

FORMAT = "vidcore-latte/1"


@dataclass(frozen=True)
class ModelConfig:
    denoiser: str = "dit"  # "dit" or "unet"
    dit: dict[str, Any] = field(default_factory=dict)
    unet: dict[str, Any] = field(default_factory=dict)
    text: dict[str, Any] | None = field(default_factory=dict)  # None: class labels or unconditional
    vae: dict[str, Any] | None = None  # None: pixel space
    prediction: str = "flow"  # eps, v, flow or x0
    process: str = "flow"  # the noising process: "flow" (rectified flow) or "vp" (DDPM)
    latent_scale: float = 1.0
    latent_shift: float = 0.0
    frames: int = 16
    size: int = 64

    def __post_init__(self):
        if self.denoiser not in ("dit", "unet"):
            raise ValueError(f"denoiser must be 'dit' or 'unet', not {self.denoiser!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls(**json.loads(text))

    @property
    def channels(self) -> int:
        """Channels the denoiser works on (latent channels or 3 for pixels)."""
        if self.vae is None:
            return 3
        from .models.vae import VAEConfig

        return VAEConfig(**self.vae).latent_channels

    def dit_config(self) -> LatteConfig:
        ctx = TextConfig(**self.text).dim if self.text is not None else 0
        return LatteConfig(**{"in_channels": self.channels, "context_dim": ctx, **self.dit})


def build_components(config: ModelConfig, device: torch.device | str = "cpu",
                     dtype: torch.dtype | None = None) -> dict[str, nn.Module]:
    """Every network of ``config`` (randomly initialised) on ``device``; ``meta`` builds without memory."""
    with torch.device(device):
        out: dict[str, nn.Module] = {}
        if config.text is not None:
            out["text_encoder"] = TextEncoder(TextConfig(**config.text))
        if config.denoiser == "dit":
            out["denoiser"] = LatteDiT(config.dit_config())
        else:
            from .models.unet import UNet3D, UNetConfig

            ctx = TextConfig(**config.text).dim if config.text is not None else 0
            out["denoiser"] = UNet3D(UNetConfig(**{"in_channels": config.channels, "context_dim": ctx,
                                                   **config.unet}))
        if config.vae is not None:
            from .models.vae import CausalVAE, VAEConfig

            out["vae"] = CausalVAE(VAEConfig(**config.vae))
    if dtype is not None:
        for m in out.values():
            m.to(dtype)
    return out


def flat_state(components: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """One state dict with component-prefixed names ("denoiser.blocks.0...")."""
    return {f"{name}.{k}": v for name, m in components.items() for k, v in m.state_dict().items()}


def split_state(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        comp, _, rest = key.partition(".")
        out.setdefault(comp, {})[rest] = value
    return out


def save_model(path, components: dict[str, nn.Module], config: ModelConfig,
               state: dict[str, torch.Tensor] | None = None, extra: dict[str, str] | None = None) -> None:
    """Weights (``state`` or the modules' own) as safetensors, with the config in the metadata."""
    from safetensors.torch import save_file

    tensors = state if state is not None else flat_state(components)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    save_file(tensors, str(path), metadata={"format": FORMAT, "config": config.to_json(), **(extra or {})})


def read_config(path) -> ModelConfig:
    """The `ModelConfig` stored in a model file's metadata."""
    from safetensors import safe_open

    from vidcore.errors import CheckpointError

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a vidcore-latte model file (no {FORMAT!r} metadata); "
                              "save it with vidcore_latte.system.save_model")
    return ModelConfig.from_json(meta["config"])


def load_model(path, device: torch.device | str = "cpu", dtype: torch.dtype | None = torch.float32,
               placement=None) -> tuple[dict[str, nn.Module], ModelConfig]:
    """Build on ``meta`` and load a model file with ``assign`` (strict: missing/unexpected keys raise).

    Floating-point weights are cast to ``dtype`` (float32 by default: the shipped demo file stores
    float16 to stay small, and CPUs compute float32 fastest); ``dtype=None`` keeps the file's.
    """
    from safetensors.torch import load_file

    from vidcore.errors import CheckpointError

    config = read_config(path)
    components = build_components(config, "meta")
    state = split_state(load_file(str(path)))
    for name, module in components.items():
        dev, dt = placement(name) if placement is not None else (torch.device(device), dtype)
        part = state.get(name, {})
        wanted = set(module.state_dict())
        missing, unexpected = wanted - set(part), set(part) - wanted
        if missing or unexpected:
            raise CheckpointError(f"{path}: component {name!r} has missing keys {sorted(missing)[:3]} and "
                                  f"unexpected keys {sorted(unexpected)[:3]}; the file does not match its config")
        part = {k: v.to(dev, dt if (dt is not None and v.dtype.is_floating_point) else v.dtype)
                for k, v in part.items()}
        module.load_state_dict(part, assign=True, strict=True)
        _fix_buffers(module, dev)
        module.eval()
    return components, config


def _fix_buffers(module: nn.Module, device) -> None:
    """Non-persistent buffers built on meta have no values: rebuild them on ``device``."""
    for sub in module.modules():
        for name, buf in list(sub._buffers.items()):
            if buf is not None and buf.is_meta:
                raise RuntimeError(f"non-persistent buffer {name} left on meta")
