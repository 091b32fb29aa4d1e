"""Token sharding for any DiT: the ``sequence_parallel_plan`` contract and the `BlockStack` wrapper.

A DiT opts in by declaring, as a class attribute, which of its block stacks
run sharded and which of their inputs are aligned with the tokens::

    from vidcore.distributed.plan import Count, Prefix, SequenceParallelPlan, StackPlan, Tokens

    class MyDiT(nn.Module):
        sequence_parallel_plan = SequenceParallelPlan(
            heads="params.num_heads",                  # attribute path of the self-attention head count
            stacks={"blocks": StackPlan(
                state=(Tokens(1),),                    # x (B, L, dim): dim 1 is the token axis
                kwargs={"rope": Tokens(0),             # (cos, sin) tables (L, D/2): sharded like x
                        "e": Tokens(1, grouped=True)}, # per-frame modulation (B, F, ...): expanded, sharded
            )})

and by passing ``sequence_parallel=True`` to `vidcore.attention` in its
self-attention (cross-attention to replicated text needs nothing). When a
stack runs under `enable_sequence_parallel`, its wrapper (installed innermost,
so step caches outside it see the whole state and decide alike on every rank)
pads the sequence to a multiple of the SP degree, gives each rank its slice of
every token-aligned input, runs the blocks with attention spanning all ranks,
and gathers the state again on exit. Everything a plan does not name is
passed whole (replicated). Specs:

- `Tokens(dim)`: a tensor (or a tuple/list of tensors) whose ``dim`` is the
  sharded axis. ``grouped=True``: a size of 1 along ``dim`` is shared by all
  tokens (left alone) and a size G dividing the length covers L/G tokens per
  entry (expanded, then sharded). ``length="n_img"``: only the first
  ``kwargs["n_img"]`` entries are sharded; the rest (e.g. joint text tokens)
  stay whole on every rank, after the shard.
- `Count()`: an int or list of ints counting the whole sharded sequence plus
  anything else (``n_img``, joint lengths ``n_img + n_text``): made local.
- `Prefix(item=None)`: a count of leading units (e.g. the first frame's tokens)
  -> how many of them this shard holds (``item``: its index in a tuple).
- any callable ``spec(value, info)`` with ``info`` a `ShardInfo`.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import InvalidRequestError
from ..nn.blocks import BlockStack
from .collectives import all_gather
from .context import ShardInfo, current, sharded
from .layout import Groups

log = logging.getLogger(__name__)


class Tokens:
    """A token-aligned tensor (or tuple/list of them); see the module docstring."""

    def __init__(self, dim: int = 1, *, grouped: bool = False, length: str | None = None):
        self.dim, self.grouped, self.length = dim, grouped, length

    def __repr__(self) -> str:
        return f"Tokens({self.dim}, grouped={self.grouped}, length={self.length!r})"

    def total(self, value: Any, kwargs: Mapping[str, Any]) -> int:
        """The sequence length (in units) this value describes."""
        if self.length is not None:
            return int(kwargs[self.length])
        t = value[0] if isinstance(value, (tuple, list)) else value
        return int(t.shape[self.dim])

    def shard(self, value: Any, info: ShardInfo, kwargs: Mapping[str, Any]) -> Any:
        if value is None:
            return None
        if isinstance(value, (tuple, list)):
            return type(value)(self.shard(v, info, kwargs) for v in value)
        t: torch.Tensor = value
        d = self.dim % t.dim()
        n = int(kwargs[self.length]) if self.length is not None else t.shape[d]
        valid = info.valid()
        if self.grouped and n != info.length:
            if n == 1:
                return t
            if info.length % n:
                raise RuntimeError(f"{n} groups along dim {d} do not divide the {info.length} tokens")
            # entry i covers tokens [i*per, (i+1)*per): pick this shard's tokens' entries (never the full expansion)
            per = info.length // n
            part = t.index_select(d, torch.arange(info.start, info.start + valid, device=t.device) // per)
            tail = t.narrow(d, n, 0)
        elif n != info.length:
            raise RuntimeError(f"token-aligned input has {n} entries along dim {d}, the sequence {info.length}")
        else:
            tail = t.narrow(d, n, t.shape[d] - n)
            part = t.narrow(d, min(info.start, n), valid)
        if valid < info.local:  # the end of the sequence: pad with zeros (never attended to)
            shape = list(t.shape)
            shape[d] = info.local - valid
            part = torch.cat([part, t.new_zeros(shape)], dim=d)
        return torch.cat([part, tail], dim=d) if tail.shape[d] else part

    def gather(self, value: Any, info: ShardInfo, group: Any, kwargs: Mapping[str, Any]) -> Any:
        if isinstance(value, (tuple, list)):
            return type(value)(self.gather(v, info, group, kwargs) for v in value)
        t: torch.Tensor = value
        d = self.dim % t.dim()
        head, tail = t.narrow(d, 0, info.local), t.narrow(d, info.local, t.shape[d] - info.local)
        full = all_gather(head, d, group).narrow(d, 0, info.length)
        return torch.cat([full, tail], dim=d) if tail.shape[d] else full


class Count:
    """A count (int, list of ints or None) that includes the whole sharded sequence: made local."""

    def shard(self, value: Any, info: ShardInfo, kwargs: Mapping[str, Any]) -> Any:
        return info.count(value)


class Prefix:
    """A count of leading units -> how many of them this shard holds; ``item`` indexes a tuple value."""

    def __init__(self, item: int | None = None):
        self.item = item

    def shard(self, value: Any, info: ShardInfo, kwargs: Mapping[str, Any]) -> Any:
        if value is None:
            return None
        if self.item is None:
            return info.prefix(int(value))
        items = list(value)
        items[self.item] = info.prefix(int(items[self.item]))
        return type(value)(items)


Spec = Tokens | Count | Prefix | Callable[[Any, ShardInfo], Any]


@dataclass(frozen=True)
class StackPlan:
    """How one `BlockStack`'s inputs are split: ``state`` specs by position (None: replicated),
    ``kwargs`` specs by name (absent: replicated). The first `Tokens` in ``state`` defines the length."""

    state: Sequence[Tokens | None] = (Tokens(1),)
    kwargs: Mapping[str, Spec] = field(default_factory=dict)


@dataclass(frozen=True)
class SequenceParallelPlan:
    """A DiT's declaration: its self-attention head count (attribute path) and its sharded stacks."""

    heads: str
    stacks: Mapping[str, StackPlan]


def _apply(spec: Any, value: Any, info: ShardInfo, kwargs: Mapping[str, Any]) -> Any:
    if hasattr(spec, "shard"):
        return spec.shard(value, info, kwargs)
    return spec(value, info)


class SequenceParallel:
    """A `BlockStack` wrapper that runs the stack on this rank's token shard (see the module docstring)."""

    def __init__(self, plan: StackPlan, groups: Groups):
        self.plan, self.groups = plan, groups
        primary = [(i, s) for i, s in enumerate(plan.state) if isinstance(s, Tokens)]
        if not primary:
            raise ValueError("a StackPlan needs at least one Tokens spec in its state")
        self.primary = primary[0]

    def info(self, state: tuple, kwargs: Mapping[str, Any]) -> ShardInfo:
        i, spec = self.primary
        return ShardInfo(spec.total(state[i], kwargs), self.groups.layout.sp, self.groups.shard)

    def __call__(self, run: Callable[..., Any], *state: Any, **kwargs: Any) -> Any:
        if self.groups.sp is None or current() is not None:
            return run(*state, **kwargs)
        info = self.info(state, kwargs)
        specs = list(self.plan.state) + [None] * (len(state) - len(self.plan.state))
        local_state = tuple(s.shard(x, info, kwargs) if s is not None else x for s, x in zip(specs, state))
        local_kwargs = {k: _apply(self.plan.kwargs[k], v, info, kwargs) if k in self.plan.kwargs else v
                        for k, v in kwargs.items()}
        with sharded(self.groups, info):
            out = run(*local_state, **local_kwargs)
        outs = out if isinstance(out, tuple) else (out,)
        specs = list(self.plan.state) + [None] * (len(outs) - len(self.plan.state))
        outs = tuple(s.gather(o, info, self.groups.sp, kwargs) if s is not None else o
                     for s, o in zip(specs, outs))
        return outs if isinstance(out, tuple) else outs[0]


def find_plans(module: nn.Module) -> list[tuple[nn.Module, SequenceParallelPlan]]:
    """Every submodule (``module`` included) that declares a `SequenceParallelPlan`."""
    found = []
    for m in module.modules():
        plan = getattr(type(m), "sequence_parallel_plan", None)
        if isinstance(plan, SequenceParallelPlan):
            found.append((m, plan))
    return found


def plan_heads(module: nn.Module, plan: SequenceParallelPlan) -> int:
    return int(operator.attrgetter(plan.heads)(module))


def enable_sequence_parallel(modules: Mapping[str, nn.Module] | nn.Module, groups: Groups
                             ) -> list[SequenceParallel]:
    """Install a `SequenceParallel` wrapper (innermost) on every planned stack of ``modules``.

    Raises `InvalidRequestError` if no module declares a plan, or if the
    Ulysses degree does not divide a planned model's head count.
    """
    from ..cache import FirstBlockCache

    mods = modules.values() if isinstance(modules, Mapping) else [modules]
    installed = []
    for mod in mods:
        for owner, plan in find_plans(mod):
            groups.layout.check(groups.layout.world, plan_heads(owner, plan))
            for name, stack_plan in plan.stacks.items():
                stack = operator.attrgetter(name)(owner)
                if not isinstance(stack, BlockStack):
                    raise TypeError(f"{type(owner).__name__}.{name} is not a BlockStack")
                if any(isinstance(w, FirstBlockCache) for w in stack.wrappers):
                    log.warning("%s.%s has a first-block cache, which runs the blocks itself: those "
                                "blocks will run unsharded on every rank", type(owner).__name__, name)
                stack.wrappers[:] = [w for w in stack.wrappers if not isinstance(w, SequenceParallel)]
                wrapper = SequenceParallel(stack_plan, groups)
                stack.wrappers.insert(0, wrapper)
                installed.append(wrapper)
    if not installed:
        raise InvalidRequestError("this backend's denoiser declares no sequence_parallel_plan, so it cannot "
                                  "split one video's tokens; run without --ulysses/--ring")
    return installed


def disable_sequence_parallel(modules: Mapping[str, nn.Module] | nn.Module) -> None:
    mods = modules.values() if isinstance(modules, Mapping) else [modules]
    for mod in mods:
        for stack in [m for m in mod.modules() if isinstance(m, BlockStack)]:
            stack.wrappers[:] = [w for w in stack.wrappers if not isinstance(w, SequenceParallel)]
