"""LoRA: every key format, merged == on the fly == W + scale * (alpha/r) * B @ A by hand, errors by name,
and LoRA under memory policies (streamed blocks, offload, fp8 storage, two experts)."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import save_file

from vidcore.errors import CheckpointError, InvalidRequestError
from vidcore.lora import apply_lora, apply_lora_to, parse_lora
from vidcore.memory import FP8Linear, get_policy
from vidcore.memory.testing import TinyDiT, load, run

TARGETS = ["blocks.0.fc1", "blocks.2.fc2", "inp", "out"]


def _model() -> TinyDiT:
    torch.manual_seed(0)
    return TinyDiT(depth=3).double().requires_grad_(False)


def _matrices(model, seed=1, rank=3):
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for i, t in enumerate(TARGETS):
        layer = model.get_submodule(t)
        down = torch.randn(rank, layer.in_features, generator=gen, dtype=torch.float64)
        up = torch.randn(layer.out_features, rank, generator=gen, dtype=torch.float64)
        out[t] = (down, up, float(i + 1) if i % 2 == 0 else None)  # some layers without alpha
    return out


def _state(mats, style):
    sd = {}
    for t, (down, up, alpha) in mats.items():
        if style == "peft":
            stem, a, b = f"diffusion_model.{t}", "lora_A.weight", "lora_B.weight"
        elif style == "peft-adapter":
            stem, a, b = f"base_model.model.transformer.{t}", "lora_A.default.weight", "lora_B.default.weight"
        elif style == "diffusers-down-up":
            stem, a, b = t, "lora_down.weight", "lora_up.weight"
        else:  # kohya
            stem, a, b = "lora_unet_" + t.replace(".", "_"), "lora_down.weight", "lora_up.weight"
        sd[f"{stem}.{a}"], sd[f"{stem}.{b}"] = down, up
        if alpha is not None:
            sd[f"{stem}.alpha"] = torch.tensor(alpha)
    return sd


def _by_hand(model, mats, scale):
    ref = copy.deepcopy(model)
    for t, (down, up, alpha) in mats.items():
        r = down.shape[0]
        w = ref.get_submodule(t).weight
        w.copy_(w + scale * ((alpha if alpha is not None else r) / r) * up @ down)
    return ref


def _inputs():
    gen = torch.Generator().manual_seed(2)
    return (torch.randn(5, 4, generator=gen, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64),
            torch.randn(1, 8, generator=gen, dtype=torch.float64))


@pytest.mark.parametrize("style", ["peft", "peft-adapter", "diffusers-down-up", "kohya"])
def test_merged_equals_on_the_fly_equals_the_hand_computed_update(style):
    model, scale = _model(), 0.7
    mats = _matrices(model)
    ref = _by_hand(model, mats, scale)
    merged, hooked = copy.deepcopy(model), copy.deepcopy(model)
    apply_lora(merged, _state(mats, style), scale=scale, mode="merge")
    apply_lora(hooked, _state(mats, style), scale=scale, mode="hook")
    for t in TARGETS:
        assert torch.allclose(merged.get_submodule(t).weight, ref.get_submodule(t).weight, rtol=0, atol=1e-12)
    x = _inputs()
    expected = ref(*x)
    assert not torch.allclose(expected, model(*x))  # the LoRA changes the output
    assert torch.allclose(merged(*x), expected, rtol=1e-12, atol=1e-12)
    assert torch.allclose(hooked(*x), expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(hooked.get_submodule("inp").weight, model.get_submodule("inp").weight)  # weights untouched


def test_remove_undoes_both_modes_and_adapters_stack():
    model = _model()
    x = _inputs()
    base = model(*x)
    mats_a, mats_b = _matrices(model, 1), _matrices(model, 5)
    a = apply_lora(model, _state(mats_a, "peft"), scale=0.5, name="a")
    b = apply_lora(model, _state(mats_b, "kohya"), scale=-1.0, name="b")
    both = _by_hand(_by_hand(_model(), mats_a, 0.5), mats_b, -1.0)
    assert torch.allclose(model(*x), both(*x), rtol=1e-12, atol=1e-12)
    with pytest.raises(InvalidRequestError, match="already applied"):
        apply_lora(model, _state(mats_a, "peft"), name="a")
    a.remove()
    b.remove()
    assert torch.equal(model(*x), base)
    assert not model.get_submodule("inp")._forward_hooks and "lora_down_a" not in model.get_submodule("inp")._buffers
    merged = apply_lora(model, _state(mats_a, "peft"), mode="merge")
    merged.remove()
    assert torch.allclose(model(*x), base, rtol=1e-12, atol=1e-12)


def test_unknown_and_misshaped_keys_are_reported_by_name_in_one_line():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sd = _state(_matrices(model), "peft")
    sd["diffusion_model.blocks.9.fc1.lora_A.weight"] = torch.zeros(3, 8, dtype=torch.float64)
    sd["diffusion_model.blocks.9.fc1.lora_B.weight"] = torch.zeros(16, 3, dtype=torch.float64)
    sd["diffusion_model.blocks.1.fc2.lora_A.weight"] = torch.zeros(3, 7, dtype=torch.float64)  # fc2 takes 16
    sd["diffusion_model.blocks.1.fc2.lora_B.weight"] = torch.zeros(8, 3, dtype=torch.float64)
    sd["diffusion_model.blocks.0.fc1.hada_w1_a"] = torch.zeros(8, 2, dtype=torch.float64)  # LoHa: not ours
    with pytest.raises(CheckpointError) as err:
        apply_lora(model, sd, mode="merge", source="LoRA 'x.safetensors'")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("LoRA 'x.safetensors' does not fit")
    assert "1 key is no LoRA tensor of a known kind (diffusion_model.blocks.0.fc1.hada_w1_a)" in msg
    assert "2 of 15 keys match no layer of this model (diffusion_model.blocks.9.fc1.lora_A.weight, " in msg
    assert "diffusion_model.blocks.1.fc2 takes 7 features but blocks.1.fc2 takes 16" in msg
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # nothing applied
    # non-strict: the good layers are applied, the rest skipped
    plan = parse_lora(sd, model, strict=False)
    assert sorted(layer.target for layer in plan.layers) == sorted(TARGETS) and not plan.deltas
    assert (plan.keys, plan.matched) == (15, 10)
    with pytest.raises(CheckpointError, match="matches nothing in this model"):
        apply_lora(model, {"x.lora_A.weight": torch.zeros(1, 1), "x.lora_B.weight": torch.zeros(1, 1)}, strict=False)
    with pytest.raises(CheckpointError, match="blocks.0.fc1 has no lora_B/lora_up weight"):
        apply_lora(model, {"blocks.0.fc1.lora_A.weight": torch.zeros(2, 8)})


def test_files_are_read_as_safetensors_only(tmp_path):
    model = _model()
    mats = _matrices(model)
    path = tmp_path / "style.safetensors"
    save_file(_state(mats, "kohya"), str(path))
    hooked = copy.deepcopy(model)
    apply_lora(hooked, path, scale=2.0)
    x = _inputs()
    assert torch.allclose(hooked(*x), _by_hand(model, mats, 2.0)(*x), rtol=1e-12, atol=1e-12)
    (tmp_path / "style.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="not .safetensors"):
        apply_lora(model, tmp_path / "style.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        apply_lora(model, tmp_path / "missing.safetensors")


def comps_block(policy, comp, i):
    return policy.components[comp].blocks[i]


def run_plain():
    p = get_policy("resident", torch.float32)
    load(p)
    return run(p)


def _expert_loras(comps):
    """A different LoRA for each expert (float32, as the tiny pipeline runs)."""
    return {c: {k: v.float() for k, v in _state(_matrices(comps[c], seed=3 + i), "peft").items()}
            for i, c in enumerate(("high", "low"))}


@pytest.mark.parametrize("preset,mode", [("stream", "hook"), ("stream", "merge"), ("offload", "hook"),
                                         ("low-vram", "hook"), ("offload", "merge")])
def test_lora_under_memory_policies_matches_resident(preset, mode):
    resident = get_policy("resident", torch.float32)
    comps = load(resident)
    loras = _expert_loras(comps)
    apply_lora_to(resident, loras, mode=mode, scale=0.8)
    expected = run(resident)
    assert not torch.equal(expected, run_plain())

    policy = get_policy(preset, torch.float32)
    load(policy)
    handles = apply_lora_to(policy, loras, mode=mode, scale=0.8)
    assert set(handles) == {"high", "low"}
    assert torch.equal(run(policy), expected)
    if preset != "offload" and mode == "hook":  # adapter matrices stream with their block
        block = policy.strategies["high"].blocks[0]
        assert any(mod is comps_block(policy, "high", 0).fc1 and name == "lora_down_default"
                   for slots in block.buffers for mod, name in slots)
        assert torch.isnan(comps_block(policy, "high", 0).fc1.lora_down_default).all()  # not loaded now


def test_lora_on_fp8_storage_is_applied_on_the_fly():
    resident = get_policy("fp8", torch.float32)
    comps = load(resident)
    loras = _expert_loras(comps)
    with pytest.raises(InvalidRequestError, match="cannot merge a LoRA into the fp8 weights"):
        apply_lora_to(resident, {"high": loras["high"]}, mode="merge")
    apply_lora_to(resident, loras, mode="hook")
    expected = run(resident)
    streamed = get_policy("fp8+stream", torch.float32)
    load(streamed)
    apply_lora_to(streamed, loras, mode="hook")
    assert torch.equal(run(streamed), expected)
    # the fp8 layer's output gains exactly the low-rank term (``inp``: alpha 3 = rank, so factor 1)
    layer = comps["high"].inp
    assert isinstance(layer, FP8Linear)
    x = torch.randn(2, 4)
    down = loras["high"]["diffusion_model.inp.lora_A.weight"]
    up = loras["high"]["diffusion_model.inp.lora_B.weight"]
    assert torch.allclose(layer(x) - FP8Linear.forward(layer, x), x @ down.T @ up.T, rtol=1e-5, atol=1e-5)
