"""Memory policies on CPU (the CPU stands in for the device; unloaded weights are NaN placeholders).

What is checked: where every unit of weights is at each step and at every
block, that all policies at one dtype give bit-identical outputs (a block run
with weights the policy did not load would give NaN), that streaming keeps at
most ``ahead + 1`` blocks on the device and prefetches the next expert before
the switch, and that nothing is left behind (device bytes, hooks).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vidcore.errors import InvalidRequestError, UnknownNameError
from vidcore.memory import ComposedPolicy, MemoryPolicy, PolicySpec, get_policy, get_spec, preset_names
from vidcore.memory.testing import load, run
from vidcore.memory.units import Unit

PRESETS = ["resident", "offload", "t5-cpu", "stream", "low-vram", "offload+t5-cpu", "stream+offload"]


def _reference() -> torch.Tensor:
    policy = MemoryPolicy(torch.float32)
    load(policy)
    return run(policy)


@pytest.fixture(scope="module")
def reference() -> torch.Tensor:
    return _reference()


@pytest.mark.parametrize("preset", PRESETS)
def test_outputs_are_bit_identical_across_policies(preset, reference):
    policy = get_policy(preset, torch.float32)  # one dtype for all (low-vram would be bf16)
    load(policy)
    out = run(policy)
    assert not torch.isnan(out).any()
    assert torch.equal(out, reference)


def test_placeholders_make_unloaded_weights_visible():
    """The stand-in device is strict: a unit that is not loaded computes NaN, so equality above means something."""
    policy = get_policy("offload", torch.float32)
    comps = load(policy)
    assert torch.isnan(comps["vae"].weight).all()
    with torch.no_grad():
        assert torch.isnan(comps["vae"](torch.ones(1, 4))).all()
        with policy.use("vae") as vae:
            assert not torch.isnan(vae(torch.ones(1, 4))).any()


def _units_by_module(policy: ComposedPolicy) -> dict[int, Unit]:
    return {id(u.module): u for s in policy.strategies.values() for u in s.units}


def _watch_linears(policy: ComposedPolicy, comps, seen: list):
    """Pre-hooks on every Linear: record the state of the unit that owns it when it runs."""
    by_module = _units_by_module(policy)
    handles = []
    for comp, module in comps.items():
        owners = {}
        for name, m in module.named_modules():
            if id(m) in by_module:
                owners[name] = by_module[id(m)]
        for name, m in module.named_modules():
            if isinstance(m, nn.Linear):
                prefix = max((k for k in owners if name.startswith(k + ".") or k == ""), key=len)
                unit = owners[prefix]

                def hook(mod, args, unit=unit, comp=comp, name=name):
                    seen.append((comp, name, unit.name, unit.state, torch.isnan(mod.weight).any().item()))

                handles.append(m.register_forward_pre_hook(hook))
    return handles


@pytest.mark.parametrize("preset", ["offload", "stream", "low-vram", "t5-cpu"])
def test_every_linear_runs_with_its_weights_loaded(preset):
    policy = get_policy(preset, torch.float32)
    comps = load(policy)
    seen: list = []
    _watch_linears(policy, comps, seen)
    run(policy)
    assert len(seen) > 40
    for comp, name, unit, state, has_nan in seen:
        expected = "host" if (preset in ("t5-cpu", "low-vram") and comp == "text_encoder") else "device"
        assert state == expected, (comp, name, unit, state)
        assert not has_nan, (comp, name)


def test_offload_keeps_one_component_on_the_device_at_each_step():
    policy = get_policy("offload", torch.float32)
    load(policy)
    snapshots = []
    run(policy, on_step=lambda i, comp: snapshots.append((comp, policy.residency())))
    assert [c for c, _ in snapshots] == ["high", "high", "low", "low"]
    for comp, where in snapshots:
        assert where == {n: ("device" if n == comp else "host") for n in ("text_encoder", "high", "low", "vae")}
    assert set(policy.residency().values()) == {"host"}  # after the run: nothing on the device
    assert policy.stats()["device_bytes"] == 0


def test_t5_cpu_keeps_the_text_encoder_on_the_host():
    policy = get_policy("t5-cpu", torch.float32)
    comps = load(policy)
    assert policy.input_device("text_encoder") == torch.device("cpu")
    assert policy.load_device("text_encoder", torch.device("cuda")) == torch.device("cpu")
    assert policy.load_device("high", torch.device("cuda")) == torch.device("cuda")
    assert not torch.isnan(comps["text_encoder"].proj.weight).any()  # real weights, runs on the host
    assert policy.residency()["text_encoder"] == "host" and policy.residency()["high"] == "device"


def _blocks_on_device(policy, comp):
    return [n for n, s in policy.residency().items() if n.startswith(comp + ".blocks.") and s != "host"]


@pytest.mark.parametrize("ahead", [1, 2, 3])
def test_streaming_keeps_only_the_window_on_the_device(ahead):
    policy = ComposedPolicy(PolicySpec("stream", rules={"denoiser": "stream"}, ahead=ahead), torch.float32)
    comps = load(policy, depth=6)
    block_bytes = policy.strategies["high"].blocks[0].nbytes
    resident = policy.stats()["device_bytes"]  # rests of both experts, text encoder and VAE
    counts = []
    for comp in ("high", "low"):
        for block in comps[comp].blocks:
            block.register_forward_pre_hook(lambda m, a, comp=comp: counts.append(len(_blocks_on_device(policy, comp))))
    run(policy)
    assert max(counts) == ahead + 1 and min(counts) >= 1
    # the peak includes the next expert's first blocks, prefetched one step before the switch
    assert policy.stats()["peak_device_bytes"] <= resident + (2 * ahead + 1) * block_bytes
    assert policy.stats()["sync_loads"] == 0  # every block was already in flight when its turn came
    assert _blocks_on_device(policy, "high") == [] and _blocks_on_device(policy, "low") == []
    assert policy.stats()["device_bytes"] == resident  # nothing leaked


def test_streaming_state_at_each_step_and_at_the_expert_switch():
    policy = get_policy("stream", torch.float32)
    load(policy)
    snapshots = []
    run(policy, on_step=lambda i, comp: snapshots.append((i, dict(policy.residency()))))
    for i, where in snapshots:
        active = "high" if i < 2 else "low"
        # between steps the wrap-around has blocks 0 and 1 of the active expert in flight, nothing else
        assert sorted(n for n, s in where.items() if ".blocks." in n and s != "host") == \
            [f"{active}.blocks.0", f"{active}.blocks.1"] + ([f"low.blocks.{j}" for j in (0, 1)] if i == 1 else [])
        assert where["high.rest"] == where["low.rest"] == "device"
    moves = [(m.action, m.unit) for m in policy.moves]
    # the next expert's first blocks were issued before the old expert's last block ran
    first_low = moves.index(("load", "low.blocks.0"))
    last_high = max(i for i, m in enumerate(moves) if m == ("ready", "high.blocks.4"))
    assert first_low < last_high


def test_without_prefetch_the_switch_still_works_and_loads_on_entry():
    policy = get_policy("stream", torch.float32)
    load(policy)
    out = run(policy, prefetch=False)
    assert torch.equal(out, _reference())
    moves = [(m.action, m.unit) for m in policy.moves]
    assert moves.index(("load", "low.blocks.0")) > moves.index(("release", "high.blocks.0"))
    assert policy.stats()["sync_loads"] == 0


def test_streamed_component_outside_use_is_an_error():
    policy = get_policy("stream", torch.float32)
    comps = load(policy)
    with pytest.raises(RuntimeError, match=r"policy.use\('high'\)"):
        comps["high"](torch.zeros(3, 4), torch.tensor(0.5), torch.zeros(1, 8))


@pytest.mark.parametrize("preset", ["offload", "stream", "low-vram", "resident"])
def test_teardown_leaves_plain_modules_without_hooks(preset, reference):
    policy = get_policy(preset, torch.float32)
    comps = load(policy)
    run(policy)
    policy.teardown()
    for module in comps.values():
        for m in module.modules():
            assert not m._forward_pre_hooks and not m._forward_hooks
        for p in module.parameters():
            assert not torch.isnan(p).any()
    assert policy.residency() == {}
    # the plain modules still compute the same thing (run them resident again)
    again = MemoryPolicy()
    again.setup(comps, torch.device("cpu"))
    assert torch.equal(run(again), reference)


def test_edit_rebinds_real_weights_and_sets_up_again():
    policy = get_policy("stream", torch.float32)
    comps = load(policy)
    with policy.edit("high") as high:
        assert not comps["high"].blocks[3].fc1._forward_pre_hooks
        assert not torch.isnan(high.blocks[3].fc1.weight).any()
        high.blocks[3].fc1.weight.mul_(0)
    assert torch.isnan(comps["high"].blocks[3].fc1.weight).all()  # streamed again
    assert comps["high"].blocks[3]._forward_pre_hooks
    seen = []
    with policy.use("high"):
        comps["high"].blocks[3].fc1.register_forward_hook(lambda m, a, o: seen.append(m.weight.abs().sum().item()))
        comps["high"](torch.zeros(3, 4), torch.tensor(0.5), torch.zeros(1, 8))
    assert seen == [0.0]


def test_shared_tensors_stay_resident():
    """A weight used by two blocks (or by a block and the rest) is never streamed."""
    from vidcore.memory.streaming import Stream
    from vidcore.memory.transport import Transport
    from vidcore.nn import BlockStack

    shared = nn.Linear(4, 4)
    model = nn.Module()
    model.head = shared
    model.blocks = BlockStack([nn.Sequential(shared, nn.Linear(4, 4)), nn.Sequential(nn.Linear(4, 4))])
    strategy = Stream(1)
    strategy.setup("denoiser", model, Transport("cpu"))
    rest, b0, b1 = strategy.units
    assert {id(p) for p in rest.params} >= {id(shared.weight), id(shared.bias)}
    assert len(b0.params) == 2 and len(b1.params) == 2
    assert not torch.isnan(shared.weight).any()


def test_component_without_blocks_falls_back_to_offload():
    policy = get_policy("stream", torch.float32)
    comps = {"denoiser": nn.Linear(3, 3), "vae": nn.Linear(3, 3)}
    policy.setup(comps, torch.device("cpu"))
    assert policy.residency() == {"denoiser": "host", "vae": "device"}
    with policy.use("denoiser"):
        assert policy.residency()["denoiser"] == "device"


def test_dtype_presets_set_the_placement_dtype_but_not_the_vae():
    for name, dtype in [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)]:
        place = get_policy(name).placement(torch.device("cpu"), torch.float32)
        assert place("high") == (torch.device("cpu"), dtype)
        assert place("text_encoder")[1] == dtype
        assert place("vae")[1] == torch.float32
    assert get_policy("bf16", torch.float16).placement("cpu", None)("high")[1] == torch.float16  # explicit wins
    policy = get_policy("low-vram")
    comps = load(policy)
    assert comps["high"].blocks[0].fc1.weight.dtype == torch.bfloat16
    assert comps["vae"].weight.dtype == torch.float32


def test_presets_and_combinations():
    assert {"resident", "offload", "t5-cpu", "bf16", "fp16", "fp32", "fp8", "stream", "low-vram"} <= set(preset_names())
    low = get_policy("low-vram")
    assert low.spec.rule("high") == "stream" and low.spec.rule("text_encoder") == "cpu"
    assert low.spec.rule("text_encoder_2") == "cpu" and low.spec.rule("vae") == "resident"
    assert low.dtype == torch.bfloat16 and low.batched_guidance is False
    combo = get_policy("stream+t5-cpu+bf16")
    assert combo.spec.rules == low.spec.rules and combo.dtype == low.dtype
    assert get_policy("offload").spec.rule("anything") == "offload"
    with pytest.raises(InvalidRequestError, match="both set dtype"):
        get_policy("bf16+fp16")
    with pytest.raises(InvalidRequestError, match="place 'text_encoder' differently"):
        get_spec("t5-cpu") + PolicySpec("x", rules={"text_encoder": "offload"})
    with pytest.raises(UnknownNameError, match="unknown memory preset 'turbo'"):
        get_policy("stream+turbo")
    assert get_policy("resident") is not get_policy("resident")  # fresh state per pipeline
    assert isinstance(get_policy(MemoryPolicy()), MemoryPolicy)


def test_pipeline_gives_identical_videos_under_every_policy(toy_moe_ckpt):
    """End to end through `vidcore.load` on the toy two-expert backend."""
    import vidcore

    def latents(memory):
        xs = []
        pipe = vidcore.load("toy-moe", toy_moe_ckpt, memory=memory, dtype="fp32", device="cpu")
        video = pipe("a cat", seed=3, callback=lambda info: xs.append(info["x"].clone()))
        return video.frames, torch.stack(xs)

    sequential = MemoryPolicy(torch.float32)
    sequential.batched_guidance = False
    refs = {True: latents("resident"), False: latents(sequential)}
    for memory in ("offload", "stream", "low-vram", "t5-cpu+stream"):
        batched = get_policy(memory).batched_guidance  # low-vram runs cond/uncond one after the other
        f, x = latents(memory)
        assert torch.equal(x, refs[batched][1]), memory
        assert torch.equal(f, refs[batched][0]), memory


@pytest.mark.parametrize("kind", ["teacache", "first-block"])
def test_step_caches_skip_blocks_under_streaming_with_identical_results(kind):
    """Skipped stacks leave blocks in flight; the next run must still find every block it runs loaded."""
    from vidcore.cache import enable_step_cache

    outs, skipped = [], []
    for preset in ("resident", "stream"):
        policy = get_policy(preset, torch.float32)
        comps = load(policy)
        caches = [c for comp in ("high", "low") for c in enable_step_cache(comps[comp], kind, threshold=10.0)]
        outs.append(run(policy, steps=6, switch_at=3))
        skipped.append(sum(c.stats.skipped for c in caches))
        if preset == "stream":
            assert _blocks_on_device(policy, "high") == [] and _blocks_on_device(policy, "low") == []
    assert skipped[0] == skipped[1] > 0
    assert torch.equal(outs[0], outs[1])


@pytest.mark.slow
def test_regionally_compiled_blocks_stream_with_identical_results():
    """Compiled block forwards see the rebound weights (parameters are graph inputs; hooks stay eager)."""
    from vidcore.compile import compile_blocks

    outs = []
    for preset in ("resident", "stream"):
        policy = get_policy(preset, torch.float32)
        comps = load(policy)
        for comp in ("high", "low"):
            compile_blocks(comps[comp], backend="eager")
        outs += [run(policy), run(policy)]
    assert all(torch.equal(outs[0], o) for o in outs[1:])
