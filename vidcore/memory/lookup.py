"""Memory presets by name, from the one registry (`vidcore.plugins`) that the core and plugins fill.

A preset is a `PolicySpec` (combinable with ``+``) or a factory, a callable
``dtype -> MemoryPolicy`` that is used as is and cannot be combined. Plugins add
presets with the ``register_memory_presets`` hook; a script with `register_preset`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import UnknownNameError
from .base import MemoryPolicy
from .composed import ComposedPolicy, PolicySpec

Factory = Callable[[torch.dtype | None], MemoryPolicy]
KIND = "memory preset"


def _presets() -> dict[str, PolicySpec | Factory]:
    from .. import plugins

    return {name: entry.obj for name, entry in plugins.registry().entries[KIND].items()}


def register_preset(name: str, factory: PolicySpec | Factory, *, plugin: str = "runtime") -> None:
    """Add a preset to the one registry (a name already taken is a `DuplicateRegistrationError`)."""
    from .. import plugins

    plugins.register(KIND, name, factory, plugin=plugin)


def preset_names() -> list[str]:
    return sorted(_presets())


def get_spec(name: str) -> PolicySpec:
    """The spec of a preset or of a ``+`` combination of presets."""
    presets = _presets()
    spec: PolicySpec | None = None
    for part in name.split("+"):
        part = part.strip()
        found = presets.get(part)
        if found is None:
            raise UnknownNameError(KIND, part, list(presets))
        if not isinstance(found, PolicySpec):
            raise UnknownNameError("combinable memory preset", part,
                                   [n for n, p in presets.items() if isinstance(p, PolicySpec)])
        spec = found if spec is None else spec + found
    assert spec is not None
    return PolicySpec(**{**spec.__dict__, "name": name}) if spec.name != name else spec


def get_policy(name: str | MemoryPolicy, dtype: torch.dtype | None = None) -> MemoryPolicy:
    """A fresh policy for preset ``name`` (``a+b`` combines presets); ``dtype`` overrides the presets' dtype."""
    if isinstance(name, MemoryPolicy):
        return name
    found = _presets().get(name)
    if found is not None and not isinstance(found, PolicySpec):
        return found(dtype)
    return ComposedPolicy(get_spec(name), dtype)
