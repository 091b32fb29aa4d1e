"""A component's checkpoint tensors against its (meta-built) module: missing, unexpected, mis-shaped."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import nn

from .info import TensorInfo, dtype_name


def expected_tensors(module: nn.Module) -> dict[str, TensorInfo]:
    """Every state-dict tensor of a (meta-built) module: name -> shape, dtype."""
    return {k: TensorInfo(tuple(v.shape), dtype_name(v.dtype))
            for k, v in module.state_dict(keep_vars=True).items()}


def tied_names(module: nn.Module) -> dict[str, list[str]]:
    """State-dict names that share one tensor (tied weights): each name -> all names of its tensor."""
    groups: dict[int, list[str]] = {}
    named = list(module.named_parameters(remove_duplicate=False)) + list(module.named_buffers(remove_duplicate=False))
    for name, t in named:
        groups.setdefault(id(t), []).append(name)
    return {n: g for g in groups.values() if len(g) > 1 for n in g}


@dataclass
class Mismatch:
    """How a component's checkpoint differs from its module (after renaming)."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mis_shaped: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # name, ckpt, model

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mis_shaped)

    def summary(self, limit: int = 3) -> str:
        """One clause per problem kind, with the first few names."""

        def few(items: list[str]) -> str:
            return ", ".join(items[:limit]) + (", ..." if len(items) > limit else "")

        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing ({few(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected ({few(self.unexpected)})")
        if self.mis_shaped:
            shown = [f"{n}: checkpoint {list(c)} vs model {list(m)}" for n, c, m in self.mis_shaped]
            parts.append(f"{len(self.mis_shaped)} mis-shaped ({few(shown)})")
        return "; ".join(parts)


def compare(expected: Mapping[str, TensorInfo], found: Mapping[str, TensorInfo],
            tied: Mapping[str, list[str]] | None = None) -> Mismatch:
    """Compare module tensors with (renamed) checkpoint tensors; dtypes may differ (converted on load)."""
    tied = tied or {}
    result = Mismatch()
    for name, info in expected.items():
        if name in found:
            if tuple(found[name].shape) != tuple(info.shape):
                result.mis_shaped.append((name, tuple(found[name].shape), tuple(info.shape)))
        elif not any(alias in found for alias in tied.get(name, ())):
            result.missing.append(name)
    result.unexpected = [n for n in found if n not in expected]
    return result
