"""CFG parallelism: the conditional and unconditional passes of each step on two ranks.

`Guidance` stays in charge of everything it does (scales per step or per
expert, intervals, rescale, embedded guidance, mixing in the network's output
space). We hand it a model whose two conditions are tiny selector tensors, so
its batched path always applies: it calls the model once on ``cat([x, x])``
with the selectors ``[0, 1]``. `PairModel` then runs only this rank's half
with the real condition it selects and all-gathers the two halves over the
CFG group, so both ranks return the full pair and mix it identically. Steps
where guidance is off (no uncond, scale 1, outside the interval) call the
model with one selector, and every rank computes that one pass itself.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import torch

from .collectives import all_gather
from .layout import Groups

log = logging.getLogger(__name__)
SELECT = "vidcore_cfg_branch"


class PairModel:
    """``model(x, sigma, vidcore_cfg_branch=sel, **extra)``: the halves of x use conditions ``sel``;
    this rank computes the half at its CFG rank and gathers the rest (see the module docstring)."""

    def __init__(self, model: Callable[..., torch.Tensor], conds: list[dict[str, Any]], groups: Groups):
        self.model, self.conds, self.groups = model, conds, groups
        self.has_raw = bool(getattr(model, "has_raw", hasattr(model, "raw") and hasattr(model, "to_x0")))
        if hasattr(model, "expert_for"):
            self.expert_for = model.expert_for

    def _run(self, fn: Callable[..., torch.Tensor], x: torch.Tensor, sigma: Any, **kwargs: Any) -> torch.Tensor:
        sel = [int(s) for s in kwargs.pop(SELECT).tolist()]
        n = len(sel)
        if n == 1:
            return fn(x, sigma, **self.conds[sel[0]], **kwargs)
        if n != self.groups.layout.cfg or x.shape[0] % n:
            raise RuntimeError(f"CFG parallelism got {n} branches for a CFG group of {self.groups.layout.cfg}")
        part, me = x.shape[0] // n, self.groups.cfg_rank
        rows = slice(me * part, (me + 1) * part)
        extra = {k: v[rows] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == x.shape[0] else v
                 for k, v in kwargs.items()}
        out = fn(x[rows], sigma, **self.conds[sel[me]], **extra)
        return all_gather(out, 0, self.groups.cfg)

    def __call__(self, x: torch.Tensor, sigma: Any, **kwargs: Any) -> torch.Tensor:
        return self._run(self.model, x, sigma, **kwargs)

    def raw(self, x: torch.Tensor, sigma: Any, **kwargs: Any) -> torch.Tensor:
        return self._run(self.model.raw, x, sigma, **kwargs)  # type: ignore[attr-defined]

    def to_x0(self, x: torch.Tensor, sigma: Any, out: torch.Tensor) -> torch.Tensor:
        return self.model.to_x0(x, sigma, out)  # type: ignore[attr-defined]


def cfg_parallel_guidance(guidance: Any, model: Callable[..., torch.Tensor], cond: dict[str, Any],
                          uncond: dict[str, Any] | None, schedule: Any, groups: Groups) -> Callable[..., torch.Tensor]:
    """``guidance.wrap(model, cond, uncond, schedule)`` with the two passes on the two ranks of the CFG group.

    Same results as one process (each pass sees exactly the inputs it would);
    without an unconditional pass it is ``guidance.wrap`` itself.
    """
    if groups.cfg is None or uncond is None:
        if groups.cfg is not None:
            log.warning("--cfg-parallel: this request has no unconditional pass, so both CFG ranks compute "
                        "the same pass; use their GPUs for --ulysses/--ring instead")
        return guidance.wrap(model, cond, uncond, schedule)
    batched = copy.copy(guidance)
    batched.batched = True
    pair = PairModel(model, [dict(cond), dict(uncond)], groups)
    return batched.wrap(pair, {SELECT: torch.tensor([0])}, {SELECT: torch.tensor([1])}, schedule)
