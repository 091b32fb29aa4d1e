"""The sampling API contract: lookup and registration, callbacks, seeded noise, parameterisations, experts."""

from __future__ import annotations

import math
import types

import pytest
import torch

from vidcore import plugins
from vidcore.errors import Cancelled, InvalidRequestError, UnknownNameError
from vidcore.hookspecs import hookimpl
from vidcore.sampling import BUILTIN_SAMPLERS, Experts, Sampler, Scheduler, register_sampler, wrap_network
from vidcore.sampling.noise import randn_like

BUILTINS = ["ddim", "ddpm", "dpmpp_2m", "euler", "flow_euler", "heun", "unipc"]


def toy_model(x, sigma):
    return torch.tanh(x) * 0.5


def test_builtins_register_through_the_plugin_hook():
    assert set(BUILTINS) <= set(Sampler.names())
    for name in BUILTINS:
        assert plugins.get_sampler(name) is BUILTIN_SAMPLERS[name] is Sampler.get(name)
        assert plugins.registry().get("sampler", name).plugin == "vidcore"
    with pytest.raises(UnknownNameError, match="unknown sampler 'nope'; choose one of: ddim, ddpm"):
        Sampler.get("nope")


def test_register_sampler_decorator():
    @register_sampler("test_half_euler")
    def sample_half(model, x, schedule, *, callback=None, generator=None):
        return x * 0.5

    try:
        assert Sampler.get("test_half_euler") is sample_half and "test_half_euler" in Sampler.names()
        with pytest.raises(ValueError, match="already registered"):
            register_sampler("test_half_euler")(lambda *a, **k: None)
    finally:
        plugins.unregister("sampler", "test_half_euler")


def test_a_plugin_registers_a_sampler_with_one_hook_call():
    def sample_noop(model, x, schedule, *, callback=None, generator=None):
        return x

    mod = types.ModuleType("sampler_plugin")
    mod.register_samplers = hookimpl(lambda register: register("noop_from_plugin", sample_noop))
    plugins.reset(extra_plugins=[("sampler_plugin", mod)])
    try:
        assert Sampler.get("noop_from_plugin") is sample_noop
        assert plugins.registry().get("sampler", "noop_from_plugin").plugin == "sampler_plugin"
    finally:
        plugins.reset()


@pytest.mark.parametrize("name", BUILTINS)
def test_callback_payload_cancel_and_dtype(name):
    schedule = Scheduler("flow" if name == "flow_euler" else "karras")(6)
    x = schedule.prior(torch.randn(2, 3, generator=torch.Generator().manual_seed(0)))
    seen = []
    out = Sampler.get(name)(toy_model, x, schedule, callback=seen.append, generator=torch.Generator().manual_seed(1))
    assert out.dtype == x.dtype and out.shape == x.shape and torch.isfinite(out).all()
    assert [d["i"] for d in seen] == list(range(6))
    for d in seen:
        assert set(d) == {"x", "i", "sigma", "sigma_next", "denoised"}
        assert d["sigma"].item() == schedule.sigmas[d["i"]].item()
        assert d["sigma_next"].item() == schedule.sigmas[d["i"] + 1].item()
    assert torch.equal(seen[-1]["x"], out)

    calls = []

    def counting(x, sigma):
        calls.append(float(sigma))
        return toy_model(x, sigma)

    def stop(d):
        if d["i"] == 1:
            raise Cancelled()

    with pytest.raises(Cancelled):
        Sampler.get(name)(counting, x, schedule, callback=stop, generator=torch.Generator().manual_seed(1))
    assert len(calls) <= 4  # stopped after the second step (heun: two calls per step)


@pytest.mark.parametrize("name,opts", [("ddpm", {}), ("ddim", {"eta": 0.7}), ("euler", {"s_churn": 5.0}),
                                       ("heun", {"s_churn": 5.0})])
def test_noise_is_per_sample_with_a_list_of_generators(name, opts):
    """A batch of two with generators [g0, g1] equals two runs of one with g0 and with g1."""
    schedule = Scheduler("ddpm", spacing="trailing")(8)
    z = torch.randn(2, 4, 5, generator=torch.Generator().manual_seed(3))
    x = schedule.prior(z)

    def gens(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    both = Sampler.get(name)(toy_model, x, schedule, generator=gens(10, 11), **opts)
    first = Sampler.get(name)(toy_model, x[:1], schedule, generator=gens(10), **opts)
    second = Sampler.get(name)(toy_model, x[1:], schedule, generator=gens(11), **opts)
    assert torch.equal(both, torch.cat([first, second]))
    single = Sampler.get(name)(toy_model, x[:1], schedule, generator=torch.Generator().manual_seed(10), **opts)
    assert torch.equal(single, first)  # a single generator on a batch of one draws the same numbers


def test_randn_like_contract():
    x = torch.zeros(3, 2, dtype=torch.float64)
    a = randn_like(x, torch.Generator().manual_seed(0))
    assert a.dtype == torch.float64 and torch.equal(a, torch.randn(3, 2, generator=torch.Generator().manual_seed(0),
                                                                   dtype=torch.float64))
    with pytest.raises(ValueError, match="one per sample"):
        randn_like(x, [torch.Generator()])


def ideal_network(x0, eps, prediction, schedule, sigma, seen):
    """A network that knows the answer: returns exactly the target of its prediction type."""

    def network(x_in, t):
        seen.append((x_in, t))
        s = sigma
        if prediction == "x0":
            return x0
        if prediction == "eps":
            return eps
        if prediction == "flow":
            return eps - x0
        a = 1 / math.sqrt(1 + s * s)
        return a * eps - (s * a) * x0  # v in the VP process

    return network


@pytest.mark.parametrize("kind,prediction", [("vp", "eps"), ("vp", "v"), ("vp", "x0"), ("ve", "eps"), ("ve", "x0"),
                                             ("flow", "flow"), ("flow", "eps"), ("flow", "x0")])
def test_wrap_network_recovers_x0(kind, prediction):
    schedule = {"vp": Scheduler("ddpm")(10), "ve": Scheduler("karras", kind="ve")(10),
                "flow": Scheduler("flow", shift=5.0, grid="unipc")(10)}[kind]
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 3, 4, generator=g, dtype=torch.float64), torch.randn(2, 3, 4, generator=g,
                                                                                  dtype=torch.float64)
    sigma = schedule.sigmas[4]
    a, s = schedule.alpha_sigma(sigma)
    x = a * x0 + s * eps  # the sampler state
    seen = []
    model = wrap_network(ideal_network(x0, eps, prediction, schedule, float(sigma), seen), prediction, schedule)
    assert torch.allclose(model(x, sigma), x0, atol=1e-10)
    x_in, t = seen[0]
    assert t.shape == (2,) and t.dtype == schedule.timesteps.dtype and bool((t == schedule.timesteps[4]).all())
    scale = 1 / math.sqrt(1 + float(sigma) ** 2) if kind == "vp" else 1.0  # vp networks see z = a x
    assert torch.allclose(x_in, x * scale)


def test_wrap_network_rejects_mismatches():
    with pytest.raises(InvalidRequestError, match="prediction type"):
        wrap_network(toy_model, "score", Scheduler("ddpm")(4))
    with pytest.raises(InvalidRequestError, match="flow schedule"):
        wrap_network(toy_model, "flow", Scheduler("ddpm")(4))
    with pytest.raises(InvalidRequestError, match="ve/vp"):
        wrap_network(toy_model, "v", Scheduler("flow")(4))


def test_experts_switch_at_the_boundary_and_report_it():
    schedule = Scheduler("flow", shift=12.0, grid="unipc")(40)
    high, low = (lambda x, sigma, **c: x * 0 + 1.0), (lambda x, sigma, **c: x * 0 - 1.0)
    switches = []
    experts = Experts([("high", high, 0.875), ("low", low, 0.0)], on_switch=switches.append)
    x = torch.zeros(1, 2)
    outs = [experts(x, sigma)[0, 0].item() for sigma in schedule.sigmas[:-1]]
    assert switches == ["high", "low"]
    first_low = outs.index(-1.0)
    assert all(v == 1.0 for v in outs[:first_low]) and all(v == -1.0 for v in outs[first_low:])
    assert schedule.sigmas[first_low - 1] >= 0.875 > schedule.sigmas[first_low]
    assert experts.expert_for(0.875) == "high" and experts.expert_for(0.87499) == "low"
    with pytest.raises(InvalidRequestError, match="high noise to low"):
        Experts([("low", low, 0.0), ("high", high, 0.9)])


def test_sampler_option_errors():
    with pytest.raises(InvalidRequestError, match="flow schedule"):
        Sampler.get("flow_euler")(toy_model, torch.zeros(1), Scheduler("ddpm")(3))
    with pytest.raises(InvalidRequestError, match="variant"):
        Sampler.get("unipc")(toy_model, torch.zeros(1), Scheduler("ddpm")(3), variant="bh3")


def test_docs_worked_example_runs():
    """docs/sampling.md's worked example registers a working sampler (stochastic, right moments)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "sampling.md").read_text()
    block = text.split("<!-- worked-example -->")[1].split("<!-- /worked-example -->")[0]
    code = block.split("```python")[1].split("```")[0]
    assert len(code.strip().splitlines()) < 40
    try:
        exec(compile(code, "docs/sampling.md", "exec"), {})
        schedule = Scheduler("karras", kind="ve", sigma_min=1e-3, sigma_max=80.0)(40)
        mu, s = 0.5, 0.8

        def model(x, sigma):
            return mu + s * s / (s * s + float(sigma) ** 2) * (x - mu)

        gen = torch.Generator().manual_seed(0)
        x = schedule.prior(torch.randn(8000, dtype=torch.float64, generator=gen))
        out = Sampler.get("euler_ancestral")(model, x, schedule, generator=gen)
        assert abs(out.mean().item() - mu) < 0.05 and abs(out.std().item() / s - 1) < 0.25  # 40 ancestral steps
        with pytest.raises(InvalidRequestError):
            Sampler.get("euler_ancestral")(model, x, Scheduler("flow")(4))
    finally:
        plugins.unregister("sampler", "euler_ancestral")


def test_sampler_options_are_validated_before_any_work():
    assert Sampler.validate("unipc", {"order": 3, "variant": "bh1"}) is BUILTIN_SAMPLERS["unipc"]
    with pytest.raises(InvalidRequestError) as err:
        Sampler.validate("ddim", {"etta": 0.5})
    assert "'etta'" in str(err.value) and "accepted options: eta" in str(err.value)
    with pytest.raises(UnknownNameError):
        Sampler.validate("nope", {})
