"""Putting a LoRA into a model: on the fly by a forward hook, or merged into the weights.

``mode="hook"`` leaves every linear layer's weights alone: its adapter tensors
become non-persistent buffers of that layer (``lora_down_<name>``/``lora_up_<name>``
for a low-rank pair, ``lora_dw_<name>`` for a full weight delta, ``lora_db_<name>``
for a bias delta), so they move with the layer wherever a memory policy puts it
(streamed blocks, offloaded components), and a forward hook adds
``factor * (up(down(x)) + dw(x) + db)`` to its output. It works on `FP8Linear`
layers too, computing in their compute dtype. Several LoRAs can be active at
once, each under its own name.

``mode="merge"`` adds the same updates to the weights (refused for fp8 weights:
re-quantising would add error). ``remove()`` subtracts them again.

Full-tensor deltas on parameters that are not a linear layer's (norm weights,
modulation tables, convolutions, embeddings) cannot be hooked generically, so
they are added in place in *both* modes; the handle keeps the original values
(on the CPU; such tensors are small) and ``remove()`` puts them back exactly.
Remove LoRAs that change the same such tensor in the reverse order of applying them.

With a memory policy already set up, go through `apply_lora_to`, which edits
each component under `MemoryPolicy.edit` (the real weights bound, then set up
again), and `remove_lora_from` to undo it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidRequestError
from .formats import KeyMap, LoraLayer, LoraPlan, parse_lora, read_lora_file

log = logging.getLogger(__name__)

MODES = ("merge", "hook")
LoraSource = str | Path | Mapping[str, torch.Tensor]
_BUFFERS = ("lora_down_{}", "lora_up_{}", "lora_dw_{}", "lora_db_{}")


def _compute_dtype(layer: nn.Linear) -> torch.dtype:
    return getattr(layer, "compute_dtype", None) or layer.weight.dtype


def _lora_hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    x = args[0]
    buffers = module._buffers
    for key, factor in module._vidcore_lora.items():
        delta = None
        down = buffers.get(f"lora_down_{key}")
        if down is not None:
            delta = F.linear(F.linear(x.to(down.dtype), down), buffers[f"lora_up_{key}"])
        dw = buffers.get(f"lora_dw_{key}")
        if dw is not None:
            d = F.linear(x.to(dw.dtype), dw)
            delta = d if delta is None else delta + d
        db = buffers.get(f"lora_db_{key}")
        if db is not None:
            delta = db if delta is None else delta + db
        output = output + (delta * factor).to(output.dtype)
    return output


def _owner(module: nn.Module, param: str) -> tuple[nn.Module, str]:
    path, _, leaf = param.rpartition(".")
    return (module.get_submodule(path) if path else module), leaf


def _add_(tensor: torch.Tensor, delta: torch.Tensor, factor: float, what: str) -> None:
    """``tensor += factor * delta``, summed in at least float32, stored back in the tensor's dtype."""
    if tensor.dtype.itemsize == 1:
        raise InvalidRequestError(f"cannot merge a LoRA into the fp8 weights of {what}; apply it with "
                                  "mode='hook' (or merge before fp8 storage)")
    acc = torch.promote_types(tensor.dtype, torch.float32)
    with torch.no_grad():
        tensor.copy_((tensor.to(acc) + delta.to(tensor.device, acc) * factor).to(tensor.dtype))


@dataclass
class LoraHandle:
    """What `apply_lora` did to one module; ``remove()`` undoes it."""

    module: nn.Module
    name: str
    mode: str
    plan: LoraPlan
    scale: float
    hooked: list[str] = field(default_factory=list)  # linear layers carrying this LoRA's buffers
    merged: list[tuple[str, LoraLayer | torch.Tensor]] = field(default_factory=list)  # linear weights changed
    saved: dict[str, torch.Tensor] = field(default_factory=dict)  # originals of parameters changed in place

    @property
    def layers(self) -> list[LoraLayer]:
        return self.plan.layers

    @property
    def matched(self) -> int:
        return self.plan.matched

    def remove(self) -> None:
        for param, change in reversed(self.merged):
            owner, leaf = _owner(self.module, param)
            _add_(getattr(owner, leaf), _dense(change), -self.scale, param)
        for param, value in self.saved.items():
            owner, leaf = _owner(self.module, param)
            with torch.no_grad():
                getattr(owner, leaf).copy_(value)
        for path in self.hooked:
            target = self.module.get_submodule(path)
            target._vidcore_lora.pop(self.name, None)
            for pattern in _BUFFERS:
                target._buffers.pop(pattern.format(self.name), None)
            if not target._vidcore_lora and getattr(target, "_vidcore_lora_hook", None) is not None:
                target._vidcore_lora_hook.remove()
                target._vidcore_lora_hook = None
        self.hooked, self.merged, self.saved = [], [], {}


def _dense(change: LoraLayer | torch.Tensor) -> torch.Tensor:
    """The full update before the user's scale: ``alpha/r * B @ A`` for a low-rank layer."""
    if isinstance(change, LoraLayer):
        acc = torch.promote_types(change.up.dtype, torch.float32)
        return (change.up.to(acc) @ change.down.to(acc)) * change.factor(1.0)
    return change


def _linear_param(modules: Mapping[str, nn.Module], param: str) -> tuple[str, str] | None:
    """(layer path, "weight" | "bias") when ``param`` is a linear layer's weight or bias."""
    path, _, leaf = param.rpartition(".")
    if leaf in ("weight", "bias") and isinstance(modules.get(path), nn.Linear):
        return path, leaf
    return None


def apply_plan(module: nn.Module, plan: LoraPlan, *, scale: float = 1.0, mode: str = "hook",
               name: str = "default") -> LoraHandle:
    """Apply a parsed LoRA (`vidcore.lora.parse_lora`) to ``module``; see the module docstring for the modes."""
    if mode not in MODES:
        raise InvalidRequestError(f"LoRA mode {mode!r} unknown; use one of: {', '.join(MODES)}")
    key = re.sub(r"\W", "_", name)
    modules = dict(module.named_modules())
    handle = LoraHandle(module, key, mode, plan, scale)
    hook_parts: dict[str, dict[str, torch.Tensor]] = {}  # layer -> {"down"/"up"/"dw"/"db": tensor}
    in_place: list[tuple[str, LoraLayer | torch.Tensor]] = []  # (parameter, low-rank layer or full delta)
    for layer in plan.layers:
        if mode == "hook":
            hook_parts.setdefault(layer.target, {}).update(
                down=layer.down, up=layer.up.to(torch.promote_types(layer.up.dtype, torch.float32)) * layer.factor(1.0))
        else:
            in_place.append((layer.target + ".weight", layer))
    for delta in plan.deltas:
        linear = _linear_param(modules, delta.target)
        if mode == "hook" and linear is not None:
            parts = hook_parts.setdefault(linear[0], {})
            part = "dw" if linear[1] == "weight" else "db"
            parts[part] = parts[part] + delta.delta if part in parts else delta.delta
        else:
            in_place.append((delta.target, delta.delta))
    if mode == "hook":
        for path in hook_parts:
            if key in getattr(modules[path], "_vidcore_lora", {}):
                raise InvalidRequestError(f"a LoRA named {name!r} is already applied to {path}; "
                                          "remove it first or pick another name")
    for param, _ in in_place:  # fp8 refusals before anything changes
        owner, leaf = _owner(module, param)
        if getattr(owner, leaf).dtype.itemsize == 1:
            raise InvalidRequestError(f"cannot merge a LoRA into the fp8 weights of {param}; apply it "
                                      "with mode='hook' (or merge before fp8 storage)")
    for param, change in in_place:
        owner, leaf = _owner(module, param)
        tensor = getattr(owner, leaf)
        linear = _linear_param(modules, param)
        if linear is not None and linear[1] == "weight":
            handle.merged.append((param, change))  # a linear weight: subtracted again on remove
        elif param not in handle.saved:
            handle.saved[param] = tensor.detach().to("cpu", copy=True)
        _add_(tensor, _dense(change), scale, param)
    for path, parts in hook_parts.items():
        target = modules[path]
        dtype, device = _compute_dtype(target), target.weight.device
        for part, tensor in parts.items():
            target.register_buffer(f"lora_{part}_{key}", tensor.to(device, dtype), persistent=False)
        if not hasattr(target, "_vidcore_lora"):
            target._vidcore_lora = {}
        target._vidcore_lora[key] = scale
        if getattr(target, "_vidcore_lora_hook", None) is None:
            target._vidcore_lora_hook = target.register_forward_hook(_lora_hook)
        handle.hooked.append(path)
    return handle


def apply_lora(module: nn.Module, lora: LoraSource, *, scale: float = 1.0, mode: str = "hook",
               name: str = "default", key_map: KeyMap | None = None, strict: bool = True,
               source: str | None = None) -> LoraHandle:
    """Adapt ``module`` with a LoRA file or state dict (any layout of `vidcore.lora.formats`); returns a handle.

    ``mode="merge"`` adds ``scale * alpha/r * B @ A`` (and ``scale *`` each full-tensor
    delta) to the weights; ``mode="hook"`` adds the same on the fly. ``key_map``
    maps names of another layout to ``module``'s (a backend's `lora_key_map`).
    Every key is checked before anything changes; ``source`` names the LoRA in messages.
    """
    if mode not in MODES:
        raise InvalidRequestError(f"LoRA mode {mode!r} unknown; use one of: {', '.join(MODES)}")
    if source is None:
        source = f"LoRA {Path(lora).name!r}" if isinstance(lora, (str, Path)) else f"LoRA {name!r}"
    state = read_lora_file(lora) if isinstance(lora, (str, Path)) else lora
    plan = parse_lora(state, module, source=source, key_map=key_map, strict=strict)
    return apply_plan(module, plan, scale=scale, mode=mode, name=name)


def apply_lora_to(policy, components: Iterable[str] | Mapping[str, LoraSource], lora: LoraSource | None = None,
                  *, key_maps: Mapping[str, KeyMap] | None = None, **options) -> dict[str, LoraHandle]:
    """Apply a LoRA to named components of a set-up memory policy (e.g. both experts of Wan2.2 A14B).

    ``components`` is a list of names sharing one ``lora``, or a mapping
    component -> LoRA (one file per expert). Each component is edited under
    ``policy.edit``, so streamed and offloaded weights are handled; ``key_maps``
    gives each component's key map. Every component is parsed and checked before any is changed.
    """
    pairs = dict(components) if isinstance(components, Mapping) else dict.fromkeys(components, lora)
    if any(src is None for src in pairs.values()):
        raise InvalidRequestError("apply_lora_to needs a LoRA for every component")
    strict = options.pop("strict", True)
    state_cache: dict[str, Mapping[str, torch.Tensor]] = {}
    plans = {}
    for comp, src in pairs.items():
        if isinstance(src, (str, Path)):
            data = state_cache.setdefault(str(src), read_lora_file(src))
            label = f"LoRA {Path(src).name!r} for {comp!r}"
        else:
            data, label = src, f"LoRA for {comp!r}"
        key_map = (key_maps or {}).get(comp)
        plans[comp] = parse_lora(data, policy.components[comp], source=label, key_map=key_map, strict=strict)
    handles = {}
    for comp, plan in plans.items():
        with policy.edit(comp) as module:
            handles[comp] = apply_plan(module, plan, **options)
        log.info("LoRA on %s: %s", comp, plan.describe())
    return handles


def remove_lora_from(policy, handles: Mapping[str, LoraHandle]) -> None:
    """Undo `apply_lora_to` (each component under ``policy.edit``)."""
    for comp, handle in handles.items():
        with policy.edit(comp):
            handle.remove()
