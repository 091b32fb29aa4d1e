"""The one loading recipe: a meta-built module materialised from its files, strictly, one tensor at a time.

The module is built on ``meta`` (no memory); the checkpoint's tensor names and
shapes are read from safetensors headers or ``.pth`` metadata, renamed with
the key map, checked strictly against the module, and only then read, one
tensor at a time, converted to the target dtype and placed on the target
device. No full-precision copy of the model ever exists in RAM.

Buffers that are not saved (``persistent=False``, e.g. RoPE tables) are still
on ``meta`` after loading. Any submodule that defines
``init_non_persistent(self, device: torch.device) -> None`` is called once
after its weights are in place and must re-create them on ``device``. A buffer
left on ``meta`` afterwards is a plugin bug and raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from .compare import compare, expected_tensors, tied_names
from .files import component_files
from .formats import TensorSource
from .info import dtype_name
from .keymap import map_names
from .layout import CheckpointLayout, KeyMap, same_names

log = logging.getLogger(__name__)

#: ``placement(component) -> (device, dtype)``; dtype None keeps the stored dtype
Placement = Callable[[str], tuple[torch.device, "torch.dtype | None"]]


def _slot(module: nn.Module, name: str) -> tuple[nn.Module, str]:
    owner_name, _, attr = name.rpartition(".")
    return (module.get_submodule(owner_name) if owner_name else module), attr


def _assign(module: nn.Module, names: list[str], value: torch.Tensor) -> None:
    """Put ``value`` in place of the meta tensor(s) ``names`` (several when weights are tied)."""
    owner, attr = _slot(module, names[0])
    if attr in owner._parameters:
        old = owner._parameters[attr]
        value = nn.Parameter(value, requires_grad=bool(old is not None and old.requires_grad))
    for name in names:
        owner, attr = _slot(module, name)
        table = owner._parameters if attr in owner._parameters else owner._buffers
        table[attr] = value


def _convert(t: torch.Tensor, device: torch.device, dtype: torch.dtype | None) -> torch.Tensor:
    """Convert on whichever side is cheaper: shrink before a transfer, grow after it."""
    if dtype is None or not t.is_floating_point() or t.dtype == dtype:
        return t.to(device)
    if dtype.itemsize <= t.dtype.itemsize:
        return t.to(dtype).to(device)
    return t.to(device).to(dtype)


def init_non_persistent(module: nn.Module, device: torch.device) -> None:
    """Re-create buffers that checkpoints do not hold, through each submodule's own hook."""
    for sub in module.modules():
        hook = getattr(sub, "init_non_persistent", None)
        if callable(hook):
            hook(device)
    left = [n for n, b in module.named_buffers() if b.is_meta] + [n for n, p in module.named_parameters()
                                                                    if p.is_meta]
    if left:
        raise RuntimeError(
            f"{type(module).__name__}: {len(left)} tensor(s) still on the meta device after loading "
            f"({', '.join(left[:3])}); the module must define init_non_persistent(device) to rebuild them")


def load_component(layout: CheckpointLayout, component: str, module: nn.Module, ckpt_dir: Path, *,
                   device: torch.device | str, dtype: torch.dtype | None, key_map: KeyMap = same_names,
                   name: str) -> None:
    """Materialise a meta-built ``module`` from its checkpoint files, straight into ``device``/``dtype``.

    Checks everything before reading any data: files present, names (after
    the layout's prefix and ``key_map``) and shapes strictly equal to the
    module's. Then reads one tensor at a time, converts floating tensors to
    ``dtype`` (None keeps the stored dtype; integer and bool tensors are never
    converted) and assigns it in place of the meta tensor (tied weights stay
    tied). ``name`` (the backend's) is for messages and the commands they suggest.
    """
    device = torch.device(device)
    ckpt_dir = Path(ckpt_dir)
    files = component_files(layout, ckpt_dir, component, name=name)
    expected = expected_tensors(module)
    if not files and expected:
        raise CheckpointError(f"backend {name!r} lists no checkpoint files for {component}, "
                              f"which has {len(expected)} tensors; the backend's layout is incomplete")
    source = TensorSource(files)
    try:
        mapping = map_names(layout, component, list(source.infos), key_map, name=name)
        found = {dst: source.infos[src] for src, dst in mapping.items()}
        tied = tied_names(module)
        mismatch = compare(expected, found, tied)
        if not mismatch.ok:
            raise CheckpointError(
                f"{name} {component} checkpoint does not match the model: {mismatch.summary()}; "
                f"run `vidcore verify {name} {ckpt_dir}` for the full list")
        log.info("loading %s %s: %d tensors from %d file(s) -> %s %s", name, component, len(mapping),
                 len(files), device, dtype_name(dtype) if dtype else "stored dtype")
        for src, dst in mapping.items():
            _assign(module, tied.get(dst, [dst]), _convert(source.get(src), device, dtype))
    finally:
        source.close()
    init_non_persistent(module, device)


def load_components(layout: CheckpointLayout, modules: Mapping[str, nn.Module], ckpt_dir: Path,
                    placement: Placement, *, key_map: KeyMap = same_names, name: str) -> None:
    """`load_component` for every meta-built module, each into ``placement(component)``."""
    for component, module in modules.items():
        device, dtype = placement(component)
        load_component(layout, component, module, ckpt_dir, device=device, dtype=dtype, key_map=key_map,
                       name=name)
