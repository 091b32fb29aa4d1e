"""A `Unit`: the tensors of part of a model that move together (a component, a block, a component's rest).

Moving weights by rebinding ``param.data`` (and buffer slots) keeps every
``nn.Parameter`` object, hook and module reference intact, so models need no
code for it. A unit owns the *host* copy of its tensors (the authoritative
one, pinned when CUDA is present) and, while loaded, a device copy.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class Unit:
    """Parameters and buffers owned by ``module`` (recursively), minus tensors listed in ``exclude``."""

    def __init__(self, name: str, module: nn.Module, exclude: Iterable[int] = ()):
        self.name = name
        self.module = module
        skip = set(exclude)
        self.params: list[nn.Parameter] = []
        self.buffers: list[list[tuple[nn.Module, str]]] = []  # each entry: the slots holding one tensor
        buf_index: dict[int, int] = {}
        seen: set[int] = set()
        for mod in module.modules():
            for p in mod._parameters.values():
                if p is not None and id(p) not in skip and id(p) not in seen:
                    seen.add(id(p))
                    self.params.append(p)
            for bname, b in mod._buffers.items():
                if b is None or id(b) in skip:
                    continue
                if id(b) in buf_index:
                    self.buffers[buf_index[id(b)]].append((mod, bname))
                else:
                    buf_index[id(b)] = len(self.buffers)
                    self.buffers.append([(mod, bname)])
        #: authoritative copies, aligned with ``tensors()``; set by the transport on adoption
        self.host: list[torch.Tensor] = []
        #: device copies while in flight or loaded
        self.dev: list[torch.Tensor] | None = None
        #: "host", "in-flight" or "device"
        self.state = "host"
        self.ready_event = None  # a CUDA event when the copy runs on a side stream

    def tensors(self) -> list[torch.Tensor]:
        """The tensors currently bound to the module, in slot order (params, then buffers)."""
        return [p.data for p in self.params] + [slots[0][0]._buffers[slots[0][1]] for slots in self.buffers]

    def tensor_ids(self) -> set[int]:
        return {id(p) for p in self.params} | {id(slots[0][0]._buffers[slots[0][1]]) for slots in self.buffers}

    def bind(self, tensors: list[torch.Tensor]) -> None:
        """Point every slot at ``tensors`` (same order as `tensors`)."""
        n = len(self.params)
        for p, t in zip(self.params, tensors[:n], strict=True):
            p.data = t
        for slots, t in zip(self.buffers, tensors[n:], strict=True):
            for mod, bname in slots:
                mod._buffers[bname] = t

    @property
    def nbytes(self) -> int:
        src = self.host or self.tensors()
        return sum(t.numel() * t.element_size() for t in src)

    def __len__(self) -> int:
        return len(self.params) + len(self.buffers)

    def __repr__(self) -> str:
        return f"Unit({self.name!r}, {len(self)} tensors, {self.nbytes} bytes, {self.state})"


def placeholder(t: torch.Tensor) -> torch.Tensor:
    """A stand-in for a weight that is not on the device: right shape and dtype, no storage, NaN-valued.

    Used when no CUDA device is present (tests, CPU runs): a block that runs
    with weights the policy did not load computes NaN instead of silently
    using host weights, so equality tests catch it.
    """
    if t.is_floating_point() or t.is_complex():
        fill = torch.full((1,), float("nan"), dtype=t.dtype if t.dtype.itemsize > 1 else torch.float32)
        return fill.to(t.dtype).expand(t.shape) if t.dim() else fill.to(t.dtype)[0]
    return torch.empty(0, dtype=t.dtype)
