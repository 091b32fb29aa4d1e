"""Step caches on a tiny DiT: threshold 0 is exact, large thresholds skip (and say how often), reset works."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vidcore.cache import (
    FirstBlockCache,
    TeaCache,
    disable_step_cache,
    enable_step_cache,
    reset_step_caches,
    step_caches,
)
from vidcore.errors import InvalidRequestError, UnknownNameError
from vidcore.nn import BlockStack


class Block(nn.Module):
    """AdaLN-style block: x + gate * mlp(norm(x) * (1 + scale) + shift), conditioned on t."""

    def __init__(self, dim: int):
        super().__init__()
        self.mod = nn.Linear(dim, 3 * dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.calls = 0

    def forward(self, x, *, temb):
        self.calls += 1
        shift, scale, gate = self.mod(temb).unsqueeze(1).chunk(3, dim=-1)
        h = nn.functional.layer_norm(x, x.shape[-1:]) * (1 + scale) + shift
        return x + gate * self.mlp(h)


class PairBlock(Block):
    """A two-stream block (image, text), as HunyuanVideo's double-stream blocks pass state."""

    def forward(self, img, txt, *, temb):
        return super().forward(img, temb=temb), txt + 0.1 * img.mean(1, keepdim=True)


class TinyDiT(nn.Module):
    def __init__(self, dim=16, depth=3, pair=False):
        super().__init__()
        self.t = nn.Linear(1, dim)
        self.pair = pair
        self.blocks = BlockStack([(PairBlock if pair else Block)(dim) for _ in range(depth)])
        self.head = nn.Linear(dim, dim)

    def forward(self, x, t):
        temb = torch.sin(self.t(t.view(-1, 1) * torch.ones(x.shape[0], 1)))
        if self.pair:
            x, _ = self.blocks(x, x[:, :2].clone(), temb=temb)
        else:
            x = self.blocks(x, temb=temb)
        return self.head(x)


def sample(model, steps=8, seed=0):
    """A flow-Euler loop: each step calls the model once, so each step calls the stack once."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 10, 16, generator=g)
    ts = torch.linspace(1, 0, steps + 1)
    with torch.no_grad():
        for i in range(steps):
            x = x + (ts[i + 1] - ts[i]) * model(x, ts[i])
    return x


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TinyDiT()


def block_calls(model):
    return sum(b.calls for b in model.blocks)


@pytest.mark.parametrize("kind", ["teacache", "first-block"])
def test_threshold_zero_is_bit_exact(model, kind):
    plain = sample(model)
    caches = enable_step_cache(model, kind, 0.0)
    assert torch.equal(sample(model), plain)
    assert caches[0].stats.as_dict() == {"calls": 8, "computed": 8, "skipped": 0}


@pytest.mark.parametrize("kind,cls", [("teacache", TeaCache), ("first-block", FirstBlockCache)])
def test_large_threshold_skips_and_reports(model, kind, cls):
    plain = sample(model)
    (cache,) = enable_step_cache(model, kind, 1e9)
    assert isinstance(cache, cls)
    before = block_calls(model)
    cached = sample(model)
    stats = cache.stats.as_dict()
    assert stats == {"calls": 8, "computed": 1, "skipped": 7}
    # teacache skips whole stacks; first-block still runs block 0 on each step
    expected_blocks = 3 if kind == "teacache" else 3 + 7
    assert block_calls(model) - before == expected_blocks
    assert not torch.allclose(cached, plain)  # the cached residual really was reused
    assert len(cache.stats.changes) == 7


def test_moderate_threshold_skips_some_steps_and_stays_close(model):
    plain = sample(model, steps=20)
    (cache,) = enable_step_cache(model, "teacache", 0.3)
    cached = sample(model, steps=20)
    s = cache.stats
    assert 0 < s.skipped < s.calls and s.skipped + s.computed == s.calls == 20
    assert (cached - plain).abs().max() < 0.5 * plain.abs().max()


def test_skipped_step_adds_the_cached_residual(model):
    (cache,) = enable_step_cache(model, "teacache", 1e9)
    temb = torch.randn(2, 16)
    x0, x1 = torch.randn(2, 4, 16), torch.randn(2, 4, 16)
    with torch.no_grad():
        out0 = model.blocks(x0, temb=temb)
        out1 = model.blocks(x1, temb=temb)
    torch.testing.assert_close(out1, x1 + (out0 - x0), rtol=0, atol=1e-6)


def test_reset_starts_a_fresh_generation(model):
    enable_step_cache(model, "teacache", 1e9)
    first = sample(model, seed=0)
    stale = sample(model, seed=1)  # no reset: step 1 reuses the previous run's residual
    (stats,) = reset_step_caches(model)
    assert stats == {"calls": 16, "computed": 1, "skipped": 15}  # the second run never computed
    fresh = sample(model, seed=1)
    assert not torch.equal(stale, fresh)
    reset_step_caches(model)
    assert torch.equal(sample(model, seed=0), first)
    assert step_caches(model)[0].stats.as_dict()["computed"] == 1


def test_disable_restores_the_plain_run(model):
    plain = sample(model)
    enable_step_cache(model, "first-block", 1e9)
    sample(model)
    disable_step_cache(model)
    assert model.blocks.wrappers == [] and step_caches(model) == []
    assert torch.equal(sample(model), plain)


def test_enable_twice_replaces_and_other_wrappers_stay(model):
    def passthrough(run, *state, **kw):
        return run(*state, **kw)

    model.blocks.wrappers.append(passthrough)
    enable_step_cache(model, "teacache", 0.1)
    enable_step_cache(model, "teacache", 0.2)
    assert len(step_caches(model)) == 1 and step_caches(model)[0].threshold == 0.2
    assert model.blocks.wrappers[0] is passthrough
    disable_step_cache(model)
    assert model.blocks.wrappers == [passthrough]


def test_signal_and_guidance_passes(model):
    """A supplied signal decides; conditional and unconditional passes run as separate calls (as guidance
    runs them when not batched) keep separate states, told by the pass guidance is running."""
    from vidcore.passes import running_pass

    (cache,) = enable_step_cache(model, "teacache", 1e-3, signal=lambda state, kw: kw["temb"])
    temb = torch.randn(2, 16)
    xc, xu = torch.randn(2, 4, 16), torch.randn(2, 4, 16)

    def pair():
        with running_pass("cond"):
            c = model.blocks(xc, temb=temb)
        with running_pass("uncond"):
            u = model.blocks(xu, temb=temb)
        return c, u

    with torch.no_grad():
        c0, u0 = pair()
        c1, u1 = pair()  # same temb: both skip
    assert cache.stats.as_dict() == {"calls": 4, "computed": 2, "skipped": 2}
    torch.testing.assert_close(c1, c0, rtol=0, atol=1e-6)
    torch.testing.assert_close(u1, u0, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["teacache", "first-block"])
def test_tuple_state_stack(kind):
    torch.manual_seed(0)
    model = TinyDiT(pair=True)
    plain = sample(model)
    (cache,) = enable_step_cache(model, kind, 0.0)
    assert torch.equal(sample(model), plain)
    enable_step_cache(model, kind, 1e9)
    sample(model)
    assert step_caches(model)[0].stats.skipped == 7


def test_bad_arguments_are_named(model):
    with pytest.raises(UnknownNameError, match="fastcache"):
        enable_step_cache(model, "fastcache", 0.1)
    with pytest.raises(InvalidRequestError, match="BlockStack"):
        enable_step_cache(nn.Linear(2, 2), "teacache", 0.1)
    with pytest.raises(InvalidRequestError, match="threshold"):
        enable_step_cache(model, "teacache", -1.0)


@pytest.mark.parametrize("batched", [True, False])
def test_guidance_tells_the_cache_its_passes(batched):
    """Through `Guidance`, threshold 0 stays bit-exact whether the pair is batched or two calls, and an
    interval that drops the unconditional pass on some steps does not mix the two passes' states."""
    from vidcore.guidance import Guidance
    from vidcore.sampling import Scheduler

    torch.manual_seed(0)
    net = TinyDiT()
    schedule = Scheduler("flow")(6)
    cond, uncond = {"bias": torch.ones(2, 10, 16)}, {"bias": torch.zeros(2, 10, 16)}

    def model(x, sigma, bias):
        return net(x + 0.1 * bias, torch.as_tensor(float(sigma)))

    guided = Guidance(scale=3.0, interval=(0.3, 1.0), batched=batched).wrap(model, cond, uncond, schedule)

    def run():
        x = torch.randn(2, 10, 16, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            for s in schedule.sigmas[:-1]:
                x = guided(x, float(s))
        return x

    plain = run()
    (cache,) = enable_step_cache(net, "teacache", 0.0)
    assert torch.equal(run(), plain)
    states = cache._states
    if batched:  # guided steps run one batch ("both"); the rest only the conditional pass
        assert set(states) == {"both", "cond"}
    else:
        assert set(states) == {"cond", "uncond"}
        assert states["cond"].calls == 6 and states["uncond"].calls < 6
