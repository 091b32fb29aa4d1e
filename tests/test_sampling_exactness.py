"""Exactness without a trained model: Gaussian data has a closed-form denoiser and ODE endpoint.

For data x0 ~ N(mu, s^2) (elementwise) and a state x = a x0 + t eps:

- the exact denoiser is ``E[x0 | x] = mu + a s^2 / (a^2 s^2 + t^2) * (x - a mu)``;
- the probability-flow ODE keeps ``(x - a mu) / sqrt(a^2 s^2 + t^2)`` constant, so
  from x at the first grid point its endpoint is ``mu + s * (x - a mu) / sqrt(a^2 s^2 + t^2)``.

Deterministic samplers must converge to that endpoint at their claimed order
(slope of log error vs log steps); stochastic ones must produce the data's
mean and variance within a tolerance that shrinks with steps and sample count.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vidcore.sampling import Sampler, Schedule, Scheduler


def gaussian_denoiser(mu: float, s: float, schedule: Schedule):
    def model(x, sigma):
        a, t = schedule.alpha_sigma(sigma)
        return mu + (a * s * s / (a * a * s * s + t * t)) * (x - a * mu)

    return model


def ode_endpoint(x, mu: float, s: float, schedule: Schedule):
    a, t = schedule.alpha_sigma(schedule.sigmas[0])
    return mu + s * (x - a * mu) / math.sqrt(a * a * s * s + t * t)


def karras_ladder(steps: int, kind: str) -> Schedule:
    """A Karras ladder (rho 7, 1e-3..80) in any kind; flow uses t = sigma / (1 + sigma), the same log-SNR."""
    ve = Scheduler("karras", kind="ve", sigma_min=1e-3, sigma_max=80.0)(steps)
    if kind == "ve":
        return ve
    sig = ve.sigmas if kind == "vp" else ve.sigmas / (1 + ve.sigmas)
    return Schedule(sig, kind, ve.timesteps)


# sampler -> (low, high) bounds on the fitted order. UniPC-2 with its corrector (UniC) is order 3.
ORDERS = {
    "euler": (0.9, 1.15),
    "ddim": (0.9, 1.15),
    "heun": (1.85, 2.4),
    "dpmpp_2m": (1.9, 2.4),
    "unipc": (2.5, 3.6),
}


@settings(max_examples=5, deadline=None, derandomize=True)
@given(
    mu=st.floats(-3, 3),
    s=st.floats(0.3, 3.0),
    n0=st.integers(14, 20),
    kind=st.sampled_from(["ve", "vp", "flow"]),
    shape=st.sampled_from([(16,), (2, 3, 4)]),
)
def test_deterministic_samplers_converge_at_their_order(mu, s, n0, kind, shape):
    steps = [n0, 2 * n0, 4 * n0]
    noise = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(n0))
    for name, (lo, hi) in ORDERS.items():
        errors = []
        for n in steps:
            schedule = karras_ladder(n, kind)
            x = schedule.prior(noise)
            out = Sampler.get(name)(gaussian_denoiser(mu, s, schedule), x, schedule)
            errors.append((out - ode_endpoint(x, mu, s, schedule)).abs().max().item() / s)
        order = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
        assert lo <= order <= hi, f"{name} on {kind}: fitted order {order:.2f} not in [{lo}, {hi}] ({errors})"


@pytest.mark.parametrize("shift", [1.0, 5.0])
def test_flow_euler_and_heun_orders_on_official_flow_grid(shift):
    """Euler/Heun in flow time keep their order on the uniform flow grid (HunyuanVideo's), which starts at pure
    noise (t = 1)."""
    mu, s = 0.4, 1.7
    noise = torch.randn(32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for name, (lo, hi) in [("flow_euler", (0.85, 1.25)), ("heun", (1.8, 2.6))]:
        steps, errors = [12, 24, 48], []
        for n in steps:
            schedule = Scheduler("flow", shift=shift, grid="linspace")(n)
            x = schedule.prior(noise)
            out = Sampler.get(name)(gaussian_denoiser(mu, s, schedule), x, schedule)
            errors.append((out - ode_endpoint(x, mu, s, schedule)).abs().max().item())
        order = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
        assert lo <= order <= hi, (name, order, errors)


def test_many_steps_reach_the_exact_endpoint():
    """Absolute check, not just a slope: 200 UniPC steps land within 1e-4 of the closed form (x starts near 100)."""
    mu, s = -1.2, 0.6
    schedule = karras_ladder(200, "vp")
    x = schedule.prior(torch.randn(64, dtype=torch.float64, generator=torch.Generator().manual_seed(5)))
    out = Sampler.get("unipc")(gaussian_denoiser(mu, s, schedule), x, schedule)
    assert (out - ode_endpoint(x, mu, s, schedule)).abs().max().item() < 1e-4


STOCHASTIC = [("ddpm", {}), ("ddim", {"eta": 1.0}), ("euler", {"s_churn": 10.0}), ("heun", {"s_churn": 10.0})]
SCHEDULES = {
    "vp": lambda n: Scheduler("ddpm", spacing="trailing")(n),
    "ve": lambda n: Scheduler("karras", kind="ve", sigma_min=1e-3, sigma_max=80.0)(n),
    "flow": lambda n: Scheduler("flow", shift=3.0, grid="linspace")(n),
}


@settings(max_examples=3, deadline=None, derandomize=True)
@given(mu=st.floats(-2, 2), s=st.floats(0.3, 2.5), seed=st.integers(0, 2**16), kind=st.sampled_from(list(SCHEDULES)))
def test_stochastic_samplers_match_data_moments(mu, s, seed, kind):
    """Mean/variance within 5 standard errors plus a discretisation allowance that shrinks with steps."""
    for name, opts in STOCHASTIC:
        for n, count in [(12, 2000), (48, 8000)]:
            schedule = SCHEDULES[kind](n)
            gen = torch.Generator().manual_seed(seed)
            x = schedule.prior(torch.randn(count, dtype=torch.float64, generator=gen))
            out = Sampler.get(name)(gaussian_denoiser(mu, s, schedule), x, schedule, generator=gen, **opts)
            mean_err = abs(out.mean().item() - mu) / s
            var_err = abs(out.var().item() / (s * s) - 1)
            assert mean_err <= 5 / math.sqrt(count) + 0.5 / n, (name, kind, n, mean_err)
            assert var_err <= 5 * math.sqrt(2 / count) + 2.5 / math.sqrt(n), (name, kind, n, var_err)


@pytest.mark.parametrize("name,opts", STOCHASTIC)
def test_stochastic_samplers_use_their_noise(name, opts):
    """The extra noise is really drawn (seed changes the result) and seeded (same seed, same result)."""
    schedule = SCHEDULES["vp"](10)
    x = schedule.prior(torch.randn(256, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    model = gaussian_denoiser(0.3, 1.1, schedule)

    def run(seed):
        return Sampler.get(name)(model, x.clone(), schedule, generator=torch.Generator().manual_seed(seed), **opts)

    assert torch.equal(run(1), run(1))
    assert not torch.allclose(run(1), run(2))
