"""Guidance: CFG and its variants as a model wrapper, checked against hand-computed mixes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vidcore.errors import InvalidRequestError
from vidcore.guidance import Guidance
from vidcore.sampling import Experts, Sampler, Scheduler, wrap_network

SCHEDULE = Scheduler("flow", shift=5.0, grid="unipc")(12)


class Net:
    """A batch-independent network of (x, t, context): each sample only sees its own inputs."""

    def __init__(self, seed=0, dim=6):
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(dim, dim, generator=g) / dim**0.5
        self.calls = []

    def __call__(self, x, t, context, guidance=None):
        self.calls.append({"batch": x.shape[0], "guidance": guidance})
        tt = t.float().view(-1, 1, 1) / 1000
        out = torch.tanh(x @ self.w + context.mean(dim=1, keepdim=True)) * (1 + tt) - 0.3 * x
        if guidance is not None:
            out = out + 0.01 * guidance.view(-1, 1, 1)
        return out


def inputs(seed=0, batch=2, ctx_len=(4, 4)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 6, generator=g)
    cond = {"context": torch.randn(batch, ctx_len[0], 6, generator=g)}
    uncond = {"context": torch.randn(batch, ctx_len[1], 6, generator=g)}
    return x, cond, uncond


@settings(max_examples=10, deadline=None, derandomize=True)
@given(scale=st.floats(-5, 20, allow_nan=False), batched=st.booleans(), raw=st.booleans(), i=st.integers(0, 11))
def test_cond_equal_uncond_returns_cond(scale, batched, raw, i):
    net = Net()
    model = wrap_network(net, "flow", SCHEDULE)
    if not raw:  # a plain x0 model without raw/to_x0: mixing happens on x0
        inner = model
        model = lambda x, sigma, **c: inner(x, sigma, **c)  # noqa: E731
    x, cond, _ = inputs()
    sigma = SCHEDULE.sigmas[i]
    guided = Guidance(scale=scale, batched=batched).wrap(model, cond, dict(cond), SCHEDULE)
    assert torch.equal(guided(x, sigma), model(x, sigma, **cond))
    rescaled = Guidance(scale=scale, rescale=0.7, batched=batched).wrap(model, cond, dict(cond), SCHEDULE)
    assert torch.allclose(rescaled(x, sigma), model(x, sigma, **cond), atol=1e-6)


@pytest.mark.parametrize("scale", [0.0, 2.5, 7.0])
def test_plain_cfg_and_rescale_zero(scale):
    net = Net(1)
    model = wrap_network(net, "flow", SCHEDULE)
    x, cond, uncond = inputs(1)
    sigma = SCHEDULE.sigmas[3]
    t = SCHEDULE.timesteps[3].expand(2)
    v_c, v_u = net(x, t, **cond), net(x, t, **uncond)
    expected = x - float(sigma) * (v_u + scale * (v_c - v_u))  # CFG on the velocity, then x0 (Wan2.2's order)
    out = Guidance(scale=scale, rescale=0.0, batched=False).wrap(model, cond, uncond, SCHEDULE)(x, sigma)
    assert torch.equal(out, expected)


def test_rescale_matches_the_conditional_std():
    net = Net(2)
    model = wrap_network(net, "flow", SCHEDULE)
    x, cond, uncond = inputs(2)
    sigma = SCHEDULE.sigmas[5]
    s = float(sigma)
    out = Guidance(scale=6.0, rescale=1.0).wrap(model, cond, uncond, SCHEDULE)(x, sigma)
    v_out = (x - out) / s  # back to the velocity the mix happened in
    v_cond = net(x, SCHEDULE.timesteps[5].expand(2), **cond)
    assert torch.allclose(v_out.std(dim=(1, 2)), v_cond.std(dim=(1, 2)), rtol=1e-5)
    half = Guidance(scale=6.0, rescale=0.5).wrap(model, cond, uncond, SCHEDULE)(x, sigma)
    plain = Guidance(scale=6.0).wrap(model, cond, uncond, SCHEDULE)(x, sigma)
    assert torch.allclose(half, 0.5 * out + 0.5 * plain, atol=1e-5)


def test_uncond_pass_is_skipped_when_it_cannot_matter():
    x, cond, uncond = inputs(3)
    sigma = SCHEDULE.sigmas[0]
    for guidance, unc in [(Guidance(scale=1.0), uncond), (Guidance(scale=5.0), None),
                          (Guidance(scale=5.0, interval=(0.0, 0.5)), uncond)]:
        net = Net(3)
        guidance.wrap(wrap_network(net, "flow", SCHEDULE), cond, unc, SCHEDULE)(x, sigma)
        assert [c["batch"] for c in net.calls] == [2]
    net = Net(3)
    Guidance(scale=5.0, interval=(0.0, 0.5)).wrap(wrap_network(net, "flow", SCHEDULE), cond, uncond,
                                                  SCHEDULE)(x, SCHEDULE.sigmas[-2])
    assert [c["batch"] for c in net.calls] == [4]  # inside the interval: one batched call


def test_batched_and_sequential_are_identical_for_every_sampler():
    for name in ["euler", "heun", "ddim", "dpmpp_2m", "unipc", "flow_euler"]:
        x, cond, uncond = inputs(4)
        outs, calls = [], []
        for batched in (True, False):
            net = Net(4)
            guided = Guidance(scale=4.0, rescale=0.3, batched=batched).wrap(
                wrap_network(net, "flow", SCHEDULE), cond, uncond, SCHEDULE)
            outs.append(Sampler.get(name)(guided, SCHEDULE.prior(x), SCHEDULE))
            calls.append({c["batch"] for c in net.calls})
        assert torch.equal(outs[0], outs[1]), name
        assert calls == [{4}, {2}]


def test_batched_falls_back_when_inputs_do_not_stack():
    x, cond, uncond = inputs(5, ctx_len=(4, 7))
    net = Net(5)
    model = wrap_network(net, "flow", SCHEDULE)
    out = Guidance(scale=3.0).wrap(model, cond, uncond, SCHEDULE)(x, SCHEDULE.sigmas[2])
    ref = Guidance(scale=3.0, batched=False).wrap(model, cond, uncond, SCHEDULE)(x, SCHEDULE.sigmas[2])
    assert torch.equal(out, ref) and [c["batch"] for c in net.calls] == [2, 2, 2, 2]


def test_per_expert_scales_switch_exactly_at_the_boundary():
    schedule = Scheduler("flow", shift=12.0, grid="unipc")(30)
    high_net, low_net = Net(6), Net(7)
    switches = []
    model = Experts([("high", wrap_network(high_net, "flow", schedule), 0.875),
                     ("low", wrap_network(low_net, "flow", schedule), 0.0)], on_switch=switches.append)
    x, cond, uncond = inputs(6)
    guided = Guidance(scale={"high": 4.0, "low": 2.0}).wrap(model, cond, uncond, schedule)
    assert guided.expert_for(0.875) == "high" and guided.expert_for(0.8749) == "low"
    for i in range(30):
        sigma = schedule.sigmas[i]
        net, scale = (high_net, 4.0) if float(sigma) >= 0.875 else (low_net, 2.0)
        t = schedule.timesteps[i].expand(2)
        v_c, v_u = net(x, t, **cond), net(x, t, **uncond)
        assert torch.equal(guided(x, sigma), x - float(sigma) * (v_u + scale * (v_c - v_u))), i
    assert switches == ["high", "low"]


def test_per_step_scales_index_by_step():
    scales = [float(k) for k in range(12)]
    net = Net(8)
    model = wrap_network(net, "flow", SCHEDULE)
    x, cond, uncond = inputs(8)
    guided = Guidance(per_step=scales, batched=False).wrap(model, cond, uncond, SCHEDULE)
    for i in range(12):
        sigma = SCHEDULE.sigmas[i]
        expected = Guidance(scale=scales[i], batched=False).wrap(model, cond, uncond, SCHEDULE)(x, sigma)
        assert torch.equal(guided(x, sigma), expected), i


def test_embedded_guidance_is_a_model_input():
    net = Net(9)
    model = wrap_network(net, "flow", SCHEDULE)
    x, cond, uncond = inputs(9)
    Guidance(embedded=6.0).wrap(model, cond, None, SCHEDULE)(x, SCHEDULE.sigmas[1])
    g = net.calls[-1]["guidance"]
    assert g.shape == (2,) and g.dtype == torch.float32 and bool((g == 6.0).all())
    Guidance(scale=3.0, embedded=6.0).wrap(model, cond, uncond, SCHEDULE)(x, SCHEDULE.sigmas[1])
    assert net.calls[-1]["guidance"].shape == (4,)
    out = Guidance(embedded=2.0, embedded_key="other").wrap(lambda x, s, **c: c["other"].view(-1, 1, 1) + 0 * x,
                                                              {}, None, SCHEDULE)(x, SCHEDULE.sigmas[1])
    assert bool((out == 2.0).all())


def test_guidance_errors():
    with pytest.raises(InvalidRequestError, match="rescale"):
        Guidance(rescale=1.5)
    with pytest.raises(InvalidRequestError, match="interval"):
        Guidance(interval=(2.0, 1.0))
    x, cond, uncond = inputs(10)
    model = wrap_network(Net(10), "flow", SCHEDULE)
    with pytest.raises(InvalidRequestError, match="Experts"):
        Guidance(scale={"high": 2.0}).wrap(model, cond, uncond, SCHEDULE)(x, SCHEDULE.sigmas[0])
    experts = Experts([("high", model, 0.9), ("low", model, 0.0)])
    with pytest.raises(InvalidRequestError, match="no guidance scale for expert 'low'"):
        Guidance(scale={"high": 2.0}).wrap(experts, cond, uncond, SCHEDULE)(x, SCHEDULE.sigmas[-2])
