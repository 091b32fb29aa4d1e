"""Putting LoRA layers into a model: merged into the weights, or applied on the fly by a forward hook.

On the fly, the adapter matrices become non-persistent buffers of the
linear layer they adapt (``lora_down_<name>``, ``lora_up_<name>``), so they
move with that layer wherever a memory policy puts it (streamed blocks,
offloaded components), and a forward hook adds ``factor * up(down(x))`` to
the layer's output; it works on `FP8Linear` layers too, computing in their
compute dtype. Merging changes the weights themselves (not fp8 weights:
re-quantising would add error, so that is refused).

With a memory policy already set up, go through `apply_lora_to`, which edits
each component under `MemoryPolicy.edit` (the real weights bound, then set
up again).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidRequestError
from .formats import LoraLayer, parse_lora, read_lora_file

MODES = ("merge", "hook")
LoraSource = str | Path | Mapping[str, torch.Tensor]


def _compute_dtype(layer: nn.Linear) -> torch.dtype:
    return getattr(layer, "compute_dtype", None) or layer.weight.dtype


def _lora_hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    x = args[0]
    for name, factor in module._vidcore_lora.items():
        down, up = module._buffers[f"lora_down_{name}"], module._buffers[f"lora_up_{name}"]
        delta = F.linear(F.linear(x.to(down.dtype), down), up)
        output = output + (delta * factor).to(output.dtype)
    return output


@dataclass
class LoraHandle:
    """What `apply_lora` did to one module; ``remove()`` undoes it (a merge is subtracted again)."""

    module: nn.Module
    name: str
    mode: str
    layers: list[LoraLayer]
    scale: float
    _hooks: list = field(default_factory=list)

    def remove(self) -> None:
        for layer in self.layers:
            target = self.module.get_submodule(layer.target)
            if self.mode == "merge":
                _merge(target, layer, -layer.factor(self.scale))
                continue
            target._vidcore_lora.pop(self.name, None)
            target._buffers.pop(f"lora_down_{self.name}", None)
            target._buffers.pop(f"lora_up_{self.name}", None)
        if self.mode == "hook":
            for layer in self.layers:
                target = self.module.get_submodule(layer.target)
                if not target._vidcore_lora and getattr(target, "_vidcore_lora_hook", None) is not None:
                    target._vidcore_lora_hook.remove()
                    target._vidcore_lora_hook = None
        self.layers = []


def _merge(target: nn.Linear, layer: LoraLayer, factor: float) -> None:
    w = target.weight
    if w.dtype.itemsize == 1:
        raise InvalidRequestError(f"cannot merge a LoRA into the fp8 weights of {layer.target}; "
                                  "apply it with mode='hook' (or merge before fp8 storage)")
    acc = torch.promote_types(w.dtype, torch.float32)  # at least fp32 for the sum, whatever W is stored in
    delta = (layer.up.to(w.device, acc) @ layer.down.to(w.device, acc)) * factor
    with torch.no_grad():
        w.copy_((w.to(acc) + delta).to(w.dtype))


def apply_lora(module: nn.Module, lora: LoraSource, *, scale: float = 1.0, mode: str = "hook",
               name: str = "default", rename: Callable[[str], str | None] | None = None,
               strict: bool = True, source: str | None = None) -> LoraHandle:
    """Adapt ``module``'s linear layers with a LoRA file or state dict; returns a handle to remove it.

    ``mode="merge"`` adds ``scale * alpha/r * B @ A`` to each weight;
    ``mode="hook"`` leaves the weights alone and adds the low-rank product on
    the fly (several adapters can be active, each under its own ``name``).
    Every key is checked before anything changes; ``source`` names the LoRA in messages.
    """
    if mode not in MODES:
        raise InvalidRequestError(f"LoRA mode {mode!r} unknown; use one of: {', '.join(MODES)}")
    if source is None:
        source = f"LoRA {Path(lora).name!r}" if isinstance(lora, (str, Path)) else f"LoRA {name!r}"
    state = read_lora_file(lora) if isinstance(lora, (str, Path)) else lora
    layers = parse_lora(state, module, source=source, rename=rename, strict=strict)
    key = re.sub(r"\W", "_", name)
    if mode == "merge":
        for layer in layers:
            _merge(module.get_submodule(layer.target), layer, layer.factor(scale))
        return LoraHandle(module, key, mode, layers, scale)
    for layer in layers:
        target = module.get_submodule(layer.target)
        if key in getattr(target, "_vidcore_lora", {}):
            raise InvalidRequestError(f"a LoRA named {name!r} is already applied to {layer.target}; "
                                      "remove it first or pick another name")
    for layer in layers:
        target = module.get_submodule(layer.target)
        dtype, device = _compute_dtype(target), target.weight.device
        target.register_buffer(f"lora_down_{key}", layer.down.to(device, dtype), persistent=False)
        target.register_buffer(f"lora_up_{key}", layer.up.to(device, dtype), persistent=False)
        if not hasattr(target, "_vidcore_lora"):
            target._vidcore_lora = {}
        target._vidcore_lora[key] = layer.factor(scale)
        if getattr(target, "_vidcore_lora_hook", None) is None:
            target._vidcore_lora_hook = target.register_forward_hook(_lora_hook)
    return LoraHandle(module, key, mode, layers, scale)


def apply_lora_to(policy, components: Iterable[str] | Mapping[str, LoraSource], lora: LoraSource | None = None,
                  **options) -> dict[str, LoraHandle]:
    """Apply a LoRA to named components of a set-up memory policy (e.g. both experts of Wan2.2 A14B).

    ``components`` is a list of names sharing one ``lora``, or a mapping
    component -> LoRA (one file per expert). Each component is edited under
    ``policy.edit``, so streamed and offloaded weights are handled.
    """
    pairs = dict(components) if isinstance(components, Mapping) else dict.fromkeys(components, lora)
    if any(src is None for src in pairs.values()):
        raise InvalidRequestError("apply_lora_to needs a LoRA for every component")
    state_cache: dict[str, Mapping[str, torch.Tensor]] = {}
    handles = {}
    for comp, src in pairs.items():
        if isinstance(src, (str, Path)):
            state_cache.setdefault(str(src), read_lora_file(src))
        if isinstance(src, (str, Path)):
            data, label = state_cache[str(src)], f"LoRA {Path(src).name!r} for {comp!r}"
        else:
            data, label = src, f"LoRA for {comp!r}"
        with policy.edit(comp) as module:
            handles[comp] = apply_lora(module, data, source=label, **options)
    return handles
