"""Wan2.2's own schedule: registered by the plugin, the official grids to the bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidcore import plugins
from vidcore.errors import InvalidRequestError
from vidcore.sampling import Experts, Scheduler


def test_wan_flow_is_registered_by_the_plugin_not_the_core():
    assert plugins.registry().get("schedule", "wan_flow").plugin == "wan22"
    with pytest.raises(InvalidRequestError, match="solver"):
        Scheduler("wan_flow", solver="euler")(10)


def wan_grid(steps: int, shift: float, solver: str = "unipc") -> np.ndarray:
    """Independent re-derivation of Wan2.2's grid: start at float32(1 - 1/1000) (unipc) or 1 (dpm++)."""
    start = float(np.float32(1 - 1 / 1000)) if solver == "unipc" else 1.0
    sig = np.linspace(start, 0.0, steps + 1)[:-1]
    return shift * sig / (1 + (shift - 1) * sig)


@pytest.mark.parametrize("steps,shift", [(1, 5.0), (20, 1.0), (50, 5.0), (40, 12.0), (33, 3.0)])
@pytest.mark.parametrize("solver", ["unipc", "dpm++"])
def test_wan_flow_grid(steps, shift, solver):
    s = Scheduler("wan_flow", shift=shift, solver=solver)(steps)
    ref = wan_grid(steps, shift, solver)
    assert s.timesteps.dtype == torch.int64
    assert s.timesteps.tolist() == [int(v) for v in ref * 1000]  # truncation, not rounding
    assert torch.equal(s.sigmas, torch.from_numpy(np.append(ref, 0.0).astype(np.float32)).double())
    if shift == 1.0:
        assert s.sigmas[0].item() == float(np.float32(0.999 if solver == "unipc" else 1.0))


def test_wan_flow_pinned_official_values():
    """Values printed by Wan2.2's own FlowUniPCMultistepScheduler / dpm++ path (50 steps, shift 5; 40, 12)."""
    s = Scheduler("wan_flow", shift=5.0)(50)
    assert s.timesteps[:6].tolist() == [999, 995, 991, 987, 982, 978]
    assert s.timesteps[-4:].tolist() == [302, 241, 172, 92]
    assert s.sigmas[:3].tolist() == [0.9997998476028442, 0.9957323670387268, 0.9915304780006409]
    assert s.sigmas[-3:].tolist() == [0.17226514220237732, 0.09250685572624207, 0.0]
    s = Scheduler("wan_flow", shift=12.0)(40)
    assert s.timesteps[:6].tolist() == [999, 997, 995, 993, 990, 988]
    assert s.timesteps[-4:].tolist() == [571, 492, 386, 235]
    s = Scheduler("wan_flow", shift=5.0, solver="dpm++")(50)
    assert s.timesteps[:6].tolist() == [1000, 995, 991, 987, 982, 978]
    assert s.timesteps[-4:].tolist() == [303, 241, 172, 92]


def test_wan_grid_differs_from_diffusers_port():
    """diffusers' UniPC flow grid starts just below 1 and ends at 1/N scale; Wan's starts at 0.999."""
    ours = Scheduler("wan_flow", shift=5.0)(30)
    port = Scheduler("flow", shift=5.0, grid="unipc")(30)
    assert port.sigmas[0].item() > ours.sigmas[0].item()
    assert not torch.equal(ours.timesteps, port.timesteps)


@pytest.mark.parametrize("shift", [5.0, 8.0, 12.0])
def test_expert_switch_by_sigma_equals_official_timestep_rule(shift):
    """Wan2.2 switches experts on ``t >= boundary * 1000`` with int64 t; ``sigma >= boundary`` agrees."""
    for steps in range(1, 61):
        s = Scheduler("wan_flow", shift=shift)(steps)
        experts = Experts([("high", None, 0.875), ("low", None, 0.0)])
        by_sigma = [experts.expert_for(s.sigmas[i]) == "high" for i in range(steps)]
        by_t = [int(t) >= 875 for t in s.timesteps]
        assert by_sigma == by_t, (shift, steps)

