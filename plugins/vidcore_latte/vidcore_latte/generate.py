"""Batched generation with the core's schedules, samplers and guidance (for evaluation and validation).

`vidcore generate` makes one clip per call through `vidcore.Pipeline`; this
module makes many at once with the same pieces and the same per-seed noise
(``torch.Generator().manual_seed(seed)``), so a clip here equals the CLI's
clip for that seed up to batched-matmul rounding.
"""

from __future__ import annotations

import torch
from torch import nn

from vidcore.guidance import Guidance
from vidcore.sampling import Sampler, Scheduler, wrap_network

from .context import denoiser_context
from .system import ModelConfig, latent_layout


@torch.no_grad()
def generate(components: dict[str, nn.Module], config: ModelConfig, prompts: list[str], seeds: list[int], *,
             steps: int = 20, guidance: float = 4.0, shift: float = 2.0, sampler: str = "flow_euler",
             schedule: str = "flow", frames: int | None = None, size: int | None = None,
             context: list[torch.Tensor] | None = None) -> torch.Tensor:
    """uint8 clips (B, T, H, W, 3); ``context[i]`` (uint8 (K, H, W, 3)) are given past frames."""
    frames = frames or config.frames
    size = size or config.size
    den = components["denoiser"]
    device = next(den.parameters()).device
    shape, _ = latent_layout(config, frames, size)
    noise = torch.cat([torch.randn((1, *shape), generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    enc = components.get("text_encoder")
    cond, uncond = {}, {}
    if enc is not None:
        cond["context"] = enc.encode(list(prompts), device)
        uncond["context"] = enc.encode([""] * len(prompts), device)
    used = [0] * len(prompts)
    if context is not None:
        parts = [denoiser_context(config, clip, frames, shape, components.get("vae"), device) for clip in context]
        past = torch.cat([p[0] for p in parts])
        mask = torch.cat([p[1] for p in parts])
        used = [p[2] for p in parts]
        for d in (cond, uncond):
            d["cond_frames"], d["cond_mask"] = past, mask
    sched = Scheduler(schedule, **({"shift": shift} if schedule == "flow" else {}))(steps)
    model = wrap_network(den, config.prediction, sched)
    guided = Guidance(scale=guidance).wrap(model, cond, uncond if guidance != 1.0 else None, sched)
    gen = torch.Generator().manual_seed(int(seeds[0]) + 1)
    x = Sampler.get(sampler)(guided, sched.prior(noise.to(device)), sched, generator=gen)
    if config.vae is not None:
        x = components["vae"].decode(x / config.latent_scale + config.latent_shift, chunk=2)
    x = x.float().clamp(-1, 1)[:, :, :frames].cpu()
    for i, k in enumerate(used):
        if k:
            x[i, :, :k] = context[i][-k:].permute(3, 0, 1, 2).float() / 127.5 - 1
    return ((x + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1)
