"""Validation clips written as mp4 while training: what the EMA weights make of fixed prompts and seeds."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def write_validation(trainer, folder: Path) -> list[Path]:
    """Denoisers: one clip per ``sample_prompts`` entry (seed = its index). VAEs: reconstructions."""
    from vidcore.video import write_video

    folder.mkdir(parents=True, exist_ok=True)
    cfg = trainer.config
    comps = trainer.ema_components()
    paths = []
    if cfg.task == "vae":
        item = trainer.source.item(10**9)  # an index training never reaches
        x = item["video"].permute(3, 0, 1, 2)[None].to(trainer.device) * 2 - 1
        t = 1 + (x.shape[2] - 1) // comps["vae"].config.temporal_factor * comps["vae"].config.temporal_factor
        with torch.no_grad():
            recon = comps["vae"].decode(comps["vae"].encode_latents(x[:, :, :t]))
        both = torch.cat([x[:, :, :t], recon.clamp(-1, 1)], dim=-1)[0]  # side by side
        frames = ((both + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).cpu()
        paths.append(write_video(folder / "reconstruction.mp4", frames, 8, overwrite=True))
        return paths
    from .generate import generate

    prompts = list(cfg.sample_prompts)
    schedule = "flow" if cfg.model.process == "flow" else "ddpm"
    sampler = "flow_euler" if cfg.model.process == "flow" else "ddim"
    with torch.no_grad():
        videos = generate(comps, cfg.model, prompts, list(range(len(prompts))), steps=cfg.sample_steps,
                          schedule=schedule, sampler=sampler)
    for i, (prompt, video) in enumerate(zip(prompts, videos)):
        name = f"{i:02d}-" + "-".join(prompt.split())[:40] + ".mp4"
        paths.append(write_video(folder / name, video, 8, overwrite=True))
    log.info("wrote %d validation clips to %s", len(paths), folder)
    return paths
