"""Many clips at once from loaded components (for evaluation and validation), through the core's loop.

Training and evaluation hold components and a `ModelConfig`, not a checkpoint
folder, so this wraps them in a `Pipeline` of a backend bound to that config
and calls its batched `run_many`: the same encode, noise, guidance, sampler
and decode as `vidcore generate`, so a clip here equals the CLI's clip for
that seed up to batched-matmul rounding.
"""

from __future__ import annotations

import torch
from torch import nn

from vidcore.backend import Defaults, Frames, Inputs, Sizes
from vidcore.media import label
from vidcore.memory import get_policy
from vidcore.pipeline import Pipeline
from vidcore.request import resolve

from .backend import LatteBackend
from .system import ModelConfig, component_names


@torch.no_grad()
def generate(components: dict[str, nn.Module], config: ModelConfig, prompts: list[str], seeds: list[int], *,
             steps: int = 20, guidance: float = 4.0, shift: float = 2.0, sampler: str = "flow_euler",
             schedule: str = "flow", frames: int | None = None, size: int | None = None,
             context: list[torch.Tensor] | None = None) -> torch.Tensor:
    """uint8 clips (B, T, H, W, 3); ``context[i]`` (uint8 (K, H, W, 3)) are given past frames."""
    frames = frames or config.frames
    size = size or config.size
    device = next(components["denoiser"].parameters()).device
    backend = _bound(config, size, frames)
    policy = get_policy("resident", None)
    policy.setup(components, device)
    pipe = Pipeline(backend, components, policy, device)
    options = {"shift": shift} if schedule == "flow" else {}
    reqs, ins = [], []
    for i, (prompt, seed) in enumerate(zip(prompts, seeds)):
        past = None if context is None else context[i]
        reqs.append(resolve(backend, prompt, size=(size, size), frames=frames, steps=steps, sampler=sampler,
                            schedule=schedule, schedule_options=options, guidance=guidance, negative="",
                            seed=int(seed), video=None if past is None else label(past, "video")))
        ins.append(Inputs(video=past))
    videos = pipe.run_many(reqs, ins, progress=False)
    return torch.stack([v.frames for v in videos])


def _bound(config: ModelConfig, size: int, frames: int) -> LatteBackend:
    """A backend for ``config`` (not registered): its components, any size and frame count it can make."""
    defaults = Defaults(size=(size, size), frames=frames, fps=8, steps=20, sampler="flow_euler", schedule="flow",
                        guidance=4.0)
    backend = LatteBackend("latte-components", "loaded components", defaults, sizes=Sizes(allowed=((size, size),)),
                           frames=Frames(step=1, offset=0, min=1, max=frames), model_config=config)
    backend.components = component_names(config)
    return backend
