"""Step caching: skip a DiT's block stack on denoising steps where its input barely changed.

Across the steps of a diffusion sampler the blocks' net effect ``out - in``
(the residual) changes slowly for long stretches, so it can be reused:

- ``teacache`` (after TeaCache, Liu et al. 2024): at each call compare a
  signal with the previous call's: by default the stack's input, or what the
  backend supplies (``signal(state, kwargs)``, e.g. the timestep-modulated
  input). The relative L1 change, optionally rescaled by a polynomial fitted
  per model (``coefficients``, highest power first), accumulates; while the sum
  stays under ``threshold`` the stack is skipped and ``in + cached residual``
  returned; when it crosses, the stack runs, the residual is refreshed and the
  sum restarts from zero.
- ``first-block`` (first-block cache, as in ParaAttention's FBCache): run block
  0 every time and compare its residual with the one from the last full run;
  under ``threshold`` the remaining blocks are skipped and their cached
  residual added to block 0's output.

Works on any model whose repeated blocks live in a `vidcore.nn.BlockStack`:
the cache is one of the stack's ``wrappers``. Off by default. Threshold 0
never skips and gives bit-identical outputs.

State is per generation: the pipeline calls `reset_step_caches` on each
denoiser at the start of a run (it returns the previous run's counts). State
is also per guidance pass (`vidcore.passes`): when guidance runs the
conditional and unconditional inputs as separate calls on the same stack, each
pass compares with its own previous call, as TeaCache does; a batched pair or
a lone conditional pass is one state. Guidance says which pass is running, so
the cache never has to be told how the loop batches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import InvalidRequestError, UnknownNameError
from .nn.blocks import BlockStack, block_stacks
from .passes import current_pass

log = logging.getLogger(__name__)

SignalFn = Callable[[tuple, dict], torch.Tensor]
KINDS = ("teacache", "first-block")


def relative_l1(new: torch.Tensor, old: torch.Tensor) -> float:
    """mean|new - old| / mean|old|, in float32 (one host sync)."""
    new, old = new.float(), old.float()
    return ((new - old).abs().mean() / old.abs().mean().clamp_min(1e-12)).item()


def _as_tuple(out: Any) -> tuple:
    return out if isinstance(out, tuple) else (out,)


def _unwrap(state: tuple) -> Any:
    return state[0] if len(state) == 1 else state


def _clone(state: tuple) -> tuple:
    """Copies of the tensors (blocks may update their input in place, e.g. a residual add with out=x)."""
    return tuple(s.detach().clone() if isinstance(s, torch.Tensor) else s for s in state)


def _residual(out: tuple, inp: tuple) -> tuple | None:
    """out - in for each tensor of the state; None if the state's tensors do not map one to one."""
    if len(out) != len(inp):
        return None
    res = []
    for o, i in zip(out, inp):
        if isinstance(o, torch.Tensor) and isinstance(i, torch.Tensor) and o.shape == i.shape:
            res.append(o.detach() - i)
        elif isinstance(o, torch.Tensor) or isinstance(i, torch.Tensor):
            return None
        else:
            res.append(None)
    return tuple(res)


def _apply(state: tuple, residual: tuple) -> tuple:
    return tuple(s + r if r is not None else s for s, r in zip(state, residual))


def _run_blocks(blocks: Sequence[nn.Module], state: tuple, kwargs: dict) -> tuple:
    """The blocks in order, as `BlockStack.run_plain` runs them (a tuple output becomes the next state)."""
    for block in blocks:
        state = _as_tuple(block(*state, **kwargs))
    return state


@dataclass
class _Stream:
    calls: int = 0
    signal: torch.Tensor | None = None  # teacache: previous signal
    accumulated: float = 0.0
    residual: tuple | None = None  # teacache: stack residual; first-block: residual of blocks 1..n
    first_residual: torch.Tensor | None = None  # first-block: block 0's residual at the last full run


@dataclass
class CacheStats:
    calls: int = 0
    computed: int = 0
    skipped: int = 0
    changes: list[float] = field(default_factory=list)  # the measured change at each call after the first

    def as_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "computed": self.computed, "skipped": self.skipped}


class StepCache:
    """A `BlockStack` wrapper that skips work between denoising steps (see the module docstring)."""

    kind = ""

    def __init__(self, stack: BlockStack, threshold: float, *, signal: SignalFn | None = None,
                 coefficients: Sequence[float] | None = None, warmup: int = 1):
        if threshold < 0 or warmup < 1:
            raise InvalidRequestError(f"step cache needs threshold >= 0 and warmup >= 1 (got {threshold}, {warmup})")
        self.stack = stack
        self.threshold = float(threshold)
        self.signal_fn = signal
        self.coefficients = list(coefficients) if coefficients is not None else None
        self.warmup = warmup
        self.reset()

    def reset(self) -> dict[str, Any]:
        """Forget every cached tensor and count (start of a generation); returns the counts so far."""
        previous = getattr(self, "stats", None)
        self._states: dict[str, _Stream] = {}
        self.stats = CacheStats()
        return previous.as_dict() if previous is not None else CacheStats().as_dict()

    def _stream(self) -> _Stream:
        st = self._states.setdefault(current_pass(), _Stream())  # one state per guidance pass
        st.calls += 1
        return st

    def _rescale(self, change: float) -> float:
        if not self.coefficients:
            return change
        out = 0.0
        for c in self.coefficients:  # Horner, highest power first
            out = out * change + c
        return out

    def __call__(self, run: Callable[..., Any], *state: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement StepCache.__call__")


class TeaCache(StepCache):
    kind = "teacache"

    def __call__(self, run: Callable[..., Any], *state: Any, **kwargs: Any) -> Any:
        st = self._stream()
        self.stats.calls += 1
        signal = self.signal_fn(state, kwargs) if self.signal_fn is not None else state[0]
        skip = False
        if st.signal is not None and st.residual is not None and st.calls > self.warmup:
            change = self._rescale(relative_l1(signal, st.signal))
            self.stats.changes.append(change)
            st.accumulated += change
            skip = st.accumulated < self.threshold
        st.signal = signal.detach().clone()
        if skip:
            self.stats.skipped += 1
            return _unwrap(_apply(state, st.residual))
        st.accumulated = 0.0
        before = _clone(state)
        out = _as_tuple(run(*state, **kwargs))
        st.residual = _residual(out, before)
        self.stats.computed += 1
        return _unwrap(out)


class FirstBlockCache(StepCache):
    kind = "first-block"

    def __call__(self, run: Callable[..., Any], *state: Any, **kwargs: Any) -> Any:
        st = self._stream()
        self.stats.calls += 1
        before = state[0].detach().clone() if isinstance(state[0], torch.Tensor) else None
        first = _run_blocks([self.stack[0]], state, kwargs)
        if before is None or not isinstance(first[0], torch.Tensor) or first[0].shape != before.shape:
            self.stats.computed += 1  # nothing comparable: always run the rest
            return _unwrap(_run_blocks(list(self.stack)[1:], first, kwargs))
        first_residual = first[0].detach() - before
        if st.first_residual is not None and st.residual is not None and st.calls > self.warmup:
            change = self._rescale(relative_l1(first_residual, st.first_residual))
            self.stats.changes.append(change)
            if change < self.threshold:
                self.stats.skipped += 1
                return _unwrap(_apply(first, st.residual))
        after_first = _clone(first)
        out = _run_blocks(list(self.stack)[1:], first, kwargs)
        st.residual = _residual(out, after_first)
        st.first_residual = first_residual
        self.stats.computed += 1
        return _unwrap(out)


_CLASSES: dict[str, type[StepCache]] = {"teacache": TeaCache, "first-block": FirstBlockCache}


def enable_step_cache(module: nn.Module, kind: str = "teacache", threshold: float = 0.1, *,
                      signal: SignalFn | None = None, coefficients: Sequence[float] | None = None,
                      warmup: int = 1, stacks: Sequence[int] | None = None) -> list[StepCache]:
    """Install a step cache on each `BlockStack` in ``module`` (or those at indices ``stacks``).

    Replaces a step cache installed before; returns the new caches (their
    ``stats`` count calls, computed and skipped steps).
    """
    if kind not in _CLASSES:
        raise UnknownNameError("step cache", kind, KINDS)
    found = block_stacks(module)
    if not found:
        raise InvalidRequestError(
            f"{type(module).__name__} has no BlockStack, so it cannot be step-cached; "
            f"keep the model's repeated blocks in vidcore.nn.BlockStack"
        )
    chosen = found if stacks is None else [found[i] for i in stacks]
    disable_step_cache(module)
    caches = []
    for stack in chosen:
        if kind == "first-block" and len(stack) < 2:
            continue
        if kind == "first-block" and stack.wrappers:
            log.warning("first-block cache runs the blocks itself: wrappers installed before it are bypassed")
        cache = _CLASSES[kind](stack, threshold, signal=signal, coefficients=coefficients, warmup=warmup)
        stack.wrappers.append(cache)
        caches.append(cache)
    return caches


def step_caches(module: nn.Module) -> list[StepCache]:
    """The step caches installed in ``module``'s block stacks."""
    return [w for s in block_stacks(module) for w in s.wrappers if isinstance(w, StepCache)]


def reset_step_caches(module: nn.Module) -> list[dict[str, Any]]:
    """Start of a generation: clear cached tensors and counts; returns the previous run's counts."""
    out = []
    for cache in step_caches(module):
        stats = cache.reset()
        if stats["calls"]:
            log.info("step cache %s: %d of %d calls skipped", cache.kind, stats["skipped"], stats["calls"])
        out.append(stats)
    return out


def disable_step_cache(module: nn.Module) -> None:
    """Remove every step cache from ``module``'s block stacks (other wrappers stay)."""
    for stack in block_stacks(module):
        stack.wrappers[:] = [w for w in stack.wrappers if not isinstance(w, StepCache)]
