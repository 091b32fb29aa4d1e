"""Training inputs: the blurred-signal option draws nothing when off, blurs only the signal, and blurs correctly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from vidcore_latte.train.objectives import Objective, gaussian_blur


def _clip(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = -torch.ones(1, 3, 4, 24, 24)
    x[..., 6:16, 8:18] = torch.rand(1, 3, 1, 1, 1, generator=g) * 2 - 1
    return x


def test_blur_off_draws_nothing_extra_so_earlier_runs_replay_exactly():
    x0 = _clip()
    plain, off = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = Objective("x0", "flow", shift=3.0).sample(x0, plain)
    b = Objective("x0", "flow", shift=3.0, blur_prob=0.0, blur_sigma=(2.0, 5.0)).sample(x0, off)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    assert torch.equal(torch.rand(4, generator=plain), torch.rand(4, generator=off))


@pytest.mark.parametrize("process,prediction", [("flow", "x0"), ("flow", "flow"), ("vp", "eps"), ("vp", "v")])
def test_blur_on_blurs_the_signal_and_keeps_the_target_sharp(process, prediction):
    x0 = _clip()
    objective = Objective(prediction, process, blur_prob=1.0, blur_sigma=(2.0, 2.0))
    x_t, timestep, target = objective.sample(x0, torch.Generator().manual_seed(5))
    # replay the draws by hand: noise, the time, then (hit, sigma) for the one sample
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(x0.shape, generator=g)
    if process == "flow":
        s = torch.sigmoid(torch.randn(1, generator=g))
        assert torch.allclose(timestep, s * 1000.0)
        expected = (1 - s) * gaussian_blur(x0, 2.0) + s * noise
        sharp_target = x0 if prediction == "x0" else noise - x0
    else:
        from vidcore_latte.train.objectives import ddpm_alphas_cumprod

        t = torch.randint(0, 1000, (1,), generator=g)
        abar = ddpm_alphas_cumprod()[t].float()
        a, b = abar.sqrt(), (1 - abar).sqrt()
        expected = a * gaussian_blur(x0, 2.0) + b * noise
        sharp_target = noise if prediction == "eps" else a * noise - b * x0
    assert torch.allclose(x_t, expected, atol=1e-6)
    assert torch.allclose(target, sharp_target, atol=1e-6)  # the target is built from the sharp clip


def test_blur_prob_is_a_per_sample_coin_and_sigma_is_drawn_from_its_range():
    objective = Objective("x0", "flow", blur_prob=0.5, blur_sigma=(2.0, 4.0))
    g = torch.Generator().manual_seed(0)
    x0 = _clip()
    hits = 0
    for _ in range(100):
        replay = torch.Generator()
        replay.set_state(g.get_state())
        x_t, timestep, _ = objective.sample(x0, g)
        noise = torch.randn(x0.shape, generator=replay)
        s = torch.sigmoid(torch.randn(1, generator=replay))
        hit = torch.rand((), generator=replay).item() < 0.5
        sigma = 2.0 + 2.0 * torch.rand((), generator=replay).item()
        signal = gaussian_blur(x0, sigma) if hit else x0
        assert torch.allclose(x_t, (1 - s) * signal + s * noise, atol=1e-6)
        hits += hit
    assert 30 < hits < 70


def test_gaussian_blur_equals_a_dense_2d_convolution():
    x = torch.randn(2, 3, 20, 17, generator=torch.Generator().manual_seed(1))
    sigma = 1.7
    r = 6
    grid = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (grid[:, None] ** 2 + grid[None, :] ** 2) / sigma**2)
    k = k / k.sum()
    dense = F.conv2d(F.pad(x.reshape(-1, 1, 20, 17), (r, r, r, r), mode="replicate"), k[None, None])
    assert torch.allclose(gaussian_blur(x, sigma), dense.reshape(x.shape), atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(sigma=st.floats(0.3, 6.0), value=st.floats(-1.0, 1.0))
def test_gaussian_blur_keeps_flat_images_and_an_interior_blob_s_mass(sigma, value):
    flat = torch.full((3, 2, 32, 32), value)
    assert torch.allclose(gaussian_blur(flat, sigma), flat, atol=1e-6)
    blob = torch.zeros(1, 64, 64)
    blob[0, 28:36, 26:38] = 1.0
    out = gaussian_blur(blob, sigma)
    assert abs(float(out.sum()) - float(blob.sum())) < 1e-3 * float(blob.sum())
    assert torch.allclose(gaussian_blur(blob.flip(-1), sigma), out.flip(-1), atol=1e-6)


def test_bad_blur_settings_are_one_line_before_any_work():
    from vidcore_latte.train.cli import load_config, parse_settings

    from vidcore.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="blur_sigma"):
        load_config("latte-shapes", parse_settings(["blur_sigma=[4, 2]"]))
    with pytest.raises(InvalidRequestError, match="blur_prob"):
        load_config("latte-shapes", parse_settings(["blur_prob=1.5"]))
    config = load_config("latte-shapes", parse_settings(["blur_prob=0.5", "blur_sigma=[2, 10]"]))
    assert (config.blur_prob, config.blur_sigma) == (0.5, (2, 10))
