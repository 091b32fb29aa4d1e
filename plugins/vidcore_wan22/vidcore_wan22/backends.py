"""The Wan2.2 backends: T2V-A14B, I2V-A14B (two experts each) and TI2V-5B, in the official and diffusers layouts.

Everything variant-specific is data (`WanSpec`); one `WanBackend` class runs
all of them. Defaults, sizes, noise, conditioning and the uint8 conversion
follow the official ``generate.py`` and ``wan/*.py`` (see docs/wan22.md for
each source line and every difference from diffusers' port).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidcore.backend import (
    Backend,
    CheckpointLayout,
    Components,
    Conditions,
    Defaults,
    Expert,
    Frames,
    Inputs,
    Sizes,
)
from vidcore.errors import CheckpointError, InvalidRequestError

from . import conditioning as cond
from . import keymaps
from .configs import DIT, VAE, DiTParams, T5Params, VAEParams
from .dit import WanModel
from .t5 import UMT5Encoder, WanTokenizer
from .vae import WanVAE

#: ``sample_neg_prompt`` of wan/configs/shared_config.py (verbatim)
NEGATIVE = ("色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，"
            "最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，"
            "画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，"
            "杂乱的背景，三条腿，背景人很多，倒着走")
A14B_SIZES = ((1280, 720), (720, 1280), (832, 480), (480, 832))
TI2V_SIZES = ((1280, 704), (704, 1280))
UNIPC = {"order": 2, "variant": "bh2"}  # FlowUniPCMultistepScheduler defaults (solver_order 2, bh2)


@dataclass(frozen=True)
class WanSpec:
    """One backend's data: architecture, experts, official defaults and file layout."""

    name: str
    description: str
    tasks: tuple[str, ...]
    dit: DiTParams
    vae: VAEParams
    defaults: Defaults
    official_sizes: tuple[tuple[int, int], ...]
    #: (component, official folder, diffusers folder) from high noise to low; one entry for a dense model
    experts: tuple[tuple[str, str, str], ...]
    boundary: float = 0.0
    t5: T5Params = field(default_factory=T5Params)
    repo_id: str = ""
    layout_kind: str = "official"  # or "diffusers"
    vae_file: str = "Wan2.1_VAE.pth"


def _shards(folder: str) -> tuple[str, ...]:
    prefix = f"{folder}/" if folder else ""
    return (f"{prefix}*.safetensors", f"{prefix}*.safetensors.index.json")


def _layout(spec: WanSpec) -> CheckpointLayout:
    files: dict[str, tuple[str, ...]]
    if spec.layout_kind == "official":
        files = {"text_encoder": ("models_t5_umt5-xxl-enc-bf16.pth",), "vae": (spec.vae_file,)}
        files.update({comp: _shards(folder) for comp, folder, _ in spec.experts})
        extra = ("google/umt5-xxl/*", *(f"{f}/config.json" if f else "config.json" for _, f, _ in spec.experts))
    else:
        files = {"text_encoder": _shards("text_encoder"), "vae": ("vae/*.safetensors",)}
        files.update({comp: _shards(folder) for comp, _, folder in spec.experts})
        extra = ("tokenizer/*", "model_index.json", "text_encoder/config.json", "vae/config.json",
                 *(f"{f}/config.json" for _, _, f in spec.experts))
    return CheckpointLayout(repo_id=spec.repo_id, files=files, extra=tuple(extra))


class WanBackend(Backend):
    """A Wan2.2 variant; the generic pipeline runs it."""

    default_dtype = torch.bfloat16  # the official README runs pass --convert_model_dtype; T5 is bf16
    noise_device = "run"  # the official code seeds a generator on the run's device

    def __init__(self, spec: WanSpec):
        self.spec = spec
        self.name, self.description, self.tasks = spec.name, spec.description, spec.tasks
        self.defaults = spec.defaults
        self.layout = _layout(spec)
        self.components = ("text_encoder", *(c for c, _, _ in spec.experts), "vae")
        self.required_folders = ("google/umt5-xxl" if spec.layout_kind == "official" else "tokenizer",)
        self.frames = Frames(step=4, offset=1, min=1)
        if "i2v" in spec.tasks or "ti2v" in spec.tasks:  # the output size may follow the input image
            mult = spec.vae.stride[1] * spec.dit.patch_size[1]
            self.sizes = Sizes(multiple=mult, min_side=mult, max_area=max(w * h for w, h in spec.official_sizes))
        else:
            self.sizes = Sizes(allowed=spec.official_sizes)

    # -- building and loading --------------------------------------------------------------------
    def build(self, device: torch.device | str = "meta", dtype: torch.dtype | None = None) -> Components:
        with torch.device(device):
            out: dict[str, nn.Module] = {"text_encoder": UMT5Encoder(self.spec.t5)}
            for comp, _, _ in self.spec.experts:
                out[comp] = WanModel(self.spec.dit)
            out["vae"] = WanVAE(self.spec.vae)
        if dtype is not None:
            for k, m in out.items():
                m.to(self.component_dtype(k, dtype))
        return out

    def component_dtype(self, component: str, dtype: torch.dtype | None) -> torch.dtype | None:
        """As asked, except the VAE: always float32 (the official VAE runs in fp32)."""
        return torch.float32 if component == "vae" else dtype

    def key_map(self, component: str, names: list[str]) -> dict[str, str]:
        if self.spec.layout_kind == "official":
            return {n: n for n in names}
        if component == "text_encoder":
            return {n: keymaps.t5_from_transformers(n) for n in names}  # type: ignore[misc]
        if component == "vae":
            p = self.spec.vae
            _, back = keymaps.vae_name_map(p.version, p.num_res_blocks, p.temporal_downsample, len(p.dim_mult))
            return {n: back(n) for n in names}
        return {n: keymaps.dit_from_diffusers(n) for n in names}

    def attach(self, components: Components, ckpt_dir: Path) -> None:
        # the tokenizer rides on the text encoder as a plain attribute (not part of its state dict)
        tok_dir = Path(ckpt_dir) / self.required_folders[0]
        components["text_encoder"].tokenizer = WanTokenizer(tok_dir, self.spec.t5.text_len)

    # -- request-time questions ----------------------------------------------------------------
    def _image_size(self, req: Any, image: torch.Tensor) -> tuple[int, int]:
        ih, iw = image.shape[:2]
        if self.spec.vae.version == "2.1":
            return cond.i2v_size(iw, ih, req.width * req.height, self.spec.vae.stride[1], self.spec.dit.patch_size[1])
        d = self.spec.vae.stride[1] * self.spec.dit.patch_size[1]
        return cond.best_output_size(iw, ih, d, d, req.width * req.height)

    def resolve_size(self, req: Any, inputs: Inputs) -> tuple[int, int] | None:
        size = (req.width, req.height)
        allowed = self.spec.official_sizes
        if inputs.image is None:
            if size not in allowed:
                raise InvalidRequestError(f"size {size[0]}x{size[1]} is not supported by {self.name}; use one of: "
                                          + ", ".join(f"{w}x{h}" for w, h in allowed))
            return None
        if size in allowed:  # the size picks max_area; the image picks the aspect ratio (official)
            return self._image_size(req, inputs.image)
        # a size already derived from this image (e.g. `--from-record`) is kept as it is
        for w, h in allowed:
            probe = copy.copy(req)
            probe.width, probe.height = w, h
            if self._image_size(probe, inputs.image) == size:
                return None
        raise InvalidRequestError(f"size {size[0]}x{size[1]} is not supported by {self.name}; with an image the size "
                                  "sets the pixel budget: use one of " + ", ".join(f"{w}x{h}" for w, h in allowed))

    def validate(self, req: Any, inputs: Inputs) -> None:
        if req.task == "i2v" and inputs.image is None:
            raise InvalidRequestError(f"{self.name} needs an input image; pass --image PATH")

    def latent_shape(self, req: Any) -> tuple[int, ...]:
        t, s, _ = self.spec.vae.stride
        return (self.spec.vae.z_dim, (req.frames - 1) // t + 1, req.height // s, req.width // s)

    def initial_noise(self, req: Any, generator: torch.Generator, *, conditions: Conditions) -> torch.Tensor:
        """As the official pipelines: a generator on the run's device (``noise_device = "run"``) seeded with
        the seed, one float32 draw of the unbatched shape."""
        return torch.randn(self.latent_shape(req), generator=generator, dtype=torch.float32,
                           device=generator.device)[None]

    # -- conditions ----------------------------------------------------------------------------
    def _text(self, enc: UMT5Encoder, prompt: str, device: torch.device) -> torch.Tensor:
        tok = getattr(enc, "tokenizer", None)
        if tok is None:
            raise CheckpointError("the text encoder has no tokenizer; load the backend from a checkpoint folder")
        ids, mask = tok([prompt])
        dev = enc.token_embedding.weight.device
        return enc.encode(ids.to(dev), mask.to(dev)).to(device)

    def encode(self, components: Components, req: Any, inputs: Inputs, device: torch.device) -> Conditions:
        enc = components["text_encoder"]
        negative = req.negative or NEGATIVE  # official: an empty n_prompt means the config's negative prompt
        state: dict[str, Any] = {}
        c: dict[str, Any] = {"context": self._text(enc, req.prompt, device)}
        u: dict[str, Any] = {"context": self._text(enc, negative, device)}
        if req.task in ("i2v", "ti2v"):
            vae = components["vae"]
            vdev = next(vae.parameters()).device
            image = cond.load_rgb(req.image, inputs.image)
            if self.spec.vae.version == "2.1":  # I2V-A14B: [mask 4 | latent of (image, zeros...) 16] channels
                video = cond.i2v_first_frame_video(image, req.width, req.height, req.frames)
                lat = vae.encode(video.to(vdev), chunked=True).float()
                h, w = lat.shape[3], lat.shape[4]
                y = torch.cat([cond.i2v_mask(req.frames, h, w).to(lat)[None], lat], dim=1).to(device)
                c["y"], u["y"] = y, y
            else:  # TI2V-5B: the first latent frame is the image's latent, at t = 0
                z = vae.encode(cond.ti2v_image(image, req.width, req.height).to(vdev), chunked=True).float()
                z = z.to(device)
                c["first_frame"], u["first_frame"] = z, z
                state["first_frame"] = z  # decode pins the first frame again
        return Conditions(c, u, state)

    def experts(self, components: Components, req: Any) -> list[Expert]:
        out = []
        for i, (comp, _, _) in enumerate(self.spec.experts):
            boundary = self.spec.boundary if i < len(self.spec.experts) - 1 else 0.0
            out.append(Expert(comp, comp, _network(components[comp]), "flow", boundary))
        return out

    # -- LoRA and step caching (vidcore_wan22.speedups) -------------------------------------------
    def lora_key_map(self, component: str, names: list[str]) -> dict[str, Any]:
        if component in {c for c, _, _ in self.spec.experts}:
            from . import speedups

            return speedups.lora_key_map(names)
        return super().lora_key_map(component, names)

    def step_cache_options(self, component: str, module: nn.Module, kind: str, request: Any) -> dict[str, Any]:
        from . import speedups

        return speedups.step_cache_options(self.name, kind, request)

    # -- benchmarking ----------------------------------------------------------------------------
    def bench_conditions(self, req: Any, device: torch.device, dtype: torch.dtype) -> Conditions:
        from . import bench

        return bench.conditions(self.spec, req, self.latent_shape(req), device, dtype)

    def reference_denoiser(self, component: str, module: Any, device: torch.device, dtype: torch.dtype):
        from . import bench

        return bench.diffusers_reference(self.spec.dit, module, device, dtype)

    def decode(self, components: Components, latents: torch.Tensor, req: Any, *,
               conditions: Conditions) -> torch.Tensor:
        vae = components["vae"]
        first = conditions.state.get("first_frame")
        if first is not None:
            latents = latents.clone()
            latents[:, :, :1] = first.to(latents)
        z = latents.to(next(vae.parameters()).device, torch.float32)
        video = vae.decode(z, chunked=vae.chunked, tiling=vae.tiling or None)
        return cond.to_uint8_frames(video)


def _network(model: WanModel):
    """``network(x, t, context, y=None, first_frame=None)`` for the sampler: velocity in float32."""

    def network(x: torch.Tensor, t: torch.Tensor, *, context: torch.Tensor, y: torch.Tensor | None = None,
                first_frame: torch.Tensor | None = None) -> torch.Tensor:
        if first_frame is not None:  # TI2V image mode: pin frame 0 to the image latent and give it t = 0
            x = x.clone()
            x[:, :, :1] = first_frame.to(x)
            t = t.to(torch.float32)[:, None].repeat(1, x.shape[2])
            t[:, 0] = 0
        return model(x, t, context, y=y)

    return network


def _defaults(size, frames, fps, steps, shift, guidance) -> Defaults:
    return Defaults(size=size, frames=frames, fps=fps, steps=steps, sampler="unipc", schedule="wan_flow",
                    guidance=guidance, negative=NEGATIVE, schedule_options={"shift": shift},
                    sampler_options=dict(UNIPC),
                    # the official loop runs the conditional then the unconditional pass (batch-size
                    # dependent GPU kernels would otherwise change the last digits)
                    guidance_options={"batched": False})


def _specs() -> list[WanSpec]:
    a14b = (("high_noise", "high_noise_model", "transformer"), ("low_noise", "low_noise_model", "transformer_2"))
    dense = (("denoiser", "", "transformer"),)
    base = [
        WanSpec("wan2.2-t2v-a14b", "Wan2.2 T2V-A14B: text to video, two 14B experts (MoE)", ("t2v",), DIT["t2v-A14B"],
                VAE["wan2.1"], _defaults((1280, 720), 81, 16, 40, 12.0, {"high_noise": 4.0, "low_noise": 3.0}),
                A14B_SIZES, a14b, boundary=0.875, repo_id="Wan-AI/Wan2.2-T2V-A14B"),
        WanSpec("wan2.2-i2v-a14b", "Wan2.2 I2V-A14B: image to video, two 14B experts (MoE)", ("i2v",),
                DIT["i2v-A14B"], VAE["wan2.1"],
                _defaults((1280, 720), 81, 16, 40, 5.0, {"high_noise": 3.5, "low_noise": 3.5}),
                A14B_SIZES, a14b, boundary=0.900, repo_id="Wan-AI/Wan2.2-I2V-A14B"),
        WanSpec("wan2.2-ti2v-5b", "Wan2.2 TI2V-5B: text (+ image) to video with the Wan2.2 VAE", ("t2v", "ti2v"),
                DIT["ti2v-5B"], VAE["wan2.2"], _defaults((1280, 704), 121, 24, 50, 5.0, 5.0), TI2V_SIZES, dense,
                repo_id="Wan-AI/Wan2.2-TI2V-5B", vae_file="Wan2.2_VAE.pth"),
    ]
    diffusers = [WanSpec(**{**s.__dict__, "name": s.name + "-diffusers", "layout_kind": "diffusers",
                            "repo_id": s.repo_id + "-Diffusers",
                            "description": s.description + " (diffusers folder layout)"}) for s in base]
    return base + diffusers


SPECS: list[WanSpec] = _specs()
BACKENDS: list[WanBackend] = [WanBackend(s) for s in SPECS]
