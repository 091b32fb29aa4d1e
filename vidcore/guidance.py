"""Guidance as a model wrapper: samplers never see it.

`Guidance(...).wrap(model, cond, uncond, schedule)` returns ``guided(x, sigma)``
that mixes the conditional and unconditional denoised estimates:

- classifier-free guidance ``uncond + s * (cond - uncond)`` (negative prompts are
  just another ``uncond``); the unconditional pass is skipped when there is no
  ``uncond``, when the scale is 1 or when sigma is outside ``interval``;
- the mixing happens in the network's own output space (eps, v or flow
  velocity) when the model offers it (`wrap_network` models and `Experts` of
  them do: ``raw`` + ``to_x0``), as the official pipelines mix; otherwise on x0.
  CFG is affine, so only round-off differs, but that is what keeps a backend's
  latents bit-identical to the official code;
- ``rescale`` (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample
  Steps are Flawed", sec. 3.4) matches the guided output's per-sample std to
  the conditional one's, in that same space (diffusers' ``rescale_noise_cfg``);
- ``per_step`` scales (indexed by the step whose sigma the call is at), and a
  Mapping scale keyed by expert name (``model.expert_for(sigma)``, Wan2.2 A14B);
- ``embedded`` (distilled) guidance, passed to the model as a ``(B,)`` float32
  tensor under ``embedded_key`` (HunyuanVideo; the network applies its own
  factor such as x1000);
- ``batched``: one call on ``cat([x, x])`` with every tensor input concatenated
  (the default), or two calls when a memory policy asks for less peak memory.
  The two give identical results for a batch-independent network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .errors import InvalidRequestError
from .passes import running_pass
from .sampling.schedules import Schedule

Model = Callable[..., torch.Tensor]


class Guidance:
    """How to combine the conditional and unconditional passes; `wrap` applies it to a model."""

    def __init__(
        self,
        scale: float | Mapping[str, float] = 1.0,
        rescale: float = 0.0,
        interval: tuple[float, float] | None = None,
        per_step: Sequence[float] | None = None,
        embedded: float | None = None,
        embedded_key: str = "guidance",
        batched: bool = True,
    ) -> None:
        if not 0.0 <= rescale <= 1.0:
            raise InvalidRequestError(f"guidance rescale must be in [0, 1], got {rescale}")
        if interval is not None:
            lo, hi = (float(v) for v in interval)
            if lo > hi:
                raise InvalidRequestError(f"guidance interval must be (low sigma, high sigma), got {interval}")
            interval = (lo, hi)
        if per_step is not None and isinstance(scale, Mapping):
            raise InvalidRequestError("give per-step scales or per-expert scales, not both")
        self.scale, self.rescale, self.interval = scale, float(rescale), interval
        self.per_step = None if per_step is None else [float(s) for s in per_step]
        self.embedded, self.embedded_key, self.batched = embedded, embedded_key, bool(batched)

    def scale_at(self, model: Any, sigma: float, schedule: Schedule) -> float:
        """The CFG scale that applies at noise level ``sigma``."""
        if self.interval is not None and not (self.interval[0] <= sigma <= self.interval[1]):
            return 1.0
        if self.per_step is not None:
            i = schedule.step_of(sigma)
            return self.per_step[min(i, len(self.per_step) - 1)]
        if isinstance(self.scale, Mapping):
            if not hasattr(model, "expert_for"):
                raise InvalidRequestError("per-expert guidance scales need a model made of Experts")
            name = model.expert_for(sigma)
            if name not in self.scale:
                raise InvalidRequestError(f"no guidance scale for expert {name!r}; scales given: {dict(self.scale)}")
            return float(self.scale[name])
        return float(self.scale)

    def wrap(self, model: Model, cond: dict[str, Any], uncond: dict[str, Any] | None, schedule: Schedule) -> Model:
        """``guided(x, sigma) -> x0``, guidance applied; exposes ``expert_for`` when ``model`` does."""
        cond, uncond = dict(cond or {}), None if uncond is None else dict(uncond)

        def with_embedded(x: torch.Tensor, c: dict[str, Any]) -> dict[str, Any]:
            if self.embedded is None:
                return c
            g = torch.full((x.shape[0],), float(self.embedded), dtype=torch.float32, device=x.device)
            return {**c, self.embedded_key: g}

        use_raw = bool(getattr(model, "has_raw", hasattr(model, "raw") and hasattr(model, "to_x0")))
        call = model.raw if use_raw else model

        def guided(x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
            scale = self.scale_at(model, float(sigma), schedule)
            if uncond is None or scale == 1.0:
                with running_pass("cond"):
                    return model(x, sigma, **with_embedded(x, cond))
            pair = None
            if self.batched:
                with running_pass("both"):
                    pair = _batched_pair(call, x, sigma, cond, uncond, with_embedded)
            if pair is None:
                with running_pass("cond"):
                    out_cond = call(x, sigma, **with_embedded(x, cond))
                with running_pass("uncond"):
                    pair = (out_cond, call(x, sigma, **with_embedded(x, uncond)))
            out_cond, out_uncond = pair
            out = out_uncond + scale * (out_cond - out_uncond)
            if self.rescale > 0:
                out = _rescale(out, out_cond, self.rescale)
            return model.to_x0(x, sigma, out) if use_raw else out

        if hasattr(model, "expert_for"):
            guided.expert_for = model.expert_for  # type: ignore[attr-defined]
        guided.guidance = self  # type: ignore[attr-defined]
        return guided

    def __repr__(self) -> str:
        return (f"Guidance(scale={self.scale!r}, rescale={self.rescale}, interval={self.interval}, "
                f"per_step={self.per_step}, embedded={self.embedded}, batched={self.batched})")


def _batched_pair(model, x, sigma, cond, uncond, with_embedded):
    """Run cond and uncond as one batch; None when their inputs cannot be concatenated."""
    c, u = with_embedded(x, cond), with_embedded(x, uncond)
    if set(c) != set(u):
        return None
    merged: dict[str, Any] = {}
    for key, cv in c.items():
        uv = u[key]
        if isinstance(cv, torch.Tensor) and isinstance(uv, torch.Tensor):
            if cv.shape != uv.shape or cv.dtype != uv.dtype or cv.device != uv.device or cv.dim() == 0:
                return None
            merged[key] = torch.cat([cv, uv], dim=0)
        elif isinstance(cv, torch.Tensor) or isinstance(uv, torch.Tensor) or cv != uv:
            return None
        else:
            merged[key] = cv
    out = model(torch.cat([x, x], dim=0), sigma, **merged)
    return out.chunk(2, dim=0) if out.shape[0] == 2 * x.shape[0] else None


def _rescale(out: torch.Tensor, out_cond: torch.Tensor, phi: float) -> torch.Tensor:
    """Match the guided output's per-sample std to the conditional output's, blended by ``phi``."""
    dims = list(range(1, out.dim()))
    rescaled = out * (out_cond.std(dim=dims, keepdim=True) / out.std(dim=dims, keepdim=True))
    return phi * rescaled + (1 - phi) * out
