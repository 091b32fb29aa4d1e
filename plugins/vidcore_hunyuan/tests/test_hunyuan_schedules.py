"""HunyuanVideo's own schedule: registered by the plugin, HunyuanVideo's float32 grid to the bit."""

from __future__ import annotations

import pytest
import torch

from vidcore import plugins
from vidcore.sampling import Scheduler


def test_hunyuan_flow_is_registered_by_the_plugin_with_the_release_shift():
    assert plugins.registry().get("schedule", "hunyuan_flow").plugin == "hunyuan"
    assert torch.equal(Scheduler("hunyuan_flow")(30).sigmas, Scheduler("hunyuan_flow", shift=7.0)(30).sigmas)


@pytest.mark.parametrize("steps", [1, 10, 50])
@pytest.mark.parametrize("shift", [1.0, 7.0])
def test_hunyuan_flow_grid(steps, shift):
    s = Scheduler("hunyuan_flow", shift=shift)(steps)
    t = torch.linspace(1, 0, steps + 1)
    ref = (shift * t) / (1 + (shift - 1) * t)  # float32, as HunyuanVideo computes it
    assert torch.equal(s.sigmas, ref.double()) and s.sigmas[0].item() == 1.0
    assert s.timesteps.dtype == torch.float32 and torch.equal(s.timesteps, ref[:-1] * 1000)

