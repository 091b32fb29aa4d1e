"""Named memory presets for ``--memory``, named after the official flags they replace.

Presets are `PolicySpec`s and add up with ``+``: ``--memory offload+fp8``,
``--memory stream+t5-cpu+bf16`` (which is what ``low-vram`` is). A preset
registered as a factory (a callable ``dtype -> MemoryPolicy``) is used as is
and cannot be combined.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import UnknownNameError
from .base import MemoryPolicy
from .composed import ComposedPolicy, PolicySpec

Factory = Callable[[torch.dtype | None], MemoryPolicy]

_STREAM = PolicySpec("stream", rules={"denoiser": "stream"}, ahead=2)
_T5_CPU = PolicySpec("t5-cpu", rules={"text_encoder": "cpu"})
_BF16 = PolicySpec("bf16", dtype=torch.bfloat16)

_PRESETS: dict[str, PolicySpec | Factory] = {
    "resident": PolicySpec("resident"),
    # one component on the accelerator at a time (official --offload_model True / --use-cpu-offload)
    "offload": PolicySpec("offload", rules={"*": "offload"}),
    "t5-cpu": _T5_CPU,
    "bf16": _BF16,
    "fp16": PolicySpec("fp16", dtype=torch.float16),
    "fp32": PolicySpec("fp32", dtype=torch.float32),
    "fp8": PolicySpec("fp8", dtype=torch.bfloat16, fp8=("denoiser",)),
    "stream": _STREAM,
    "vae-tiling": PolicySpec("vae-tiling", vae_tiling=True),
    "low-vram": PolicySpec("low-vram", batched_guidance=False, vae_tiling=True) + _STREAM + _T5_CPU + _BF16,
}


def register_preset(name: str, factory: PolicySpec | Factory) -> None:
    _PRESETS[name] = factory


def preset_names() -> list[str]:
    return sorted(_PRESETS)


def get_spec(name: str) -> PolicySpec:
    """The spec of a preset or of a ``+`` combination of presets."""
    spec: PolicySpec | None = None
    for part in name.split("+"):
        part = part.strip()
        found = _PRESETS.get(part)
        if found is None:
            raise UnknownNameError("memory preset", part, preset_names())
        if not isinstance(found, PolicySpec):
            raise UnknownNameError("combinable memory preset", part,
                                   [n for n, p in _PRESETS.items() if isinstance(p, PolicySpec)])
        spec = found if spec is None else spec + found
    assert spec is not None
    return PolicySpec(**{**spec.__dict__, "name": name}) if spec.name != name else spec


def get_policy(name: str | MemoryPolicy, dtype: torch.dtype | None = None) -> MemoryPolicy:
    """A fresh policy for preset ``name`` (``a+b`` combines presets); ``dtype`` overrides the presets' dtype."""
    if isinstance(name, MemoryPolicy):
        return name
    found = _PRESETS.get(name)
    if found is not None and not isinstance(found, PolicySpec):
        return found(dtype)
    return ComposedPolicy(get_spec(name), dtype)
