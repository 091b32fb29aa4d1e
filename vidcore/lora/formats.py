"""Reading LoRA files: the common key layouts, resolved to a model's parameters.

Key layouts (``<path>`` is a module path; one file may mix them):

- low-rank pairs on an ``nn.Linear``, ``delta W = (alpha / r) * B @ A``: PEFT / diffusers
  ``<path>.lora_A[.<adapter>].weight`` (A, r x in) and ``<path>.lora_B[.<adapter>].weight``
  (B, out x r); kohya / ComfyUI ``<path>.lora_down.weight`` and ``<path>.lora_up.weight``; an
  optional ``<path>.alpha`` (none: alpha = r). PEFT's ``<path>.lora_B.bias`` adds
  ``(alpha / r) * bias`` to the layer's bias;
- full-tensor deltas (LightX2V, ComfyUI): ``<path>.diff`` is added to ``<path>.weight`` (or to the
  parameter ``<path>`` itself, e.g. a modulation table), ``<path>.diff_b`` to ``<path>.bias`` and
  ``<path>.diff_m`` to ``<path>.modulation``.

Where the paths come from, tried in this order:

- the model's own names, as they are or under a trainer's prefix (``diffusion_model.``,
  ``transformer.``, ``base_model.model.``, ``model.``, ``unet.``), which is stripped;
- another layout of the same model (e.g. diffusers'), through a *key map* the backend supplies
  (`vidcore.Backend.lora_key_map`): it maps file names to ours, or to `Rows` of ours where the
  other layout splits one tensor into several (diffusers' separate q, k, v of a fused qkv);
- kohya / musubi-tuner module names, ``lora_unet_<path with "_" for ".">`` (also
  ``lora_transformer_``), resolved against the model's own parameter names with their dots read
  as underscores (a form two parameters share is refused as ambiguous).

Nothing here knows a model family: the backend's key map carries that knowledge.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError

log = logging.getLogger(__name__)

#: (pattern, part): the key suffixes a LoRA file uses, each naming what the tensor is
_PARTS = [
    (re.compile(r"^(?P<stem>.+)\.lora_A(?:\.[\w-]+)?\.weight$"), "down"),
    (re.compile(r"^(?P<stem>.+)\.lora_B(?:\.[\w-]+)?\.weight$"), "up"),
    (re.compile(r"^(?P<stem>.+)\.lora_B(?:\.[\w-]+)?\.bias$"), "up_bias"),
    (re.compile(r"^(?P<stem>.+)\.lora_down\.weight$"), "down"),
    (re.compile(r"^(?P<stem>.+)\.lora_up\.weight$"), "up"),
    (re.compile(r"^(?P<stem>.+)\.alpha$"), "alpha"),
    (re.compile(r"^(?P<stem>.+)\.diff$"), "diff"),
    (re.compile(r"^(?P<stem>.+)\.diff_b$"), "diff_b"),
    (re.compile(r"^(?P<stem>.+)\.diff_m$"), "diff_m"),
]
#: the parameter of ``<stem>`` that each kind of full-tensor delta changes ("" = the stem itself)
_DELTA_PARAMS = {"diff": (".weight", ""), "diff_b": (".bias",), "diff_m": (".modulation",), "up_bias": (".bias",)}
_PREFIXES = ("base_model.model.", "model.diffusion_model.", "diffusion_model.", "transformer.", "model.", "unet.")
_KOHYA = re.compile(r"^lora_(?:unet|transformer)_(?P<path>.+)$")


@dataclass(frozen=True)
class Rows:
    """Rows ``[start, start + count)`` of a file's tensor are rows ``[at, at + count)`` of parameter ``target``.

    A key map returns a list of these for a name that another layout splits or reorders (all of
    a diffusers ``to_q`` is the first third of our fused ``qkv``: ``[Rows("...qkv.weight", 0, h)]``).
    """

    target: str
    at: int
    count: int
    start: int = 0


#: ``key_map(names) -> {name: our parameter name | [Rows, ...]}``; names it does not know are left out
KeyMap = Callable[[list[str]], Mapping[str, Any]]


@dataclass
class LoraLayer:
    """One adapted linear layer: ``delta W = factor * up @ down`` with ``factor = scale * alpha / rank``.

    ``alpha`` None means alpha = rank (the factor is then the scale), which is also how layers
    combined from several file entries store their already-scaled ``up``.
    """

    target: str  # module path inside the model
    stem: str  # the key stem(s) in the file (for messages)
    down: torch.Tensor  # (rank, in_features), "A"
    up: torch.Tensor  # (out_features, rank), "B"
    alpha: float | None = None

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    def factor(self, scale: float) -> float:
        return scale * (self.alpha if self.alpha is not None else self.rank) / self.rank


@dataclass
class ParamDelta:
    """A full tensor added (times the scale) to one parameter: a norm or modulation table, a bias, a weight."""

    target: str  # parameter name inside the model
    stem: str
    delta: torch.Tensor  # the parameter's shape


@dataclass
class LoraPlan:
    """What a LoRA file does to one module: its low-rank layers and its full-tensor deltas, all checked."""

    layers: list[LoraLayer]
    deltas: list[ParamDelta]
    keys: int  # tensors in the file
    matched: int  # tensors that went into ``layers``/``deltas``

    def describe(self) -> str:
        return (f"{self.matched} of {self.keys} keys: {len(self.layers)} low-rank layers, "
                f"{len(self.deltas)} full-tensor deltas")


def _not_safetensors(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"LoRA file {path} is not a valid safetensors file ({why}); download it again or "
                           "re-export it as safetensors")


def read_lora_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A LoRA file's tensors (safetensors only: never unpickle untrusted files).

    The header goes through the checkpoints' own checked parser first (`vidcore.checkpoints.read_header`),
    so a truncated or garbage file is one line naming it, never a library error.
    """
    from safetensors import safe_open

    from ..checkpoints import read_header

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"LoRA file {str(path)!r} is a folder; pass the .safetensors file itself")
    if not path.exists():
        raise CheckpointError(f"LoRA file {str(path)!r} does not exist; check the path")
    if not path.is_file():
        raise CheckpointError(f"LoRA file {str(path)!r} is not a regular file; pass a .safetensors file")
    if path.suffix != ".safetensors":
        raise CheckpointError(f"LoRA file {path.name!r} is not .safetensors; convert it to safetensors first")
    try:
        read_header(path)
    except CheckpointError as exc:
        m = re.search(r"corrupt safetensors header \((.*)\); the file", str(exc))
        raise _not_safetensors(path, m.group(1) if m else str(exc)) from None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 - safe_open has no iterator
    except OSError as e:
        raise CheckpointError(f"LoRA file {path}: cannot read ({e.strerror or e})") from None
    except Exception as e:  # noqa: BLE001 - the library's own refusal, after our header check passed
        raise _not_safetensors(path, f"{type(e).__name__}: {e}") from None


def _list(items: Sequence[str], limit: int = 3) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _candidates(stem: str) -> list[str]:
    """``stem`` with the trainers' prefixes stripped (e.g. "base_model.model." then "transformer.")."""
    out = [stem]
    for _ in range(2):
        out += [c[len(p):] for c in list(out) for p in _PREFIXES if c.startswith(p)]
    return list(dict.fromkeys(out))


class _Names:
    """The model's parameters, looked up by our names, by a backend's key map, or in kohya's underscore form."""

    def __init__(self, module: nn.Module, key_map: KeyMap | None):
        self.params = dict(module.named_parameters(remove_duplicate=False))
        self.underscored: dict[str, str | None] = {}
        for name in self.params:
            key = name.replace(".", "_")
            self.underscored[key] = None if key in self.underscored else name  # None: two names share the form
        self.key_map = key_map
        self.mapped: dict[str, Any] = {}

    def ask(self, names: list[str]) -> None:
        """One call of the key map for every name not found as it is."""
        todo = [n for n in dict.fromkeys(names) if n not in self.params and n not in self.mapped]
        if self.key_map is None or not todo:
            return
        for name, value in dict(self.key_map(todo)).items():
            if value is not None:
                self.mapped[name] = value

    def lookup(self, name: str) -> tuple[str, list[Rows] | None] | None:
        """(our parameter, row pieces or None for the whole tensor) for a file name, or None."""
        if name in self.params:
            return name, None
        value = self.mapped.get(name)
        if isinstance(value, str):
            return (value, None) if value in self.params else None
        if value:
            pieces = list(value)
            targets = {p.target for p in pieces}
            if len(targets) == 1 and all(isinstance(p, Rows) for p in pieces) and pieces[0].target in self.params:
                return pieces[0].target, pieces
        return None

    def kohya(self, path: str, suffix: str) -> str | None:
        """Our name for kohya's ``<path with underscores><suffix>`` (suffix like ".weight" or "")."""
        key = path + suffix.replace(".", "_")
        return self.underscored.get(key)


def _resolve(names: _Names, stem: str, suffixes: Sequence[str]) -> tuple[str, list[Rows] | None] | None:
    kohya = _KOHYA.match(stem)
    if kohya:
        path = kohya["path"]
        paths = [path] + [path[len(p):] for p in (q.replace(".", "_") for q in _PREFIXES) if path.startswith(p)]
        for suffix in suffixes:
            for p in paths:
                found = names.kohya(p, suffix)
                if found:
                    return found, None
        return None
    for suffix in suffixes:
        for c in _candidates(stem):
            found = names.lookup(c + suffix)
            if found:
                return found
    return None


def _group(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    groups: dict[str, dict[str, Any]] = {}
    unknown: list[str] = []
    for key, tensor in state.items():
        for pattern, part in _PARTS:
            m = pattern.match(key)
            if m:
                groups.setdefault(m["stem"], {})[part] = (key, tensor)
                break
        else:
            unknown.append(key)
    return groups, unknown


def _rows_fit(pieces: list[Rows], src_rows: int, dst_rows: int) -> str | None:
    for p in pieces:
        if p.count <= 0 or p.start < 0 or p.at < 0 or p.start + p.count > src_rows or p.at + p.count > dst_rows:
            return f"rows {p.start}:{p.start + p.count} -> {p.at}:{p.at + p.count} do not fit {src_rows} -> {dst_rows}"
    return None


def parse_lora(state: Mapping[str, torch.Tensor], module: nn.Module, *, source: str = "LoRA",
               key_map: KeyMap | None = None, strict: bool = True) -> LoraPlan:
    """The changes ``state`` makes to ``module``, every key resolved and every shape checked.

    Keys that are no LoRA tensor, keys that match no parameter of ``module`` and
    mis-shaped tensors are all reported at once, a few by name, in one line
    (`CheckpointError`); with ``strict=False`` they are skipped with a warning.
    A file that changes nothing in ``module`` is refused either way.
    """
    names = _Names(module, key_map)
    groups, unknown = _group(state)
    total = len(state)
    wanted = []
    for stem, parts in groups.items():
        if _KOHYA.match(stem):
            continue
        suffixes = {".weight"} if "down" in parts or "up" in parts else set()
        for part in parts:
            suffixes.update(_DELTA_PARAMS.get(part, ()))
        wanted += [c + s for c in _candidates(stem) for s in suffixes]
    names.ask(wanted)

    modules = dict(module.named_modules())
    lowrank: dict[str, list[tuple[str, torch.Tensor, torch.Tensor, float, list[Rows] | None]]] = {}
    dense: dict[str, list[tuple[str, torch.Tensor, float, list[Rows] | None]]] = {}
    used: list[str] = []
    unmatched: list[str] = []
    problems: list[str] = []

    for stem, parts in groups.items():
        alpha_entry = parts.get("alpha")
        alpha = None
        if alpha_entry is not None:
            if alpha_entry[1].numel() != 1:
                problems.append(f"{alpha_entry[0]} has {alpha_entry[1].numel()} values, expected one")
                continue
            alpha = float(alpha_entry[1].item())
        down, up = parts.get("down"), parts.get("up")
        rank = down[1].shape[0] if down is not None and down[1].dim() == 2 else None
        if down is not None or up is not None:
            if down is None or up is None:
                problems.append(f"{stem} has no {'lora_A/lora_down' if down is None else 'lora_B/lora_up'} weight")
                continue
            found = _resolve(names, stem, (".weight",))
            if found is None:
                unmatched += [down[0], up[0]] + ([alpha_entry[0]] if alpha_entry else [])
            else:
                target, pieces = found
                owner = modules.get(target.rsplit(".", 1)[0]) if target.endswith(".weight") else None
                a, b = down[1], up[1]
                if not isinstance(owner, nn.Linear):
                    problems.append(f"{stem} adapts {target}, which is not a linear layer's weight")
                elif a.dim() != 2 or b.dim() != 2 or b.shape[1] != a.shape[0]:
                    problems.append(f"{stem} has A {tuple(a.shape)} and B {tuple(b.shape)}, not (r, in) and (out, r)")
                elif a.shape[1] != owner.in_features:
                    problems.append(f"{stem} takes {a.shape[1]} features but {target[:-7]} takes {owner.in_features}")
                elif pieces is None and b.shape[0] != owner.out_features:
                    problems.append(f"{stem} maps {a.shape[1]}->{b.shape[0]} features but {target[:-7]} is "
                                    f"{owner.in_features}->{owner.out_features}")
                elif pieces is not None and (why := _rows_fit(pieces, b.shape[0], owner.out_features)):
                    problems.append(f"{stem}: {why}")
                else:
                    lowrank.setdefault(target[:-7], []).append((stem, a, b, alpha, pieces))
                    used += [down[0], up[0]] + ([alpha_entry[0]] if alpha_entry else [])
        elif alpha_entry is not None and not any(p in parts for p in _DELTA_PARAMS):
            problems.append(f"{alpha_entry[0]} has no lora_A/lora_down and lora_B/lora_up weights")
            continue
        for part, suffixes in _DELTA_PARAMS.items():
            if part not in parts:
                continue
            key, tensor = parts[part]
            factor = 1.0
            if part == "up_bias":
                if rank is None:
                    problems.append(f"{key} comes without its lora_A weight")
                    continue
                factor = (alpha if alpha is not None else rank) / rank
            found = _resolve(names, stem, suffixes)
            if found is None:
                unmatched.append(key)
                continue
            target, pieces = found
            param = names.params[target]
            if param.dim() == 0 or tensor.dim() == 0:
                ok = tensor.numel() == param.numel() == 1 and pieces is None
            elif pieces is None:
                ok = tuple(tensor.shape) == tuple(param.shape)
            else:
                ok = tuple(tensor.shape[1:]) == tuple(param.shape[1:]) and not _rows_fit(
                    pieces, tensor.shape[0], param.shape[0])
            if not ok:
                problems.append(f"{key} has shape {tuple(tensor.shape)} but {target} is {tuple(param.shape)}")
                continue
            dense.setdefault(target, []).append((key, tensor, factor, pieces))
            used.append(key)

    messages = []
    if unknown:
        are = "key is" if len(unknown) == 1 else "keys are"
        messages.append(f"{len(unknown)} {are} no LoRA tensor of a known kind ({_list(unknown)})")
    if unmatched:
        match = "matches" if len(unmatched) == 1 else "match"
        messages.append(f"{len(unmatched)} of {total} keys {match} no layer of this model ({_list(unmatched)})")
    if problems:
        messages.append(_list(problems, 2))
    if not lowrank and not dense and not problems:
        shown = _list(sorted(state), 2) if state else "no tensors"
        raise CheckpointError(f"{source} matches nothing in this model ({total} keys, e.g. {shown}); check that it "
                              "is for this model (and, for a model with several experts, this one: PATH@COMPONENT)")
    if messages:
        text = f"{source} does not fit this model: " + "; ".join(messages)
        if strict:
            raise CheckpointError(text + "; check the file is for this model (strict=False skips what does not fit)")
        log.warning("%s; skipped", text)
    if not lowrank and not dense:
        raise CheckpointError(f"{source} changes nothing in this model: " + "; ".join(messages))
    layers = [_combine_lowrank(target, entries, modules[target]) for target, entries in lowrank.items()]
    deltas = [_combine_dense(target, entries, names.params[target]) for target, entries in dense.items()]
    return LoraPlan(layers, deltas, keys=total, matched=len(set(used)))


def _combine_lowrank(target: str, entries: list, layer: nn.Linear) -> LoraLayer:
    """One low-rank layer per linear layer: several file entries (pieces of a fused layer) stack their ranks."""
    if len(entries) == 1 and entries[0][4] is None:
        stem, down, up, alpha, _ = entries[0]
        return LoraLayer(target, stem, down, up, alpha)
    downs, ups = [], []
    for _, down, up, alpha, pieces in entries:
        r = down.shape[0]
        f = (alpha if alpha is not None else r) / r
        acc = torch.promote_types(up.dtype, torch.float32)
        full = torch.zeros(layer.out_features, r, dtype=acc)
        for p in pieces or [Rows(target, 0, up.shape[0])]:
            full[p.at:p.at + p.count] += up[p.start:p.start + p.count].to(acc) * f
        downs.append(down.to(acc))
        ups.append(full)
    acc = torch.promote_types(downs[0].dtype, ups[0].dtype)
    return LoraLayer(target, "+".join(e[0] for e in entries), torch.cat([d.to(acc) for d in downs]),
                     torch.cat([u.to(acc) for u in ups], dim=1), None)


def _combine_dense(target: str, entries: list, param: torch.Tensor) -> ParamDelta:
    if len(entries) == 1 and entries[0][2] == 1.0 and entries[0][3] is None:
        key, tensor, _, _ = entries[0]
        return ParamDelta(target, key, tensor.reshape(param.shape))
    acc = torch.promote_types(entries[0][1].dtype, torch.float32)
    total = torch.zeros(param.shape, dtype=acc)
    for _, tensor, factor, pieces in entries:
        if pieces is None:
            total += tensor.to(acc).reshape(param.shape) * factor
        for p in pieces or []:
            total[p.at:p.at + p.count] += tensor[p.start:p.start + p.count].to(acc) * factor
    return ParamDelta(target, "+".join(e[0] for e in entries), total)
