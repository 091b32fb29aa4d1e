"""A tiny, fully working backend for core tests: a byte-level text encoder, a conv denoiser, a pixel 'VAE'.

It goes through exactly the same contract as the real plugins (registered via
`vidcore.plugins.reset(extra_plugins=[("toy", toy_backend)])`), with weights in
a checkpoint folder laid out by `write_checkpoint`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from vidcore.backend import Backend, CheckpointLayout, Conditions, Defaults, Expert, Frames, Sizes
from vidcore.hookspecs import hookimpl
from vidcore.nn import BlockStack
from vidcore.sampling.schedules import flow
from vidcore.video import to_uint8

CH = 3


class ByteTextEncoder(nn.Module):
    def __init__(self, dim: int = 8):
        super().__init__()
        self.embed = nn.Embedding(256, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.proj(self.embed(ids).mean(dim=1))


class Block(nn.Module):
    def __init__(self, ch: int, dim: int):
        super().__init__()
        self.conv = nn.Conv3d(ch, ch, 3, padding=1)
        self.film = nn.Linear(dim + 1, 2 * ch)

    def forward(self, x: torch.Tensor, *, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(emb)[:, :, None, None, None].chunk(2, dim=1)
        return x + torch.tanh(self.conv(x)) * (1 + scale) * 0.1 + shift * 0.1


class ToyDenoiser(nn.Module):
    def __init__(self, ch: int = CH, dim: int = 8, depth: int = 2):
        super().__init__()
        self.blocks = BlockStack(Block(ch, dim) for _ in range(depth))

    def forward(self, x: torch.Tensor, t: torch.Tensor, *, text: torch.Tensor) -> torch.Tensor:
        emb = torch.cat([text, t.float().reshape(-1, 1).expand(text.shape[0], 1) / 1000], dim=1)
        return self.blocks(x, emb=emb) - x  # a flow velocity-like output


def tokenize(prompts: list[str], length: int = 16) -> torch.Tensor:
    out = torch.zeros(len(prompts), length, dtype=torch.long)
    for i, p in enumerate(prompts):
        data = list(p.encode()[:length]) or [0]
        out[i, : len(data)] = torch.tensor(data)
    return out


class ToyBackend(Backend):
    name = "toy"
    description = "test backend"
    tasks = ("t2v", "i2v")
    defaults = Defaults(size=(16, 16), frames=5, fps=8, steps=3, sampler="flow_euler", schedule="flow",
                        guidance=2.0, negative="blurry", schedule_options={"shift": 1.0})
    sizes = Sizes(multiple=8, min_side=8, max_side=64)
    frames = Frames(step=4, offset=1, max=9)
    layout = CheckpointLayout(repo_id="vidcore-test/toy", files={
        "text_encoder": ("text_encoder.safetensors",),
        "denoiser": ("denoiser/model.safetensors",),
    })
    components = ("text_encoder", "denoiser")

    def build(self, device="meta", dtype=None):
        with torch.device(device):
            mods = {"text_encoder": ByteTextEncoder(), "denoiser": ToyDenoiser()}
        if dtype is not None:
            for m in mods.values():
                m.to(dtype)
        return mods

    def encode(self, components, request, inputs, device):
        te = components["text_encoder"]
        cond = {"text": te(tokenize([request.prompt]).to(device))}
        uncond = {"text": te(tokenize([request.negative]).to(device))}
        if inputs.image is not None:
            cond["text"] = cond["text"] + inputs.image.float().mean() / 255
        return Conditions(cond, uncond)

    def latent_shape(self, request):
        return (CH, request.frames, request.height, request.width)

    def experts(self, components, request):
        den = components["denoiser"]
        return [Expert("denoiser", "denoiser", lambda x, t, **c: den(x, t, **c), "flow", 0.0)]

    def decode(self, components, latents, request, *, conditions):
        return to_uint8(latents.clamp(-1, 1)).permute(0, 2, 3, 4, 1).contiguous()


class TwoExpertToy(ToyBackend):
    """Two experts (high/low noise) with per-expert guidance, like Wan2.2 A14B."""

    name = "toy-moe"
    defaults = Defaults(size=(16, 16), frames=5, fps=8, steps=4, sampler="flow_euler", schedule="flow",
                        guidance={"high": 3.0, "low": 1.5}, schedule_options={"shift": 1.0})
    layout = CheckpointLayout(repo_id="vidcore-test/toy-moe", files={
        "text_encoder": ("text_encoder.safetensors",),
        "high": ("high/model.safetensors",),
        "low": ("low/model.safetensors",),
    })
    components = ("text_encoder", "high", "low")

    def build(self, device="meta", dtype=None):
        with torch.device(device):
            return {"text_encoder": ByteTextEncoder(), "high": ToyDenoiser(), "low": ToyDenoiser()}

    def experts(self, components, request):
        hi, lo = components["high"], components["low"]
        return [Expert("high", "high", lambda x, t, **c: hi(x, t, **c), "flow", 0.5),
                Expert("low", "low", lambda x, t, **c: lo(x, t, **c), "flow", 0.0)]


TOY = ToyBackend()
TOY_MOE = TwoExpertToy()


def write_checkpoint(backend: Backend, root: Path, seed: int = 0) -> Path:
    """Random weights in the backend's layout under ``root``."""
    torch.manual_seed(seed)
    mods = backend.build("cpu")
    for comp, patterns in backend.layout.files.items():
        path = root / patterns[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        sd = {k: v.contiguous() for k, v in mods[comp].state_dict().items()}
        save_file(sd, str(path))
    return root


@hookimpl
def register_backends(register):
    register(TOY)
    register(TOY_MOE)


def toy_flow(steps: int, *, shift: float = 2.0):
    """The toy family's own schedule (as Wan's and Hunyuan's plugins register theirs): the uniform flow grid."""
    return flow(steps, shift=shift, grid="linspace")


@hookimpl
def register_schedules(register):
    register("toy_flow", toy_flow)
