"""Schedules: the grids are the reference grids, and the Scheduler front door fails early and clearly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vidcore.errors import InvalidRequestError, UnknownNameError
from vidcore.sampling import Schedule, Scheduler
from vidcore.sampling.schedules import alphas_cumprod, shift_sigma


def test_names_and_errors():
    assert {"ddpm", "karras", "flow"} <= set(Scheduler.names())
    with pytest.raises(UnknownNameError, match="unknown schedule 'nope'; choose one of: ddpm"):
        Scheduler("nope")
    with pytest.raises(InvalidRequestError) as err:
        Scheduler("karras", sigma_mn=0.1)
    assert "sigma_mn" in str(err.value) and "sigma_min" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InvalidRequestError, match="positive integer"):
        Scheduler("ddpm")(0)
    with pytest.raises(InvalidRequestError, match="beta_schedule"):
        Scheduler("ddpm", beta_schedule="quadratic")(10)
    with pytest.raises(InvalidRequestError, match="spacing"):
        Scheduler("ddpm", spacing="middle")(10)
    with pytest.raises(InvalidRequestError, match="sigma_min < sigma_max"):
        Scheduler("karras", kind="ve", sigma_min=2.0, sigma_max=1.0)(10)
    with pytest.raises(InvalidRequestError, match="grid"):
        Scheduler("flow", grid="middle")(10)


@pytest.mark.parametrize("name,opts", [
    ("ddpm", {}), ("ddpm", {"spacing": "trailing", "beta_schedule": "cosine"}), ("karras", {}),
    ("karras", {"kind": "ve"}), ("flow", {"shift": 3.0}), ("flow", {"grid": "dpm"}),
    ("flow", {"grid": "linspace", "shift": 7.0}),
])
@pytest.mark.parametrize("steps", [1, 2, 13])
def test_every_schedule_is_a_descending_float64_ladder_ending_at_zero(name, opts, steps):
    assert_ladder(name, opts, steps)


def test_every_registered_schedule_keeps_the_contract():
    """Plugins' schedules too (whatever is installed), at their defaults."""
    for name in Scheduler.names():
        for steps in (1, 2, 13):
            assert_ladder(name, {}, steps)


def assert_ladder(name, opts, steps):
    s = Scheduler(name, **opts)(steps)
    assert s.sigmas.dtype == torch.float64 and s.sigmas.device.type == "cpu"
    assert len(s.sigmas) == steps + 1 and len(s.timesteps) == steps
    assert bool((s.sigmas[:-1] > s.sigmas[1:]).all()) and s.sigmas[-1].item() == 0.0
    assert s.name == name and s.options == opts
    for i in range(steps):  # the grid's own timestep comes back exactly
        t = s.timestep(s.sigmas[i])
        assert t.dtype == s.timesteps.dtype and t.item() == s.timesteps[i].item()


@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_alphas_cumprod_match_diffusers(beta_schedule):
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDPMScheduler(beta_schedule=beta_schedule).alphas_cumprod
    assert torch.equal(alphas_cumprod(beta_schedule, 1000, 0.0001, 0.02), ref)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [7, 10, 50])
def test_ddpm_spacing_matches_ddim_scheduler(spacing, steps):
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDIMScheduler(timestep_spacing=spacing, steps_offset=1 if spacing == "leading" else 0)
    ref.set_timesteps(steps)
    ours = Scheduler("ddpm", spacing=spacing, steps_offset=1 if spacing == "leading" else 0)(steps)
    assert torch.equal(ours.timesteps, ref.timesteps)
    acp = ref.alphas_cumprod[ours.timesteps]
    assert torch.allclose(ours.sigmas[:-1], ((1 - acp) / acp).double() ** 0.5, rtol=1e-6)


def test_karras_formula():
    s = Scheduler("karras", kind="ve", sigma_min=0.01, sigma_max=50.0, rho=5.0)(9)
    sig = s.sigmas[:-1].numpy()
    assert sig[0] == pytest.approx(50.0) and sig[-1] == pytest.approx(0.01)
    roots = sig ** (1 / 5.0)
    assert np.allclose(np.diff(roots), np.diff(roots)[0])  # sigma^(1/rho) is evenly spaced
    assert s.kind == "ve" and torch.allclose(s.timesteps.double(), 0.25 * torch.log(s.sigmas[:-1]), atol=1e-6)


@pytest.mark.parametrize("steps", [1, 10, 50])
@pytest.mark.parametrize("shift", [1.0, 7.0])
def test_uniform_flow_grid(steps, shift):
    s = Scheduler("flow", shift=shift, grid="linspace")(steps)
    ref = shift_sigma(torch.linspace(1, 0, steps + 1), shift)  # computed in float32
    assert torch.equal(s.sigmas, ref.double()) and s.sigmas[0].item() == 1.0
    assert s.timesteps.dtype == torch.float32 and torch.equal(s.timesteps, ref[:-1] * 1000)


def test_schedule_helpers():
    s = Scheduler("ddpm", spacing="trailing")(10)
    assert s.kind == "vp" and s.steps == len(s) == 10
    z = torch.randn(3, 4)
    assert torch.allclose(s.prior(z), z * math.sqrt(1 + s.sigmas[0].item() ** 2))
    assert s.index(s.sigmas[3]) == 3 and s.index(0.123456) is None
    assert s.step_of(s.sigmas[4]) == 4 and s.step_of((s.sigmas[4] + s.sigmas[5]) / 2) == 4
    # off-grid timesteps interpolate in log-sigma between training steps, monotonically
    mid = math.sqrt(s.sigmas[2].item() * s.sigmas[3].item())
    assert s.timesteps[3].item() < s.timestep(mid).item() < s.timesteps[2].item()
    f = Scheduler("flow", shift=3.0)(8)
    assert f.alpha_sigma(0.25) == (0.75, 0.25) and torch.equal(f.prior(z), z)
    k = Scheduler("karras", kind="ve")(5)
    assert torch.allclose(k.prior(z), z * 80.0)
    with pytest.raises(InvalidRequestError, match="kind"):
        Schedule(torch.tensor([1.0, 0.0]), "edm", torch.tensor([1.0]))
