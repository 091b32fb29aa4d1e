"""A Latte model as data: its networks' configurations, built into named components.

`ModelConfig` is what a checkpoint records (as JSON in the safetensors
metadata), so a file alone says how to rebuild its model. Components follow
the core's names: ``text_encoder``, ``denoiser`` and, for latent models, ``vae``.
Pixel-space models (``vae: null``) diffuse directly on frames scaled to [-1, 1].
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidcore.checkpoints import CheckpointLayout, load_components, read_metadata
from vidcore.errors import CheckpointError

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
    """The `ModelConfig` stored in a model file's metadata (read through the core's checked header parser)."""
    meta = read_metadata(Path(path))
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a vidcore-latte model file (no {FORMAT!r} metadata); "
                              "save it with vidcore_latte.system.save_model")
    return ModelConfig.from_json(meta["config"])


def component_names(config: ModelConfig) -> tuple[str, ...]:
    """The components `build_components` makes for ``config``, in order."""
    return (*(("text_encoder",) if config.text is not None else ()), "denoiser",
            *(("vae",) if config.vae is not None else ()))


def file_layout(path, config: ModelConfig) -> CheckpointLayout:
    """One model file holds every component, each under its name as prefix ("denoiser.blocks.0...")."""
    names = component_names(config)
    return CheckpointLayout(repo_id=None, files={c: (Path(path).name,) for c in names},
                            prefixes={c: f"{c}." for c in names})


def load_model(path, device: torch.device | str = "cpu", dtype: torch.dtype | None = torch.float32,
               placement=None) -> tuple[dict[str, nn.Module], ModelConfig]:
    """Build on ``meta`` and load a model file through the core recipe (strict: missing/unexpected keys raise).

    Floating-point weights are cast to ``dtype`` (float32 by default: the shipped demo file stores
    float16 to stay small, and CPUs compute float32 fastest); ``dtype=None`` keeps the file's.
    ``placement(component) -> (device, dtype)``, when given, decides per component instead.
    """
    path = Path(path)
    config = read_config(path)
    components = build_components(config, "meta")
    place = placement if placement is not None else (lambda _component: (torch.device(device), dtype))
    load_components(file_layout(path, config), components, path.parent, place, name="latte")
    for module in components.values():
        module.eval()
    return components, config


def latent_layout(config: ModelConfig, frames: int, height: int, width: int | None = None
                  ) -> tuple[tuple[int, int, int, int], int]:
    """(shape (C, T, H, W) the denoiser samples, T) for a clip of ``frames`` frames."""
    width = width or height
    if config.vae is not None:
        from .models.vae import VAEConfig

        vc = VAEConfig(**config.vae)
        t = vc.latent_frames(frames)
        f = vc.spatial_factor
        return (vc.latent_channels, t, height // f, width // f), t
    tmult = config.dit_config().temporal_patch if config.denoiser == "dit" else 1
    t = -(-frames // tmult) * tmult
    return (config.channels, t, height, width), t
