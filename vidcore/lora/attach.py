"""LoRAs on a loaded pipeline: ``PATH[:SCALE][@COMPONENT]`` specs, checks before any weight loads, the record entry.

A backend's denoisers are its components that are no text/image encoder or VAE
(``denoiser``, or one per expert: ``high_noise``/``low_noise``). A LoRA goes to
all of them unless the spec names some; Wan2.2 A14B's step-distilled pairs give
one file per expert (``high.safetensors@high_noise``). The backend's
`lora_key_map` maps the names of other layouts (diffusers') to its own.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, InvalidRequestError
from .apply import MODES, apply_lora_to
from .formats import KeyMap, LoraPlan, parse_lora

log = logging.getLogger(__name__)
MAX_SCALE = 100.0
_COMPONENTS = re.compile(r"^[A-Za-z_]\w*(,[A-Za-z_]\w*)*$")


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA to apply: file, scale, target components (None: every denoiser) and mode."""

    path: str
    scale: float = 1.0
    components: tuple[str, ...] | None = None
    mode: str = "hook"

    def __post_init__(self) -> None:
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not math.isfinite(self.scale) \
                or abs(self.scale) > MAX_SCALE:
            raise InvalidRequestError(f"LoRA scale for {self.path!r} must be a number from -{MAX_SCALE:g} to "
                                      f"{MAX_SCALE:g}; got {self.scale!r}")
        if self.mode not in MODES:
            raise InvalidRequestError(f"LoRA mode {self.mode!r} unknown; use one of: {', '.join(MODES)}")

    @classmethod
    def parse(cls, text: str) -> LoraSpec:
        """``PATH``, ``PATH:SCALE``, ``PATH@COMPONENT``, ``PATH:SCALE@COMPONENT[,COMPONENT]``."""
        path, components = text, None
        head, sep, tail = text.rpartition("@")
        if sep and head and _COMPONENTS.match(tail):
            path, components = head, tuple(tail.split(","))
        scale = 1.0
        head, sep, tail = path.rpartition(":")
        if sep and head:
            try:
                scale = float(tail)
            except ValueError:
                pass  # a colon in the path itself
            else:
                path = head
                if not math.isfinite(scale) or abs(scale) > MAX_SCALE:
                    raise InvalidRequestError(f"LoRA scale in {text!r} must be a number from -{MAX_SCALE:g} to "
                                              f"{MAX_SCALE:g} (PATH[:SCALE][@COMPONENT])")
        return cls(path, scale, components)

    def to_record(self, components: Sequence[str]) -> dict[str, Any]:
        return {"path": self.path, "scale": self.scale, "mode": self.mode, "components": list(components)}


def denoisers(backend: Any) -> list[str]:
    return [c for c in backend.components if not c.startswith(("text_encoder", "image_encoder", "vae"))]


def lora_components(backend: Any, components: Sequence[str] | None, *, path: str = "") -> list[str]:
    """The components a LoRA goes to: the named ones (checked), or every denoiser."""
    if not components:
        return denoisers(backend)
    if isinstance(components, str):
        components = [components]
    bad = [c for c in components if c not in backend.components]
    if bad:
        where = f" for {Path(path).name!r}" if path else ""
        raise InvalidRequestError(f"LoRA component {bad[0]!r}{where} is not one of backend {backend.name!r}'s; use "
                                  f"PATH@COMPONENT with one of: {', '.join(denoisers(backend))}")
    return list(dict.fromkeys(components))


def key_map_for(backend: Any, component: str) -> KeyMap:
    return lambda names: backend.lora_key_map(component, names)


def _shapes(path: str) -> dict[str, torch.Tensor]:
    """The file's tensors as meta tensors of their shape and dtype (scalars, the alphas, read for real)."""
    from safetensors import safe_open

    from ..checkpoints import read_header
    from .formats import read_lora_file

    p = Path(path)
    if not p.is_file() or p.suffix != ".safetensors":
        return read_lora_file(p)  # its one-line refusal
    try:
        infos = read_header(p)
    except CheckpointError:
        return read_lora_file(p)
    out: dict[str, torch.Tensor] = {}
    small = [k for k, info in infos.items() if math.prod(info.shape) <= 1]
    with safe_open(str(p), framework="pt", device="cpu") as f:
        for k in small:
            out[k] = f.get_tensor(k)
    for k, info in infos.items():
        if k not in out:
            dtype = getattr(torch, info.dtype, None)  # TensorInfo names dtypes as torch does ("bfloat16")
            out[k] = torch.empty(info.shape, dtype=dtype if isinstance(dtype, torch.dtype) else torch.float32,
                                 device="meta")
    return out


def check_loras(backend: Any, specs: Sequence[LoraSpec], modules: dict[str, Any] | None = None
                ) -> list[dict[str, LoraPlan]]:
    """Every spec's file resolved against a ``meta`` build of its components: each mismatch one line,
    before any weight loads (no tensor data is read but the alphas)."""
    if not specs:
        return []
    modules = modules if modules is not None else backend.build("meta")
    out = []
    for spec in specs:
        comps = lora_components(backend, spec.components, path=spec.path)
        state = _shapes(spec.path)
        out.append({c: parse_lora(state, modules[c], source=f"LoRA {Path(spec.path).name!r} for {c!r}",
                                  key_map=key_map_for(backend, c)) for c in comps})
    return out


def load_into(pipe: Any, spec: LoraSpec) -> dict[str, Any]:
    """Apply ``spec`` to a loaded `vidcore.Pipeline`; appends and returns its run-record entry."""
    comps = lora_components(pipe.backend, spec.components, path=spec.path)
    handles = apply_lora_to(pipe.policy, comps, spec.path, key_maps={c: key_map_for(pipe.backend, c) for c in comps},
                            scale=spec.scale, mode=spec.mode, name=f"lora{len(pipe.loras)}")
    entry = spec.to_record(comps)
    entry["matched"] = {c: h.matched for c, h in handles.items()}
    entry["keys"] = next(iter(handles.values())).plan.keys
    for c, h in handles.items():
        log.info("LoRA %s on %s: %s", Path(spec.path).name, c, h.plan.describe())
    pipe.loras.append(entry)
    return entry
