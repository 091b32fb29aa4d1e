"""One registry per kind: what validates a request reads the same registry that runs it.

Samplers, schedules and memory presets come from the core and from plugins
through hooks, or from code after plugins loaded (``@register_sampler``,
``@register_schedule``, `register_preset`); every path lands in
`vidcore.plugins.registry()`, with the same clash rules.
"""

from __future__ import annotations

import inspect
import types

import pytest
import torch

import vidcore
from vidcore import hookspecs, plugins
from vidcore.errors import InvalidRequestError, UnknownNameError
from vidcore.hookspecs import hookimpl
from vidcore.memory import PolicySpec, get_policy, get_spec, preset_names, register_preset
from vidcore.plugins import DuplicateRegistrationError
from vidcore.request import check_request, resolve
from vidcore.sampling import Sampler, Scheduler, register_sampler
from vidcore.sampling.scheduler import register_schedule
from vidcore.sampling.schedules import flow


def _module(name: str, **hooks) -> types.ModuleType:
    mod = types.ModuleType(name)
    for key, fn in hooks.items():
        setattr(mod, key, hookimpl(fn))
    return mod


@pytest.fixture
def clean(monkeypatch):
    monkeypatch.setenv("VIDCORE_LOAD_PLUGINS", "")
    yield
    plugins.reset()


def test_every_hookspec_fills_a_registry_kind():
    specs = {n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("register_")}
    assert specs == set(plugins.HOOKS)
    assert {kind for kind, _ in plugins.HOOKS.values()} == set(plugins.Registry.KINDS)


def test_sampler_registered_after_plugins_loaded_is_validated_and_runs(toy_ckpt):
    backend = plugins.get_backend("toy")  # the registry is loaded before the sampler exists
    calls = []

    @register_sampler("late_flow_euler")
    def sample_late(model, x, schedule, *, callback=None, generator=None, scale: float = 1.0):
        calls.append((scale, x.numel()))  # validation dry-runs it on one number, the run on the latent
        return Sampler.get("flow_euler")(model, x, schedule, callback=callback, generator=generator)

    assert Sampler.get("late_flow_euler") is sample_late and "late_flow_euler" in plugins.sampler_names()
    req = resolve(backend, "a red ball", sampler="late_flow_euler", sampler_options={"scale": 2.0}, seed=1)
    assert check_request(backend, req) is req and req.sampler == "late_flow_euler"
    with pytest.raises(InvalidRequestError, match="no option 'scal'"):
        resolve(backend, "a red ball", sampler="late_flow_euler", sampler_options={"scal": 2.0})

    pipe = vidcore.load("toy", toy_ckpt, device="cpu")
    calls.clear()
    video = pipe("a red ball", sampler="late_flow_euler", sampler_options={"scale": 2.0}, seed=1)
    assert calls[-1] == (2.0, 3 * 5 * 16 * 16) and all(c == (2.0, 1) for c in calls[:-1])
    assert torch.equal(video.frames, pipe("a red ball", sampler="flow_euler", seed=1).frames)
    assert video.record["request"]["sampler"] == "late_flow_euler"


def test_a_late_name_that_is_taken_names_both_and_changes_nothing(toy_registry):
    def sample_other(model, x, schedule, *, callback=None, generator=None):
        return x

    with pytest.raises(DuplicateRegistrationError, match="'euler' is already registered by plugin 'vidcore'"):
        register_sampler("euler")(sample_other)
    with pytest.raises(DuplicateRegistrationError, match="'low-vram' is already registered by plugin 'vidcore'"):
        register_preset("low-vram", PolicySpec("low-vram"))
    assert Sampler.get("euler") is not sample_other and get_spec("low-vram").vae_tiling
    register_sampler("twice")(sample_other)
    register_sampler("twice")(sample_other)  # the same function again is no clash
    plugins.unregister("sampler", "twice")
    with pytest.raises(UnknownNameError):
        Sampler.get("twice")


def test_a_schedule_registered_in_code_is_a_schedule_everywhere(toy_registry):
    @register_schedule("late_flow")
    def late_flow(steps, *, shift: float = 3.0):
        return flow(steps, shift=shift, grid="linspace")

    backend = plugins.get_backend("toy")
    req = resolve(backend, "x", schedule="late_flow", seed=0)
    assert req.schedule_options == {} and "late_flow" in Scheduler.names()
    with pytest.raises(InvalidRequestError, match="accepted options: shift"):
        Scheduler("late_flow", rho=7)


def test_a_plugin_adds_a_schedule_and_a_memory_preset(clean, toy_ckpt):
    import toy_backend

    def register_schedules(register):
        register("plugin_flow", lambda steps, *, shift=4.0: flow(steps, shift=shift, grid="linspace"))

    def register_memory_presets(register):
        register("lean", PolicySpec("lean", rules={"text_encoder": "cpu"}, vae_tiling=True))
        register("custom", lambda dtype: get_policy("offload", dtype))

    mod = _module("extras", register_schedules=register_schedules, register_memory_presets=register_memory_presets)
    plugins.reset(extra_plugins=[("toy", toy_backend), ("extras", mod)])
    reg = plugins.registry()
    assert reg.get("schedule", "plugin_flow").plugin == "extras"
    assert reg.get("memory preset", "lean").plugin == "extras" and {"lean", "custom", "resident"} <= set(preset_names())
    assert Scheduler("plugin_flow")(4).sigmas[0].item() == 1.0
    combined = get_spec("lean+bf16")  # a plugin's spec combines with the core's
    assert combined.dtype == torch.bfloat16 and combined.vae_tiling and combined.rules == {"text_encoder": "cpu"}
    with pytest.raises(UnknownNameError, match="unknown memory preset 'nope'; choose one of: bf16, custom"):
        get_policy("nope")

    ref = vidcore.load("toy", toy_ckpt, device="cpu")("a red ball", seed=2, schedule="plugin_flow")
    for preset in ("lean", "custom"):
        with vidcore.load("toy", toy_ckpt, memory=preset, device="cpu") as pipe:
            video = pipe("a red ball", seed=2, schedule="plugin_flow")
        assert torch.equal(video.frames, ref.frames), preset
        assert video.record["request"]["schedule"] == "plugin_flow"


def test_schedule_and_preset_clashes_name_both_and_isolate_the_plugin(clean):
    def register_schedules(register):
        register("mine", lambda steps: flow(steps))
        register("flow", lambda steps: flow(steps))

    def register_memory_presets(register):
        register("resident", PolicySpec("resident"))

    plugins.reset(extra_plugins=[("sched", _module("sched", register_schedules=register_schedules)),
                                 ("mem", _module("mem", register_memory_presets=register_memory_presets))])
    reg = plugins.registry()
    assert any("'flow'" in e and "'vidcore'" in e and "'sched'" in e for e in reg.errors), reg.errors
    assert any("'resident'" in e and "'vidcore'" in e and "'mem'" in e for e in reg.errors), reg.errors
    assert "mine" not in Scheduler.names()  # a plugin that clashed contributes nothing
    assert reg.get("schedule", "flow").plugin == "vidcore" and reg.get("memory preset", "resident").plugin == "vidcore"


def test_a_plugin_failing_in_a_new_hook_is_named_and_isolated(clean):
    def register_schedules(register):
        register("half", lambda steps: flow(steps))
        raise RuntimeError("boom")

    def register_memory_presets(register):
        register("fine", PolicySpec("fine"))

    plugins.reset(extra_plugins=[("bad", _module("bad", register_schedules=register_schedules)),
                                 ("good", _module("good", register_memory_presets=register_memory_presets))])
    status = {p.name: p for p in plugins.plugin_status()}
    assert "plugin 'bad' failed in register_schedules: RuntimeError: boom" == status["bad"].error
    assert "half" not in Scheduler.names() and "fine" in preset_names() and "flow" in Scheduler.names()


def test_registering_while_plugins_load_lands_after_the_hooks(clean):
    def sample_early(model, x, schedule, *, callback=None, generator=None):
        return x

    def register_backends(register):  # e.g. a plugin module using @register_sampler at import time
        plugins.register("sampler", "early", sample_early, plugin="eager")

    plugins.reset(extra_plugins=[("eager", _module("eager", register_backends=register_backends))])
    assert Sampler.get("early") is sample_early
    assert plugins.registry().get("sampler", "early").plugin == "eager"
