"""The HunyuanVideo backends: ``hunyuan-video-t2v`` and ``hunyuan-video-i2v`` (+ ``-dynamic``).

Everything variant-specific is data (`HunyuanSpec`); one `HunyuanBackend`
class runs all of them through the core pipeline. Defaults, sizes, noise,
conditioning and the uint8 conversion follow the official ``sample_video.py``
/ ``sample_image2video.py`` and ``hyvideo/*`` (docs/hunyuan.md lists each
source line and every difference from diffusers' port).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
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
)
from vidcore.errors import InvalidRequestError

from .buckets import I2V_BASE, BucketSizes, closest_bucket, crop_size_list, t2v_sizes
from .dit import HunyuanVideoDiT
from .image import clip_pixels, resize_center_crop
from .llava import I2V_TEMPLATES, LLAVA_LLAMA3_CONFIG, LlavaTextEncoder
from .params import DIT_VARIANTS, VAE_884_16C, DiTParams, VAEParams
from .text import (
    CLIP_L_TEXT_CONFIG,
    LLAMA3_8B_CONFIG,
    TEMPLATES,
    CLIPTextEncoder,
    LLMTextEncoder,
    PromptTemplate,
    load_tokenizer,
    match_names,
)
from .vae import OFFICIAL_TILING, HunyuanVideoVAE

#: hyvideo/constants.py NEGATIVE_PROMPT (T2V) and NEGATIVE_PROMPT_I2V (HunyuanVideo-I2V), verbatim
NEGATIVE = ("Aerial view, aerial view, overexposed, low quality, deformation, a poor composition, bad hands, "
            "bad teeth, bad eyes, bad limbs, distortion")
NEGATIVE_I2V = "deformation, a poor composition and deformed video, bad teeth, bad eyes, bad limbs"
_FIRST_FRAME = "image_latent"  # Conditions.state key: encode -> initial_noise -> decode
_NOISE_DTYPE = "noise_dtype"  # the text encoder's dtype, in which the official draws the latents


@dataclass(frozen=True)
class HunyuanSpec:
    """One backend's data: architecture, official defaults and file layout."""

    name: str
    description: str
    tasks: tuple[str, ...]
    defaults: Defaults
    dit: DiTParams = DIT_VARIANTS["t2v"]
    vae: VAEParams = VAE_884_16C
    llm: Mapping[str, Any] = None  # type: ignore[assignment]  # LlamaConfig (t2v) or LlavaConfig (i2v) kwargs
    clip: Mapping[str, Any] = None  # type: ignore[assignment]
    repo_id: str = "tencent/HunyuanVideo"
    dit_folder: str = "hunyuan-video-t2v-720p"
    text_folder: str = "text_encoder"
    template: str | PromptTemplate = "dit-llm-encode-video"  # prompt template (or its name) for videos
    image_template: str | PromptTemplate = "dit-llm-encode"  # ... and for a single frame
    text_len: int = 256
    skip_layer: int = 2
    stability: bool = False  # I2V --i2v-stability: start from 0.999 noise + 0.001 image latent
    sizes: tuple[tuple[int, int], ...] | None = None  # (width, height); None: the official table / buckets
    i2v_bases: Mapping[str, int] = None  # type: ignore[assignment]  # I2V tiers -> bucket base size (official)
    bucket_stride: int = 32

    def __post_init__(self) -> None:
        i2v = "i2v" in self.tasks
        if self.llm is None:
            object.__setattr__(self, "llm", LLAVA_LLAMA3_CONFIG if i2v else LLAMA3_8B_CONFIG)
        if self.clip is None:
            object.__setattr__(self, "clip", CLIP_L_TEXT_CONFIG)
        if self.i2v_bases is None:
            object.__setattr__(self, "i2v_bases", I2V_BASE)
        if i2v and not self.dit.token_replace:
            raise ValueError("the released HunyuanVideo-I2V conditions by token replacement (token_replace=True)")

    @property
    def i2v(self) -> bool:
        return "i2v" in self.tasks


def _layout(spec: HunyuanSpec) -> CheckpointLayout:
    d, t = spec.dit_folder, spec.text_folder
    files = {
        "text_encoder": (f"{t}/*.safetensors", f"{t}/*.safetensors.index.json"),
        "text_encoder_2": ("text_encoder_2/model.safetensors",),
        "denoiser": (f"{d}/transformers/mp_rank_00_model_states.pt",),
        "vae": (f"{d}/vae/pytorch_model.pt",),
    }
    extra = (f"{t}/*.json", "text_encoder_2/*.json", "text_encoder_2/merges.txt", f"{d}/vae/config.json")
    return CheckpointLayout(repo_id=spec.repo_id, files=files, extra=extra)


def _small_float(dtype: torch.dtype | None) -> torch.dtype:
    """Text encoders and the VAE run in fp16 in the official code; in fp32 when a run asks for fp32."""
    return torch.float16 if dtype in (torch.float16, torch.bfloat16) else torch.float32


class HunyuanBackend(Backend):
    """A HunyuanVideo variant; the generic pipeline runs it."""

    default_dtype = torch.bfloat16  # --precision bf16 (DiT); text encoders and VAE fp16
    components = ("text_encoder", "text_encoder_2", "denoiser", "vae")
    checkpoint_doc = "docs/hunyuan.md"  # the folder is assembled from several repositories
    noise_device = "run"  # the official code seeds a generator on the run's device

    def __init__(self, spec: HunyuanSpec):
        self.spec = spec
        self.embedded_guidance = spec.dit.guidance_embed
        self.name, self.description, self.tasks = spec.name, spec.description, spec.tasks
        self.defaults = spec.defaults
        self.layout = _layout(spec)
        self.required_folders = (spec.text_folder, "text_encoder_2")  # tokenizers beside the weights
        self.frames = Frames(step=4, offset=1, min=5 if spec.i2v else 1)
        if spec.sizes is not None:
            self.sizes = BucketSizes(allowed=spec.sizes)
        elif spec.i2v:
            sizes = {(w, h) for base in spec.i2v_bases.values() for h, w in crop_size_list(base, spec.bucket_stride)}
            self.sizes = BucketSizes(allowed=tuple(sorted(sizes)))
        else:
            self.sizes = BucketSizes(allowed=t2v_sizes())
        #: optional ``fn(prompt) -> prompt`` applied before encoding (e.g. `vidcore_hunyuan.rewrite.PromptRewrite`)
        self.prompt_rewriter: Callable[[str], str] | None = None

    # -- building and loading --------------------------------------------------------------------
    def build(self, device: torch.device | str = "meta", dtype: torch.dtype | None = None) -> Components:
        s = self.spec
        text = LlavaTextEncoder(s.llm, device) if s.i2v else LLMTextEncoder(s.llm, device)
        out: dict[str, nn.Module] = {
            "text_encoder": text,
            "text_encoder_2": CLIPTextEncoder(s.clip, device),
            "denoiser": HunyuanVideoDiT(s.dit, device=device),
            "vae": HunyuanVideoVAE(s.vae, device=device),
        }
        if dtype is not None:
            for k, m in out.items():
                m.to(self.component_dtype(k, dtype))
        return out

    def component_dtype(self, component: str, dtype: torch.dtype | None) -> torch.dtype | None:
        """The DiT as asked; text encoders and the VAE in fp16 (official precisions), fp32 for an fp32 run."""
        return dtype if component == "denoiser" else _small_float(dtype)

    def key_map(self, component: str, names: list[str]) -> dict[str, str]:
        if component == "denoiser":  # DeepSpeed dict: tensors under "module" (load_key), else a bare state dict
            if any(n.startswith("module.") for n in names):
                return {n: (n[len("module."):] if n.startswith("module.") else None) for n in names}  # type: ignore
            return {n: n for n in names}
        if component == "vae":  # load_vae: optional "state_dict" wrapper, optional "vae." prefix
            names2 = {n: n[len("state_dict."):] if n.startswith("state_dict.") else n for n in names}
            if any(v.startswith("vae.") for v in names2.values()):
                return {n: (v[4:] if v.startswith("vae.") else None) for n, v in names2.items()}  # type: ignore
            return names2
        if component in ("text_encoder", "text_encoder_2"):  # transformers folders: match by canonical names
            return match_names(names, self._module_names(component))  # type: ignore[return-value]
        return {n: n for n in names}

    def _module_names(self, component: str) -> list[str]:
        cache = self.__dict__.setdefault("_names", {})
        if component not in cache:
            s = self.spec
            if component == "text_encoder":
                module = LlavaTextEncoder(s.llm, "meta") if s.i2v else LLMTextEncoder(s.llm, "meta")
            else:
                module = CLIPTextEncoder(s.clip, "meta")
            cache[component] = list(module.state_dict())
        return cache[component]

    def attach(self, components: Components, ckpt_dir: Path) -> None:
        """Tokenizers (and for I2V the LLaVA image processor) from the checkpoint's text encoder folders."""
        text = components["text_encoder"]
        text.tokenizer = load_tokenizer(ckpt_dir / self.spec.text_folder)
        if self.spec.i2v:
            from transformers import AutoImageProcessor

            text.image_processor = AutoImageProcessor.from_pretrained(str(ckpt_dir / self.spec.text_folder),
                                                                      local_files_only=True)
        components["text_encoder_2"].tokenizer = load_tokenizer(ckpt_dir / "text_encoder_2")

    # -- request-time questions ----------------------------------------------------------------
    def resolve_size(self, req: Any, inputs: Inputs) -> tuple[int, int] | None:
        """I2V: the image picks the bucket (official ``get_closest_ratio``) of the tier nearest the size's area."""
        if not self.spec.i2v or inputs.image is None:
            return None
        area, bases = req.width * req.height, self.spec.i2v_bases
        tier = min(bases, key=lambda k: abs(bases[k] ** 2 - area))
        ih, iw = inputs.image.shape[:2]
        h, w = closest_bucket(ih, iw, crop_size_list(bases[tier], self.spec.bucket_stride))
        return w, h

    def validate(self, req: Any, inputs: Inputs) -> None:
        if self.spec.i2v and inputs.image is None:
            raise InvalidRequestError(f"{self.name} needs an input image; pass --image PATH")
        scale = req.guidance
        if isinstance(scale, Mapping) or float(scale) < 1.0:
            raise InvalidRequestError(f"{self.name}: --guidance is the true-CFG scale, a number >= 1 (1 = off); "
                                      f"got {scale}")
        if self.spec.dit.guidance_embed and req.guidance_options.get("embedded") is None:
            raise InvalidRequestError(f"{self.name} is guidance-distilled and needs an embedded guidance scale; "
                                      "set guidance option embedded (official 6.0)")

    def latent_shape(self, req: Any) -> tuple[int, ...]:
        p = self.spec.vae
        s = p.spatial_compression
        return (p.latent_channels, (req.frames - 1) // p.time_compression + 1, req.height // s, req.width // s)

    def initial_noise(self, req: Any, generator: torch.Generator, *, conditions: Conditions) -> torch.Tensor:
        """As ``sample_video.py``: a generator on the run's device (``noise_device = "run"``) seeded with the
        seed, one draw in the text encoder's dtype (``prompt_embeds.dtype``: fp16 officially); I2V stability
        mixes in 0.1% of the image latent and rounds to that dtype again (``prepare_latents``)."""
        device = generator.device
        state = conditions.state
        dtype = state.get(_NOISE_DTYPE, torch.float16)
        noise = torch.randn((1, *self.latent_shape(req)), generator=generator, device=device, dtype=dtype)
        first = state.get(_FIRST_FRAME)
        if self.spec.stability and first is not None:
            t = torch.tensor([0.999], device=device)
            noise = (noise * t + first.to(device, dtype).expand_as(noise) * (1 - t)).to(dtype)
        return noise.float()

    # -- conditions ----------------------------------------------------------------------------
    def _prompt(self, text: str) -> str:
        text = text.strip()  # predict() strips prompt and negative prompt
        if self.prompt_rewriter is not None:
            text = self.prompt_rewriter(text).strip()
        return text

    def _text(self, components: Components, prompt: str, req: Any, image: torch.Tensor | None,
              device: torch.device) -> dict[str, torch.Tensor]:
        s = self.spec
        llm, clip = components["text_encoder"], components["text_encoder_2"]
        if s.i2v:
            pixels = clip_pixels(llm.image_processor, image)
            states, mask = llm.encode([prompt], pixels, _template(s.template, I2V_TEMPLATES), text_len=s.text_len,
                                      skip_layer=s.skip_layer)
        else:
            tpl = _template(s.template if req.frames > 1 else s.image_template, TEMPLATES)
            states, mask = llm.encode([prompt], tpl, text_len=s.text_len, skip_layer=s.skip_layer)
        pooled = clip.encode([prompt])
        return {"text_states": states.to(device), "text_mask": mask.to(device), "text_states_2": pooled.to(device)}

    def encode(self, components: Components, req: Any, inputs: Inputs, device: torch.device) -> Conditions:
        prompt = self._prompt(req.prompt)
        image = inputs.image if self.spec.i2v else None
        state: dict[str, Any] = {_NOISE_DTYPE: next(components["text_encoder"].parameters()).dtype}
        c = self._text(components, prompt, req, image, device)
        u = None
        if float(req.guidance) > 1.0:  # do_classifier_free_guidance; an empty negative means the official one
            negative = req.negative.strip() or (NEGATIVE_I2V if self.spec.i2v else NEGATIVE)
            u = self._text(components, negative, req, image, device)
        if self.spec.i2v:
            vae = components["vae"]
            wdtype = next(vae.parameters()).dtype
            pixels = resize_center_crop(image, req.height, req.width)[None, :, None]
            mean = vae.encode(pixels.to(next(vae.parameters()).device, wdtype), tiling=None)
            z = (mean * torch.tensor(self.spec.vae.scaling_factor, dtype=mean.dtype)).float().to(device)
            c["first_frame"] = z
            if u is not None:
                u["first_frame"] = z
            state[_FIRST_FRAME] = z
        return Conditions(c, u, state)

    def experts(self, components: Components, req: Any) -> list[Expert]:
        return [Expert("denoiser", "denoiser", _network(components["denoiser"]), "flow", 0.0)]

    # -- LoRA and step caching (vidcore_hunyuan.speedups) -----------------------------------------
    def lora_key_map(self, component: str, names: list[str]) -> dict[str, Any]:
        if component != "denoiser":
            return super().lora_key_map(component, names)
        from . import speedups

        table = self.__dict__.get("_diffusers_rows")
        if table is None:
            table = self.__dict__["_diffusers_rows"] = speedups.diffusers_rows(
                HunyuanVideoDiT(self.spec.dit, device="meta"), self.spec.dit.hidden_size)
        return {n: table[n] for n in names if n in table}

    def step_cache_options(self, component: str, module: nn.Module, kind: str, request: Any) -> dict[str, Any]:
        from . import speedups

        return speedups.step_cache_options(module, kind) if component == "denoiser" else {}

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
        first = conditions.state.get(_FIRST_FRAME)
        if first is not None:  # token replacement: frame 0 is the image latent throughout (pipeline step)
            latents = torch.cat([first.to(latents), latents[:, :, 1:]], dim=2)
        param = next(vae.parameters())
        z = (latents.float() / self.spec.vae.scaling_factor).to(param.device)
        video = vae.decode(z.to(param.dtype), tiling=getattr(vae, "tiling", OFFICIAL_TILING))
        video = (video / 2 + 0.5).clamp(0, 1)  # in the VAE's dtype, as the official pipeline
        frames = (video.float() * 255).to(torch.uint8)  # truncation, as save_videos_grid's astype(uint8)
        return frames.permute(0, 2, 3, 4, 1).cpu()


def _template(t: str | PromptTemplate, table: Mapping[str, Any]) -> Any:
    return table[t] if isinstance(t, str) else t


def _network(dit: HunyuanVideoDiT):
    """``network(x, t, text_states, text_mask, text_states_2, guidance, first_frame)`` -> velocity (float32).

    ``guidance`` is the embedded scale as `vidcore.Guidance` passes it; like the official pipeline it is
    cast to the model's dtype and multiplied by 1000 there (6.0 -> 6016 in bf16). With ``first_frame``
    (I2V token replacement) latent frame 0 is the image latent and its velocity is zero.
    """

    def network(x: torch.Tensor, t: torch.Tensor, *, text_states: torch.Tensor, text_mask: torch.Tensor,
                text_states_2: torch.Tensor, guidance: torch.Tensor | None = None,
                first_frame: torch.Tensor | None = None) -> torch.Tensor:
        g = None if guidance is None else guidance.to(dit.dtype) * 1000.0
        if first_frame is not None:
            x = torch.cat([first_frame.to(x), x[:, :, 1:]], dim=2)
        v = dit(x, t.to(torch.float32), text_states, text_mask, text_states_2, g).float()
        if first_frame is not None:
            v = torch.cat([torch.zeros_like(v[:, :, :1]), v[:, :, 1:]], dim=2)
        return v

    return network


def _defaults(shift: float, negative: str) -> Defaults:
    return Defaults(size=(1280, 720), frames=129, fps=24, steps=50, sampler="flow_euler", schedule="hunyuan_flow",
                    guidance=1.0, negative=negative, schedule_options={"shift": shift},
                    guidance_options={"embedded": 6.0})


SPECS: list[HunyuanSpec] = [
    HunyuanSpec("hunyuan-video-t2v", "HunyuanVideo T2V 720p/540p (13B, guidance-distilled)", ("t2v",),
                _defaults(7.0, NEGATIVE)),
    HunyuanSpec("hunyuan-video-i2v", "HunyuanVideo-I2V 720p (token replacement; stability mode, shift 7)",
                ("i2v",), _defaults(7.0, NEGATIVE_I2V), dit=DIT_VARIANTS["i2v"], repo_id="tencent/HunyuanVideo-I2V",
                dit_folder="hunyuan-video-i2v-720p", text_folder="text_encoder_i2v",
                template="dit-llm-encode-video-i2v", stability=True),
    HunyuanSpec("hunyuan-video-i2v-dynamic", "HunyuanVideo-I2V 720p, dynamic mode (no stability, shift 17)",
                ("i2v",), _defaults(17.0, NEGATIVE_I2V), dit=DIT_VARIANTS["i2v"],
                repo_id="tencent/HunyuanVideo-I2V", dit_folder="hunyuan-video-i2v-720p",
                text_folder="text_encoder_i2v", template="dit-llm-encode-video-i2v", stability=False),
]
BACKENDS: list[HunyuanBackend] = [HunyuanBackend(s) for s in SPECS]
