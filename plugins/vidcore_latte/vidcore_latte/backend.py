"""`LatteBackend`: a trained Latte model file behind the core's generic pipeline.

The whole model lives in one safetensors file whose metadata holds its
`ModelConfig` (see `vidcore_latte.system`). The embedded demo ships that file
inside this package, so ``vidcore generate "a red circle moving right"`` needs
no checkpoint; other Latte models are loaded from ``--ckpt DIR`` holding
``model.safetensors`` (what ``vidcore train --export`` writes).

Prediction (task ``predict``): the past frames enter the denoiser as extra
input channels concatenated to the noisy input, not by masking the noise;
latent models encode them with their VAE first (see `vidcore_latte.context`).
The frames used are pasted back unchanged into the output.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from vidcore.backend import Backend, Conditions, Defaults, Expert, Frames, Inputs, Sizes
from vidcore.errors import CheckpointError, InvalidRequestError

from .context import denoiser_context
from .system import ModelConfig, build_components, component_names, file_layout, latent_layout, read_config

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


class LatteBackend(Backend):
    """A Latte DiT / U-Net model file: shipped (``weights``) or found as ``ckpt_dir/model.safetensors``."""

    components = ("text_encoder", "denoiser", "vae")
    layout = None

    def __init__(self, name: str, description: str, defaults: Defaults, *, weights: Path | None = None,
                 tasks: tuple[str, ...] = ("t2v", "predict"), sizes: Sizes | None = None,
                 frames: Frames | None = None, model_config: ModelConfig | None = None):
        self.name, self.description, self.defaults, self.tasks = name, description, defaults, tasks
        self.weights = weights
        self.components = ("text_encoder", "denoiser") if weights is not None else ("text_encoder", "denoiser", "vae")
        self.sizes = sizes or Sizes(allowed=(defaults.size,))
        self.frames = frames or Frames(step=1, offset=0, min=2, max=defaults.frames)
        self._config = model_config
        self._file: Path | None = None  # the model file a bound copy (`for_checkpoint`) loads

    # -- loading -----------------------------------------------------------------------------
    def model_file(self, ckpt_dir: Path | None) -> Path:
        if ckpt_dir is not None:
            path = Path(ckpt_dir)
            path = path if path.is_file() else path / "model.safetensors"
            if not path.exists():
                raise CheckpointError(f"{path} not found; a Latte checkpoint folder holds model.safetensors "
                                      "(write one with `vidcore train ... --export DIR/model.safetensors`)")
            return path
        if self.weights is None:
            raise InvalidRequestError(f"backend {self.name!r} needs --ckpt DIR holding model.safetensors")
        if not self.weights.exists():
            raise CheckpointError(f"the shipped weights {self.weights} are missing; reinstall vidcore-latte")
        return self.weights

    def model_config(self, ckpt_dir: Path | None = None) -> ModelConfig:
        if ckpt_dir is None and self._config is not None:
            return self._config
        return read_config(self.model_file(ckpt_dir))

    def for_checkpoint(self, ckpt: Path | None) -> LatteBackend:
        """A copy bound to the model file ``ckpt`` names: its config, components and file layout.

        The registered backend is never changed by a load; the pipeline keeps the copy.
        """
        path = self.model_file(ckpt)
        if self._file == path and self._config is not None:
            return self
        bound = copy.copy(self)
        bound._file, bound._config = path, read_config(path)
        bound.components = component_names(bound._config)
        bound.layout = file_layout(path, bound._config)
        return bound

    def checkpoint_dir(self, ckpt: Path | None) -> Path:
        return self.model_file(ckpt).parent

    def build(self, device="meta", dtype=None):
        return build_components(self.model_config(), device, dtype)

    # -- the pipeline's questions --------------------------------------------------------------
    def encode_components(self, request) -> list[str]:
        """The text encoder, and for prediction with a latent model the VAE (it encodes the past frames)."""
        cfg = self.model_config()
        names = ["text_encoder"] if cfg.text is not None else []
        if request.task == "predict" and cfg.vae is not None:
            names.append("vae")
        return names

    def validate(self, request, inputs: Inputs) -> None:
        if request.task == "predict":
            video = inputs.video
            if video is None or video.shape[0] < 1:
                raise InvalidRequestError("prediction needs at least one past frame in --video")
            h, w = video.shape[1:3]
            if (w, h) != (request.width, request.height):
                raise InvalidRequestError(f"--video is {w}x{h} but the model makes {request.width}x"
                                          f"{request.height}; resize the clip first")

    def validate_frames(self, request) -> None:
        cfg = self.model_config()
        if cfg.vae is not None:
            from .models.vae import VAEConfig

            f = VAEConfig(**cfg.vae).temporal_factor
            if (request.frames - 1) % f:
                raise InvalidRequestError(f"this latent model makes {f}n+1 frames; --frames {request.frames} "
                                          "does not fit")

    def latent_shape(self, request) -> tuple[int, ...]:
        self.validate_frames(request)
        cfg = self.model_config()
        shape, _ = latent_layout(cfg, request.frames, request.height, request.width)
        return shape

    def encode(self, components, request, inputs: Inputs, device) -> Conditions:
        enc = components.get("text_encoder")
        cond: dict = {}
        uncond: dict = {}
        if enc is not None:
            cond["context"] = enc.encode([request.prompt], device)
            uncond["context"] = enc.encode([request.negative or ""], device)
        state: dict = {}
        if request.task == "predict":
            frames, mask, used = denoiser_context(self.model_config(), inputs.video, request.frames,
                                                  self.latent_shape(request), components.get("vae"), device)
            for d in (cond, uncond):
                d["cond_frames"], d["cond_mask"] = frames, mask
            if used:  # decode puts the given frames back exactly as they were read
                state["past_frames"] = inputs.video[-used:]
        return Conditions(cond, uncond, state)

    def experts(self, components, request) -> list[Expert]:
        return [Expert("denoiser", "denoiser", components["denoiser"], self.model_config().prediction)]

    def decode(self, components, latents, request, *, conditions: Conditions) -> torch.Tensor:
        cfg = self.model_config()
        if cfg.vae is not None:
            vae = components["vae"]
            latents = vae.decode((latents / cfg.latent_scale + cfg.latent_shift).to(next(vae.parameters()).dtype),
                                 chunk=2)
        x = latents.float().clamp(-1, 1)[:, :, : request.frames]
        past = conditions.state.get("past_frames")
        if past is not None:
            k = past.shape[0]
            x[:, :, :k] = past.permute(3, 0, 1, 2).float().to(x.device) / 127.5 - 1
        return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 4, 1).cpu()

