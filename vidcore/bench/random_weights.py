"""Random weights created directly on the device, for full-size benchmarks without a download.

Creating them on the device matters at full size: 14B parameters drawn on the
CPU take minutes, on a GPU well under a second. Norm scales are ones and
biases zeros so that activations keep a realistic scale through 40 blocks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..checkpoints import init_non_persistent


def materialise(module: nn.Module, device: torch.device | str, dtype: torch.dtype, *, seed: int = 0,
                std: float = 0.02) -> nn.Module:
    """Replace every meta tensor of ``module`` (in place) by a random one on ``device`` in ``dtype``."""
    device = torch.device(device)
    gen = torch.Generator(device).manual_seed(seed)
    for mod in module.modules():
        for table in (mod._parameters, mod._buffers):
            for name, t in list(table.items()):
                if t is None or not t.is_meta:
                    continue
                dt = dtype if t.is_floating_point() else t.dtype
                new = torch.empty(t.shape, device=device, dtype=dt)
                if not t.is_floating_point() or t.dim() <= 1 and name != "weight":
                    new.zero_()
                elif name == "weight" and t.dim() == 1:
                    new.fill_(1.0)  # norm scales
                else:  # drawn in float32 and rounded, so every dtype gets the same weights
                    new.copy_(torch.empty(t.shape, device=device).normal_(0.0, std, generator=gen))
                table[name] = nn.Parameter(new, requires_grad=False) if name in mod._parameters else new
    init_non_persistent(module, device)
    return module.eval()


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside get their parameters on ``meta`` (to be assigned later), their buffers real.

    Needed for another library's model (diffusers') that computes non-persistent
    buffers (RoPE tables) in its constructor: those must exist, while its
    parameters are replaced by ours with ``load_state_dict(assign=True)``.
    """
    register = nn.Module.register_parameter

    def on_meta(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(self, name, param)

    nn.Module.register_parameter = on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def weight_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())
