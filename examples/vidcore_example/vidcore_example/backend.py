"""`example-tiny`: a working backend in ~60 lines, with no checkpoint to download.

Its "text encoder" hashes the prompt into a colour, its denoiser pulls the
latent towards a smooth gradient of that colour, and its "VAE" is the identity
on RGB. Real backends have the same shape with real modules.
"""

from __future__ import annotations

import zlib

import torch
from torch import nn

from vidcore import Backend, Conditions, Defaults, Expert, Frames, Sizes
from vidcore.video import to_uint8


class PromptColour(nn.Module):
    """Maps a prompt to an RGB colour in [-1, 1] (deterministic, no weights)."""

    def forward(self, prompt: str) -> torch.Tensor:
        h = zlib.crc32(prompt.encode())
        rgb = torch.tensor([(h >> s) & 255 for s in (0, 8, 16)], dtype=torch.float32)
        return rgb / 127.5 - 1


class GradientDenoiser(nn.Module):
    """Predicts the clean video: the prompt colour, brightening left to right and drifting over time."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, *, colour: torch.Tensor) -> torch.Tensor:
        _, _, f, h, w = x.shape
        ramp = torch.linspace(-0.5, 0.5, w)[None, :] + torch.linspace(0, 0.5, f)[:, None, None]
        return (colour[:, :, None, None, None] + ramp[None, None].expand(1, 1, f, h, w)).clamp(-1, 1)


class ExampleBackend(Backend):
    name = "example-tiny"
    description = "third-party example: a colour gradient from the prompt"
    tasks = ("t2v",)
    defaults = Defaults(size=(32, 32), frames=8, fps=8, steps=4, sampler="flow_euler", schedule="flow",
                        guidance=1.0, schedule_options={"shift": 1.0})
    sizes = Sizes(multiple=8, min_side=8, max_side=256)
    frames = Frames(step=1, offset=0, min=1, max=64)
    components = ("text_encoder", "denoiser")

    def build(self, device="meta", dtype=None):
        return {"text_encoder": PromptColour(), "denoiser": GradientDenoiser()}

    def load(self, ckpt_dir, placement):
        return self.build()  # nothing to load: no weights

    def encode(self, components, request, inputs, device):
        return Conditions({"colour": components["text_encoder"](request.prompt)[None].to(device)})

    def latent_shape(self, request):
        return (3, request.frames, request.height, request.width)

    def experts(self, components, request):
        return [Expert("denoiser", "denoiser", components["denoiser"], prediction="x0")]

    def decode(self, components, latents, request, *, conditions):
        return to_uint8(latents).permute(0, 2, 3, 4, 1).contiguous()
