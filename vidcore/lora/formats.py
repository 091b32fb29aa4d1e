"""Reading LoRA files: diffusers/PEFT and kohya key names, resolved to a model's ``nn.Linear`` layers.

Formats understood (``<path>`` is a module path, dots or, for kohya, underscores):

- PEFT / diffusers: ``<path>.lora_A.weight`` (r x in) and ``<path>.lora_B.weight`` (out x r),
  optionally ``<path>.alpha``; a PEFT adapter name (``lora_A.default.weight``) is accepted;
- diffusers (older) and kohya: ``<path>.lora_down.weight`` / ``<path>.lora_up.weight`` / ``<path>.alpha``;
- kohya module paths: ``lora_unet_<path_with_underscores>`` (also ``lora_transformer_``), matched
  against the model's own layer names with dots replaced by underscores.

Paths may carry a training framework's prefix (``diffusion_model.``, ``transformer.``,
``base_model.model.``, ``model.``, ``unet.``), which is stripped when the path does not match as is.
The update of a layer is ``W + scale * (alpha / r) * B @ A`` (alpha defaults to r).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import _SafetensorsFile
from ..errors import CheckpointError

log = logging.getLogger(__name__)

_SUFFIXES = [
    (re.compile(r"^(?P<stem>.+)\.lora_A(?:\.[A-Za-z0-9_-]+)?\.weight$"), "down"),
    (re.compile(r"^(?P<stem>.+)\.lora_B(?:\.[A-Za-z0-9_-]+)?\.weight$"), "up"),
    (re.compile(r"^(?P<stem>.+)\.lora_down\.weight$"), "down"),
    (re.compile(r"^(?P<stem>.+)\.lora_up\.weight$"), "up"),
    (re.compile(r"^(?P<stem>.+)\.alpha$"), "alpha"),
]
_PREFIXES = ("base_model.model.", "model.diffusion_model.", "diffusion_model.", "transformer.", "model.", "unet.")
_KOHYA = re.compile(r"^lora_(?:unet|transformer)_(?P<path>.+)$")


@dataclass
class LoraLayer:
    """One adapted linear layer: ``delta W = factor * up @ down`` with ``factor = scale * alpha / rank``."""

    target: str  # module path inside the model
    stem: str  # the key stem in the file (for messages)
    down: torch.Tensor  # (rank, in_features), "A"
    up: torch.Tensor  # (out_features, rank), "B"
    alpha: float | None = None

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    def factor(self, scale: float) -> float:
        return scale * (self.alpha if self.alpha is not None else self.rank) / self.rank


def _not_safetensors(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"LoRA file {path} is not a valid safetensors file ({why}); download it again or "
                           "re-export it as safetensors")


def read_lora_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A LoRA file's tensors (safetensors only: never unpickle untrusted files).

    Read through the same checked parser as checkpoints (`vidcore.checkpoints`),
    so a truncated or garbage file is one line naming it, never a library error.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"LoRA file {str(path)!r} is a folder; pass the .safetensors file itself")
    if not path.exists():
        raise CheckpointError(f"LoRA file {str(path)!r} does not exist; check the path")
    if not path.is_file():
        raise CheckpointError(f"LoRA file {str(path)!r} is not a regular file; pass a .safetensors file")
    if path.suffix != ".safetensors":
        raise CheckpointError(f"LoRA file {path.name!r} is not .safetensors; convert it to safetensors first")
    st = _SafetensorsFile(path, corrupt=_not_safetensors)
    try:
        with path.open("rb", buffering=0) as f:
            return {name: st.read(name, f) for name in st.entries}
    except OSError as e:
        raise CheckpointError(f"LoRA file {path}: cannot read ({e.strerror or e})") from None


def _list(items: list[str], limit: int = 4) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def parse_lora(state: Mapping[str, torch.Tensor], module: nn.Module, *, source: str = "LoRA",
               rename: Callable[[str], str | None] | None = None, strict: bool = True) -> list[LoraLayer]:
    """The layers of ``module`` that ``state`` adapts, checked against their shapes.

    Unrecognised keys, paths that name no linear layer of ``module`` and
    mis-shaped matrices are all reported at once, by name, in one line
    (`CheckpointError`); with ``strict=False`` they are skipped with a warning.
    ``rename`` maps a dotted path from the file to the model's path (e.g. from
    a diffusers layout to the official one), or returns None.
    """
    linears = {name: m for name, m in module.named_modules() if isinstance(m, nn.Linear)}
    underscored: dict[str, str | None] = {}
    for name in linears:
        key = name.replace(".", "_")
        underscored[key] = None if key in underscored else name  # None: two layers share the form

    groups: dict[str, dict[str, torch.Tensor]] = {}
    unknown: list[str] = []
    for key, tensor in state.items():
        for pattern, part in _SUFFIXES:
            m = pattern.match(key)
            if m:
                groups.setdefault(m["stem"], {})[part] = tensor
                break
        else:
            unknown.append(key)

    layers: list[LoraLayer] = []
    unmatched: list[str] = []
    problems: list[str] = []
    for stem, parts in groups.items():
        target = _resolve(stem, linears, underscored, rename)
        if target is None:
            unmatched.append(stem)
            continue
        if "down" not in parts or "up" not in parts:
            missing = "lora_A/lora_down" if "down" not in parts else "lora_B/lora_up"
            problems.append(f"{stem} has no {missing} weight")
            continue
        down, up, layer = parts["down"], parts["up"], linears[target]
        alpha = parts.get("alpha")
        if down.dim() != 2 or up.dim() != 2 or up.shape[1] != down.shape[0]:
            problems.append(f"{stem} has A {tuple(down.shape)} and B {tuple(up.shape)}, not (r, in) and (out, r)")
        elif down.shape[1] != layer.in_features or up.shape[0] != layer.out_features:
            problems.append(f"{stem} maps {down.shape[1]}->{up.shape[0]} features but {target} is "
                            f"{layer.in_features}->{layer.out_features}")
        elif alpha is not None and alpha.numel() != 1:
            problems.append(f"{stem}.alpha has {alpha.numel()} values, expected one")
        else:
            layers.append(LoraLayer(target, stem, down, up, None if alpha is None else float(alpha.item())))

    messages = []
    if unknown:
        messages.append(f"unrecognised keys {_list(unknown)}")
    if unmatched:
        messages.append(f"no linear layer for {_list(unmatched)}")
    if problems:
        messages.append(_list(problems, 3))
    if messages:
        text = f"{source} does not fit this model: " + "; ".join(messages)
        if strict:
            raise CheckpointError(text + " (check the file is for this model, or pass strict=False to skip)")
        log.warning("%s; skipped", text)
    if not layers:
        raise CheckpointError(f"{source} adapts no linear layer of this model; check it is for this model")
    return layers


def _resolve(stem: str, linears: Mapping[str, nn.Module], underscored: Mapping[str, str | None],
             rename: Callable[[str], str | None] | None) -> str | None:
    kohya = _KOHYA.match(stem)
    if kohya:
        path = kohya["path"]
        candidates = [path] + [path[len(p):] for p in (p.replace(".", "_") for p in _PREFIXES) if path.startswith(p)]
        for c in candidates:
            if underscored.get(c):
                return underscored[c]
        return None
    candidates = [stem]
    for _ in range(2):  # e.g. "base_model.model." then "transformer."
        candidates += [c[len(p):] for c in list(candidates) for p in _PREFIXES if c.startswith(p)]
    for c in dict.fromkeys(candidates):
        name = rename(c) if rename is not None else c
        if name in linears:
            return name
    return None
