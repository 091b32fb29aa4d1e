"""Parity with diffusers' schedulers: same smooth random network, same noise, same trajectory.

diffusers is the oracle here (test-only). Each case runs the diffusers scheduler
loop and our sampler on the same network and starting noise and compares every
step's sample (converted to diffusers' coordinates) to <= 1e-5 of the sample's
scale. The grids themselves are compared too where we build the same grid.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from vidcore.sampling import Sampler, Schedule, Scheduler, wrap_network  # noqa: E402

SHAPE = (2, 3, 8)
SCALED = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


class SmoothNet:
    """A fixed random smooth function of (x, t): not a constant, not linear, depends on t."""

    def __init__(self, seed: int = 0, dim: int = SHAPE[-1]):
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(dim, dim, generator=g, dtype=torch.float64) / math.sqrt(dim)
        self.b = torch.randn(dim, generator=g, dtype=torch.float64)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = (t.to(torch.float64) / 1000.0).reshape(-1, *[1] * (x.dim() - 1))
        h = x.to(torch.float64)
        out = 0.6 * torch.tanh(h @ self.w + self.b * tt) + 0.3 * h * torch.cos(2 * tt) + 0.2 * torch.sin(3 * tt)
        return out.to(x.dtype)


def noise(seed: int = 1) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))


def run_diffusers(sched, net, x, generator=None, **step_kwargs):
    """The diffusers loop; returns the sample after every scheduler.step call."""
    out = []
    kw = dict(step_kwargs) if generator is None else {"generator": generator, **step_kwargs}
    for t in sched.timesteps:
        inp = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
        pred = net(inp, t.reshape(1).expand(x.shape[0]))
        x = sched.step(pred, t, x, **kw).prev_sample
        out.append(x)
    return out


def run_ours(sampler, net, prediction, schedule, x, generator=None, **opts):
    traj = []
    final = Sampler.get(sampler)(wrap_network(net, prediction, schedule), x, schedule,
                                 callback=lambda d: traj.append(d["x"]), generator=generator, **opts)
    assert torch.equal(final, traj[-1])
    return traj


def assert_close(ours, ref, what=""):
    assert len(ours) == len(ref), what
    scale = max(1.0, max(r.abs().max().item() for r in ref))
    for i, (o, r) in enumerate(zip(ours, ref)):
        err = (o - r).abs().max().item()
        assert err <= 1e-5 * scale, f"{what} step {i}: max abs diff {err:.3g} > 1e-5 * {scale:.3g}"


def to_vp(traj, schedule):
    """Our vp state is x / alpha; diffusers' DDPM-family schedulers keep z = alpha * x."""
    return [x / math.sqrt(1.0 + float(s) ** 2) for x, s in zip(traj, schedule.sigmas[1:])]


@pytest.mark.parametrize("steps", [10, 25])
def test_ddpm_ancestral(steps):
    sched = diffusers.DDPMScheduler(clip_sample=False)
    sched.set_timesteps(steps)
    ours = Scheduler("ddpm", spacing="leading")(steps)
    assert torch.equal(ours.timesteps, sched.timesteps)
    net, z = SmoothNet(), noise()
    ref = run_diffusers(sched, net, z, generator=torch.Generator().manual_seed(7))
    traj = run_ours("ddpm", net, "eps", ours, ours.prior(z), generator=torch.Generator().manual_seed(7))
    assert_close(to_vp(traj, ours), ref, "ddpm")


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_ddim(eta, spacing):
    steps = 10  # divides 1000: diffusers' DDIM steps to t - 1000 // n, which is the next grid point only then
    sched = diffusers.DDIMScheduler(clip_sample=False, timestep_spacing=spacing, **SCALED)
    sched.set_timesteps(steps)
    ours = Scheduler("ddpm", spacing=spacing, **SCALED)(steps)
    assert torch.equal(ours.timesteps, sched.timesteps)
    if spacing == "linspace":
        return  # linspace's grid is not evenly spaced, so diffusers' t - 100 steps off-grid; the grid check is the test
    net, z = SmoothNet(1), noise(2)
    ref = run_diffusers(sched, net, z, generator=torch.Generator().manual_seed(3), eta=eta)
    traj = run_ours("ddim", net, "eps", ours, ours.prior(z), generator=torch.Generator().manual_seed(3), eta=eta)
    assert_close(to_vp(traj, ours), ref, f"ddim eta={eta}")


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ddim_v_prediction(prediction):
    sched = diffusers.DDIMScheduler(clip_sample=False, prediction_type=prediction, timestep_spacing="trailing",
                                    **SCALED)
    sched.set_timesteps(20)
    ours = Scheduler("ddpm", spacing="trailing", **SCALED)(20)
    net, z = SmoothNet(2), noise(3)
    ref = run_diffusers(sched, net, z)
    traj = run_ours("ddim", net, "eps" if prediction == "epsilon" else "v", ours, ours.prior(z))
    assert_close(to_vp(traj, ours), ref, prediction)


@pytest.mark.parametrize("steps", [8, 30])
def test_euler_karras(steps):
    sched = diffusers.EulerDiscreteScheduler(use_karras_sigmas=True, **SCALED)
    sched.set_timesteps(steps)
    ours = Scheduler("karras", rho=7.0, **SCALED)(steps)
    assert torch.allclose(ours.sigmas.float(), sched.sigmas, rtol=1e-6, atol=0)
    assert torch.allclose(ours.timesteps, sched.timesteps.float(), rtol=0, atol=2e-3)
    net, z = SmoothNet(3), noise(4)
    x = z * sched.init_noise_sigma
    ref = run_diffusers(sched, net, x)
    traj = run_ours("euler", net, "eps", ours, x.clone())
    assert_close(traj, ref, "euler karras")


@pytest.mark.parametrize("karras", [False, True])
def test_heun(karras):
    steps = 12
    sched = diffusers.HeunDiscreteScheduler(use_karras_sigmas=karras, **SCALED)
    sched.set_timesteps(steps)
    if karras:
        ours = Scheduler("karras", **SCALED)(steps)
    else:
        ours = Scheduler("ddpm", spacing="linspace", round_timesteps=False, **SCALED)(steps)
    full = torch.cat([sched.timesteps[:1], sched.timesteps[1::2]])
    assert torch.allclose(ours.timesteps, full, rtol=0, atol=2e-3)
    net, z = SmoothNet(4), noise(5)
    x = z * sched.init_noise_sigma
    ref = run_diffusers(sched, net, x)
    # diffusers' Heun steps twice per sigma: full steps end after calls 1, 3, ..., and the final Euler call
    ref = [ref[j] for j in range(1, len(ref), 2)] + [ref[-1]]
    traj = run_ours("heun", net, "eps", ours, x.clone())
    assert_close(traj, ref, f"heun karras={karras}")


@pytest.mark.parametrize("steps", [6, 20])
def test_dpmpp_2m_vp(steps):
    sched = diffusers.DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2,
                                                  timestep_spacing="trailing", **SCALED)
    sched.set_timesteps(steps)
    ours = Scheduler("ddpm", spacing="trailing", **SCALED)(steps)
    assert torch.equal(ours.timesteps, sched.timesteps)
    net, z = SmoothNet(5), noise(6)
    ref = run_diffusers(sched, net, z)
    traj = run_ours("dpmpp_2m", net, "eps", ours, ours.prior(z))
    assert_close(to_vp(traj, ours), ref, "dpm++ 2m")


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
def test_dpmpp_2m_flow(shift):
    steps = 16
    sched = diffusers.DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, use_flow_sigmas=True,
                                                  flow_shift=shift, prediction_type="flow_prediction")
    sched.set_timesteps(steps)
    ours = Scheduler("flow", shift=shift, grid="dpm")(steps)
    assert torch.equal(ours.sigmas.float(), sched.sigmas) and torch.equal(ours.timesteps, sched.timesteps)
    net, z = SmoothNet(6), noise(7)
    ref = run_diffusers(sched, net, z)
    assert_close(run_ours("dpmpp_2m", net, "flow", ours, ours.prior(z)), ref, "dpm++ flow")


@pytest.mark.parametrize("steps", [5, 18])
def test_unipc_bh2_vp(steps):
    sched = diffusers.UniPCMultistepScheduler(solver_type="bh2", solver_order=2, timestep_spacing="trailing",
                                              **SCALED)
    sched.set_timesteps(steps)
    ours = Scheduler("ddpm", spacing="trailing", **SCALED)(steps)
    net, z = SmoothNet(7), noise(8)
    ref = run_diffusers(sched, net, z)
    assert_close(to_vp(run_ours("unipc", net, "eps", ours, ours.prior(z)), ours), ref, "unipc vp")


def test_unipc_order3_and_bh1_vp():
    for order, variant in [(3, "bh2"), (2, "bh1"), (3, "bh1")]:
        sched = diffusers.UniPCMultistepScheduler(solver_type=variant, solver_order=order,
                                                  timestep_spacing="trailing", **SCALED)
        sched.set_timesteps(12)
        ours = Scheduler("ddpm", spacing="trailing", **SCALED)(12)
        net, z = SmoothNet(8), noise(9)
        ref = run_diffusers(sched, net, z)
        traj = to_vp(run_ours("unipc", net, "eps", ours, ours.prior(z), order=order, variant=variant), ours)
        if variant == "bh1":
            # diffusers' bh1 computes B(h) * 0 with B(h) = h = -inf on the step into sigma = 0 and returns NaN;
            # ours lands on the data prediction there, like bh2 does.
            assert torch.isnan(ref[-1]).any() and torch.isfinite(traj[-1]).all()
            traj, ref = traj[:-1], ref[:-1]
        assert_close(traj, ref, f"unipc order={order} {variant}")


@pytest.mark.parametrize("shift", [1.0, 5.0, 12.0])
def test_unipc_flow(shift):
    steps = 14
    sched = diffusers.UniPCMultistepScheduler(solver_type="bh2", use_flow_sigmas=True, flow_shift=shift,
                                              prediction_type="flow_prediction")
    sched.set_timesteps(steps)
    ours = Scheduler("flow", shift=shift, grid="unipc")(steps)
    assert torch.equal(ours.sigmas.float(), sched.sigmas) and torch.equal(ours.timesteps, sched.timesteps)
    net, z = SmoothNet(9), noise(10)
    ref = run_diffusers(sched, net, z)
    assert_close(run_ours("unipc", net, "flow", ours, ours.prior(z)), ref, "unipc flow")


@pytest.mark.parametrize("steps", [10, 40])
@pytest.mark.parametrize("shift", [3.0, 12.0])
def test_wan_unipc_matches_diffusers_given_the_wan_grid(steps, shift):
    """Wan2.2's FlowUniPCMultistepScheduler is diffusers' UniPC with flow sigmas on its own grid.

    diffusers accepts custom sigmas, so feeding it the official grid gives an
    oracle for the official sampler; on CPU ours matches it bit for bit. The
    grid is built here as a custom `Schedule` (the core knows no family);
    the wan22 plugin's tests pin its ``wan_flow`` to the same grid.
    """
    sig = wan_unipc_grid(steps, shift)
    ours = Schedule(torch.from_numpy(np.append(sig, 0.0).astype(np.float32)).double(), "flow",
                    torch.from_numpy(sig * 1000).to(torch.int64))
    sched = diffusers.UniPCMultistepScheduler(solver_type="bh2", use_flow_sigmas=True, flow_shift=1.0,
                                              prediction_type="flow_prediction")
    sched.set_timesteps(sigmas=sig)
    assert torch.equal(ours.sigmas.float(), sched.sigmas) and torch.equal(ours.timesteps, sched.timesteps)
    net, z = SmoothNet(10), noise(11)
    ref = run_diffusers(sched, net, z)
    traj = run_ours("unipc", net, "flow", ours, ours.prior(z))
    assert all(torch.equal(a, b) for a, b in zip(traj, ref)), "expected bit-identical trajectories on CPU"


def wan_unipc_grid(steps: int, shift: float):
    """Independent re-derivation of the official grid: sigma_max = float32(1 - 1/1000), linspace to 0, shift."""
    s_max = float(np.float32(1.0 - 1.0 / 1000))
    sig = np.linspace(s_max, 0.0, steps + 1)[:-1]
    return shift * sig / (1 + (shift - 1) * sig)


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("sampler", ["flow_euler", "euler"])
def test_flow_match_euler(shift, sampler):
    steps = 12
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(steps)
    ours = Scheduler("flow", shift=shift)(steps)
    assert torch.equal(ours.sigmas.float(), sched.sigmas) and torch.equal(ours.timesteps, sched.timesteps)
    net, z = SmoothNet(11), noise(12)
    ref = run_diffusers(sched, net, z)
    assert_close(run_ours(sampler, net, "flow", ours, ours.prior(z)), ref, sampler)


def test_custom_grid_schedule_runs_any_sampler():
    """A Schedule can be built from any grid (here diffusers' Karras/UniPC one) and sampled."""
    sched = diffusers.UniPCMultistepScheduler(use_karras_sigmas=True, **SCALED)
    sched.set_timesteps(9)
    sigmas = sched.sigmas.double()
    s = Schedule(sigmas, "vp", sched.timesteps)
    net, z = SmoothNet(12), noise(13)
    ref = run_diffusers(sched, net, z)
    assert_close(to_vp(run_ours("unipc", net, "eps", s, s.prior(z)), s), ref, "unipc karras")
