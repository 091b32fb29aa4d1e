"""Parameterisations: turn a network's raw output into the denoised estimate samplers need.

A network is ``network(x_in, timestep, **cond)`` with ``timestep`` a ``(B,)``
tensor; it predicts one of:

- ``"eps"``: the noise; ``x0 = (x - sigma_t * eps) / alpha``;
- ``"v"``: ``v = a * eps - s * x0`` in the VP process (Salimans & Ho, 2022);
- ``"x0"``: the clean sample itself;
- ``"flow"``: the flow velocity ``eps - x0``; ``x0 = x - sigma * v``.

`Experts` picks one of several denoisers by noise level (Wan2.2 A14B).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..errors import InvalidRequestError
from .schedules import Schedule

PREDICTIONS = ("eps", "v", "x0", "flow")
Model = Callable[..., torch.Tensor]


class Denoiser:
    """A network seen as ``model(x, sigma, **cond) -> x0``; made by `wrap_network`.

    Besides the x0 call it offers the two halves, ``raw`` (the network's own
    output) and ``to_x0`` (the affine map from that output to x0), so
    `vidcore.guidance` can mix conditional and unconditional outputs in the
    network's output space, exactly as the official pipelines do (which keeps
    their latents bit-reproducible).
    """

    def __init__(self, network: Callable[..., torch.Tensor], prediction: str, schedule: Schedule) -> None:
        if prediction not in PREDICTIONS:
            raise InvalidRequestError(
                f"unknown prediction type {prediction!r}; choose one of: {', '.join(PREDICTIONS)}"
            )
        if prediction == "flow" and schedule.kind != "flow":
            raise InvalidRequestError(f"a flow-velocity network needs a flow schedule, not a {schedule.kind!r} one")
        if prediction == "v" and schedule.kind == "flow":
            raise InvalidRequestError("a v-prediction network needs a ve/vp schedule, not a flow one")
        self.network, self.prediction, self.schedule = network, prediction, schedule

    def raw(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond: Any) -> torch.Tensor:
        """The network's output at the sampler state ``x`` (vp states are scaled back to ``z = a x``)."""
        s = float(sigma)
        t = self.schedule.timestep(s).to(x.device).expand(x.shape[0])
        if self.schedule.kind == "vp":
            x = x * (1.0 / math.sqrt(1.0 + s * s))
        # a half-precision network answers in its own dtype; the sampler's state (and guidance's
        # mix of outputs) stays in the state's dtype, as the official pipelines keep fp32 latents
        return self.network(x, t, **cond).to(x.dtype)

    def to_x0(self, x: torch.Tensor, sigma: torch.Tensor | float, out: torch.Tensor) -> torch.Tensor:
        """The denoised estimate from a raw output (``x`` is the sampler state)."""
        s, kind, pred = float(sigma), self.schedule.kind, self.prediction
        if pred == "x0":
            return out
        if kind == "flow":
            if pred == "flow":
                return x - s * out  # velocity eps - x0
            return (x - s * out) / (1.0 - s)
        if pred == "eps":
            return x - s * out  # normalised state: x = x0 + sigma * eps
        a = 1.0 / math.sqrt(1.0 + s * s)  # v = a eps - s_vp x0 with z = a x, s_vp = s a
        return (a * a) * x - (s * a) * out

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond: Any) -> torch.Tensor:
        return self.to_x0(x, sigma, self.raw(x, sigma, **cond))


def wrap_network(network: Callable[..., torch.Tensor], prediction: str, schedule: Schedule) -> Denoiser:
    """``model(x, sigma, **cond) -> x0`` for a network of the given prediction type on this schedule."""
    return Denoiser(network, prediction, schedule)


class Experts:
    """Several denoisers, each for a range of noise levels, behind one ``model(x, sigma, **cond)``.

    ``experts`` is a list of ``(name, model, boundary)`` from high noise to low;
    the first whose ``boundary <= sigma`` runs (Wan2.2 A14B: the high-noise
    expert while ``t >= boundary * 1000``, i.e. ``sigma >= boundary``).
    ``on_switch(name)`` is called when the active expert changes, so a memory
    policy can move weights exactly then.
    """

    def __init__(
        self,
        experts: Sequence[tuple[str, Model, float]],
        on_switch: Callable[[str], None] | None = None,
    ) -> None:
        if not experts:
            raise InvalidRequestError("Experts needs at least one (name, model, boundary)")
        bounds = [float(b) for _, _, b in experts]
        if bounds != sorted(bounds, reverse=True):
            raise InvalidRequestError(f"experts must be listed from high noise to low; boundaries were {bounds}")
        self.experts = [(n, m, float(b)) for n, m, b in experts]
        self.on_switch = on_switch
        self.active: str | None = None

    def _pick(self, sigma: float) -> tuple[str, Model]:
        for name, model, boundary in self.experts:
            if sigma >= boundary:
                return name, model
        name, model, _ = self.experts[-1]
        return name, model

    def expert_for(self, sigma: torch.Tensor | float) -> str:
        return self._pick(float(sigma))[0]

    def _activate(self, sigma: torch.Tensor | float) -> Model:
        name, model = self._pick(float(sigma))
        if name != self.active:
            self.active = name
            if self.on_switch is not None:
                self.on_switch(name)
        return model

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond: Any) -> torch.Tensor:
        return self._activate(sigma)(x, sigma, **cond)

    @property
    def has_raw(self) -> bool:
        """True when every expert exposes ``raw``/``to_x0`` (all made by `wrap_network`)."""
        return all(hasattr(m, "raw") and hasattr(m, "to_x0") for _, m, _ in self.experts)

    def raw(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond: Any) -> torch.Tensor:
        return self._activate(sigma).raw(x, sigma, **cond)

    def to_x0(self, x: torch.Tensor, sigma: torch.Tensor | float, out: torch.Tensor) -> torch.Tensor:
        return self._pick(float(sigma))[1].to_x0(x, sigma, out)
