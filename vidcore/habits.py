"""diffusers' argument names, translated to ours or refused in one line that names ours.

Users arrive with ``pipe(prompt, num_inference_steps=50, guidance_scale=5.0,
height=480, width=832, num_frames=81, negative_prompt=..., generator=g)``
in their fingers. Where the meaning is the same we accept the name; where it
is not, the error says what to write instead. The one trap: for a
guidance-distilled model (HunyuanVideo) diffusers' ``guidance_scale`` is the
*embedded* scale, while our ``guidance`` is true classifier-free guidance
(two passes per step).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from .backend import Backend
from .errors import InvalidRequestError

log = logging.getLogger(__name__)

#: diffusers name -> ours, same meaning
SAME = {"num_inference_steps": "steps", "negative_prompt": "negative", "num_frames": "frames"}
#: diffusers names with no counterpart, and what to do instead
REFUSED = {
    "num_videos_per_prompt": "give one seed per video instead, e.g. seed=[1, 2, 3] (one video each)",
    "output_type": "the pipeline returns vidcore.Video (video.frames is uint8 (T, H, W, 3); video.to_numpy(), "
                   "video.to_pil())",
    "return_dict": "the pipeline returns vidcore.Video",
    "latents": "the initial noise comes from seed=; pass the seed of the run you want",
    "prompt_embeds": "give the prompt text; the backend encodes it",
    "callback_on_step_end": "use callback=fn (fn(info) after each step, info has x, i, sigma, denoised)",
}


def translate(backend: Backend, settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` with diffusers' names turned into ours (an error for names that mean something else)."""
    out = dict(settings)
    for theirs, advice in REFUSED.items():
        if theirs in out:
            raise InvalidRequestError(f"{theirs!r} is a diffusers argument vidcore does not take: {advice}")
    for theirs, ours in SAME.items():
        if theirs in out:
            _take(out, theirs, ours, out.pop(theirs))
    if "height" in out or "width" in out:
        height, width = out.pop("height", None), out.pop("width", None)
        if height is None or width is None:
            raise InvalidRequestError("give both height= and width= (or size='WxH')")
        _take(out, "height/width", "size", f"{int(width)}x{int(height)}")
    if "generator" in out:
        generator = out.pop("generator")
        if generator is not None:  # None: a random seed, as in diffusers
            _take(out, "generator", "seed", _seed_of(generator))
    if "guidance_scale" in out:
        value = out.pop("guidance_scale")
        if backend.embedded_guidance:
            raise InvalidRequestError(
                f"{backend.name} is guidance-distilled: diffusers' guidance_scale={value} is its embedded scale, "
                f"here guidance_options={{'embedded': {value}}}; vidcore's guidance= is true classifier-free "
                "guidance (two passes per step, about 2x slower)")
        _take(out, "guidance_scale", "guidance", value)
    if "true_cfg_scale" in out:
        _take(out, "true_cfg_scale", "guidance", out.pop("true_cfg_scale"))
    return out


def warn_true_cfg_on_distilled(backend: Backend, guidance: Any) -> None:
    """A distilled model given true CFG > 1 runs two passes per step: say so where it cannot be missed."""
    if backend.embedded_guidance and isinstance(guidance, (int, float)) and float(guidance) > 1.0:
        log.warning("%s: guidance=%s is true classifier-free guidance (two denoiser passes per step, about 2x "
                    "slower); the distilled model's own scale is the embedded guidance option (diffusers' "
                    "guidance_scale). Use guidance=1 unless you mean it.", backend.name, guidance)


def _take(out: dict[str, Any], theirs: str, ours: str, value: Any) -> None:
    if ours in out:
        raise InvalidRequestError(f"give {ours}= or diffusers' {theirs}, not both")
    out[ours] = value


def _seed_of(generator: Any) -> int | list[int]:
    """A torch.Generator's seed (a list for a list of them): the same video comes from the same seed."""
    if isinstance(generator, (list, tuple)):
        return [_seed_of(g) for g in generator]  # type: ignore[misc]
    if isinstance(generator, torch.Generator):
        return int(generator.initial_seed())
    raise InvalidRequestError(f"generator must be a torch.Generator (or use seed=N); got {type(generator).__name__}")
