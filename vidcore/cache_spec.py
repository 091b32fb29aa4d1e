"""A request's step cache: ``--cache teacache:0.2`` / ``first-block:0.1``, checked, recorded and installed.

The spec is part of the request (``Request.cache``: ``{"kind": ..., "threshold": ...}``
or None), so it goes into the run record and ``--from-record`` replays it. At
run time `apply_step_cache` installs it on each denoiser with the settings the
backend publishes for that model (`vidcore.Backend.step_cache_options`: the
polynomial TeaCache fitted per model, the signal it was fitted on, warmup
steps), or removes a cache an earlier request installed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from .cache import (
    KINDS,
    StepCache,
    _apply,
    _as_tuple,
    _clone,
    _residual,
    _unwrap,
    disable_step_cache,
    enable_step_cache,
    step_caches,
)
from .errors import InvalidRequestError
from .nn.blocks import block_stacks

log = logging.getLogger(__name__)
MAX_THRESHOLD = 10.0
_HOW = "give KIND:THRESHOLD, e.g. teacache:0.2 or first-block:0.1 (or none)"


def check_cache_spec(spec: Any) -> dict[str, Any] | None:
    """A step-cache spec as ``{"kind", "threshold"}`` (from ``"KIND:THRESHOLD"`` or a mapping); None for none."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none", "off")):
        return None
    if isinstance(spec, str):
        kind, sep, value = spec.strip().partition(":")
        if not sep:
            raise InvalidRequestError(f"step cache {spec!r} has no threshold; {_HOW}")
        try:
            threshold = float(value)
        except ValueError:
            raise InvalidRequestError(f"step cache {spec!r}: threshold {value!r} is not a number; {_HOW}") from None
    elif isinstance(spec, Mapping):
        extra = sorted(set(spec) - {"kind", "threshold"})
        if extra or "kind" not in spec or "threshold" not in spec:
            raise InvalidRequestError(f"step cache {dict(spec)!r} must have exactly 'kind' and 'threshold'; {_HOW}")
        kind, threshold = spec["kind"], spec["threshold"]
    else:
        raise InvalidRequestError(f"step cache must be a string or a mapping; got {spec!r}; {_HOW}")
    if kind not in KINDS:
        raise InvalidRequestError(f"unknown step cache {kind!r}; use one of: {', '.join(KINDS)} ({_HOW})")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold) \
            or not 0 <= threshold <= MAX_THRESHOLD:
        raise InvalidRequestError(f"step cache threshold must be a number from 0 to {MAX_THRESHOLD:g}; got "
                                  f"{threshold!r} ({_HOW})")
    return {"kind": kind, "threshold": float(threshold)}


class LinkedCache(StepCache):
    """A later block stack that skips exactly when the first stack's cache skipped in the same network call.

    With several stacks (HunyuanVideo's double- then single-stream blocks) this makes one decision
    per call, as TeaCache skips the whole model; each stack still reuses its own residual.
    """

    kind = "linked"

    def __init__(self, stack, leader: StepCache):
        self.leader = leader
        super().__init__(stack, 0.0)

    def reset(self) -> dict[str, Any]:
        self._seen = (0, 0)
        return super().reset()

    def __call__(self, run, *state: Any, **kwargs: Any) -> Any:
        st = self._stream()
        self.stats.calls += 1
        now = (self.leader.stats.calls, self.leader.stats.skipped)
        skipped = now[0] > self._seen[0] and now[1] > self._seen[1]
        self._seen = now
        if skipped and st.residual is not None:
            self.stats.skipped += 1
            return _unwrap(_apply(state, st.residual))
        before = _clone(state)
        out = _as_tuple(run(*state, **kwargs))
        st.residual = _residual(out, before)
        self.stats.computed += 1
        return _unwrap(out)


def _from_request(module: nn.Module) -> list[StepCache]:
    return [c for c in step_caches(module) if getattr(c, "from_request", False)]


def apply_step_cache(backend: Any, components: Mapping[str, nn.Module], denoisers: Iterable[str],
                     request: Any) -> dict[str, dict[str, Any]]:
    """Install ``request.cache`` on each denoiser component (or remove what a previous request installed).

    Caches installed by hand with `vidcore.cache.enable_step_cache` are left alone when the request
    has no cache. Returns, per component, what was installed (kind, threshold, coefficients, source).
    """
    spec = check_cache_spec(getattr(request, "cache", None))
    report: dict[str, dict[str, Any]] = {}
    for comp in dict.fromkeys(denoisers):
        module = components[comp]
        if spec is None:
            if _from_request(module):
                disable_step_cache(module)
            continue
        options = dict(backend.step_cache_options(comp, module, spec["kind"], request))
        source = options.pop("source", None)
        linked = bool(options.pop("linked", False))
        if linked and options.get("stacks") is None:
            options["stacks"] = [0]
        caches = enable_step_cache(module, spec["kind"], spec["threshold"], **options)
        if linked and caches:
            leader, stacks = caches[0], block_stacks(module)
            for stack in stacks:
                if stack is not leader.stack and not any(isinstance(w, StepCache) for w in stack.wrappers):
                    follower = LinkedCache(stack, leader)
                    stack.wrappers.append(follower)
                    caches.append(follower)
        for cache in caches:
            cache.from_request = True
        report[comp] = {**spec, "coefficients": options.get("coefficients"), "source": source}
        log.info("step cache %s:%g on %s (%s)", spec["kind"], spec["threshold"], comp,
                 source or "no published coefficients; the unscaled change")
    return report
