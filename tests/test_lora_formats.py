"""LoRA layouts as they exist, against a small model with the shapes real DiTs have (fused qkv, LayerNorm with
affine, a modulation table, a convolution): LightX2V/ComfyUI full-tensor deltas (.diff/.diff_b/.diff_m),
kohya/musubi underscores, a backend key map with row pieces, both modes against a merge done by hand, exact
removal, and the same under a streaming memory policy."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from vidcore.errors import CheckpointError, InvalidRequestError
from vidcore.lora import LoraSpec, Rows, apply_lora, apply_lora_to, parse_lora, remove_lora_from
from vidcore.memory import get_policy
from vidcore.memory.testing import load, run

D = 6


class Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.o = nn.Linear(D, D), nn.Linear(D, D)

    def forward(self, x):
        return self.o(torch.tanh(self.q(x)))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = Attn()
        self.norm3 = nn.LayerNorm(D)
        self.qkv = nn.Linear(D, 3 * D)  # fused, as HunyuanVideo's
        self.modulation = nn.Parameter(torch.randn(1, 2, D))

    def forward(self, x):
        h = self.norm3(x) * (1 + self.modulation[:, 0]) + self.modulation[:, 1]
        q, k, v = self.qkv(self.self_attn(h)).chunk(3, dim=-1)
        return x + torch.tanh(q * k) + v


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch = nn.Conv1d(2, D, 1)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(D, 2)

    def forward(self, x):  # x: (B, 2, L)
        h = self.patch(x).transpose(1, 2)
        for b in self.blocks:
            h = b(h)
        return self.head(h)


def _net() -> Net:
    torch.manual_seed(0)
    net = Net().double().requires_grad_(False)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return net


def _x():
    return torch.randn(3, 2, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _g(seed=2):
    return torch.Generator().manual_seed(seed)


def _rand(*shape, g):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _by_hand(net, changes, scale):
    """``changes``: parameter name -> full delta (before the scale); W + scale * delta for each."""
    ref = copy.deepcopy(net)
    params = dict(ref.named_parameters())
    for name, delta in changes.items():
        params[name].add_(scale * delta)
    return ref


def _lightx2v(net, g):
    """ComfyUI/kohya pairs with alpha plus LightX2V full-tensor deltas, under diffusion_model."""
    sd, changes = {}, {}
    for path, alpha in (("blocks.0.self_attn.q", 8.0), ("blocks.1.self_attn.o", None)):
        a, b = _rand(4, D, g=g), _rand(D, 4, g=g)
        sd[f"diffusion_model.{path}.lora_down.weight"], sd[f"diffusion_model.{path}.lora_up.weight"] = a, b
        if alpha is not None:
            sd[f"diffusion_model.{path}.alpha"] = torch.tensor(alpha)
        changes[f"{path}.weight"] = ((alpha or 4) / 4) * b @ a
    deltas = {
        "blocks.0.norm3.diff": "blocks.0.norm3.weight", "blocks.0.norm3.diff_b": "blocks.0.norm3.bias",
        "blocks.0.self_attn.q.diff_b": "blocks.0.self_attn.q.bias",  # a linear bias: hooked
        "blocks.1.modulation.diff": "blocks.1.modulation",  # .diff on the parameter itself
        "blocks.0.diff_m": "blocks.0.modulation",
        "head.diff": "head.weight",  # a linear weight: hooked
        "patch.diff": "patch.weight",  # a convolution: changed in place
    }
    params = dict(net.named_parameters())
    for key, param in deltas.items():
        sd[f"diffusion_model.{key}"] = delta = _rand(*params[param].shape, g=g)
        changes[param] = changes.get(param, 0) + delta
    return sd, changes


@pytest.mark.parametrize("mode", ["hook", "merge"])
def test_lightx2v_full_tensor_deltas_equal_the_hand_merge_and_remove_exactly(mode):
    net, scale = _net(), 0.6
    sd, changes = _lightx2v(net, _g())
    before = copy.deepcopy(net.state_dict())
    expected = _by_hand(net, changes, scale)(_x())
    base = net(_x())
    handle = apply_lora(net, sd, scale=scale, mode=mode)
    assert (handle.plan.keys, handle.plan.matched) == (len(sd), len(sd))
    assert torch.allclose(net(_x()), expected, rtol=1e-12, atol=1e-12)
    if mode == "hook":  # linear layers keep their weights; the norm, modulation and conv were changed in place
        assert torch.equal(net.head.weight, before["head.weight"])
        assert torch.equal(net.blocks[0].self_attn.q.bias, before["blocks.0.self_attn.q.bias"])
        assert not torch.equal(net.blocks[0].norm3.weight, before["blocks.0.norm3.weight"])
    handle.remove()
    after = net.state_dict()
    if mode == "hook":
        assert all(torch.equal(after[k], v) for k, v in before.items())
        assert torch.equal(net(_x()), base)
    else:
        assert all(torch.allclose(after[k], v, rtol=0, atol=1e-12) for k, v in before.items())


def test_musubi_underscores_resolve_against_the_module_tree():
    net, g = _net(), _g(3)
    a, b = _rand(2, D, g=g), _rand(D, 2, g=g)
    m = _rand(1, 2, D, g=g)
    sd = {"lora_unet_blocks_0_self_attn_q.lora_down.weight": a, "lora_unet_blocks_0_self_attn_q.lora_up.weight": b,
          "lora_unet_blocks_0_self_attn_q.alpha": torch.tensor(1.0), "lora_unet_blocks_1_modulation.diff": m}
    expected = _by_hand(net, {"blocks.0.self_attn.q.weight": 0.5 * b @ a, "blocks.1.modulation": m}, 2.0)(_x())
    apply_lora(net, sd, scale=2.0)
    assert torch.allclose(net(_x()), expected, rtol=1e-12, atol=1e-12)


def test_a_key_map_with_row_pieces_builds_one_layer_per_fused_projection():
    """diffusers-style separate q/k/v onto our fused qkv, and a bias whose two halves are swapped."""
    net, g = _net(), _g(4)

    def key_map(names):
        table = {f"blocks.0.attn.to_{n}.weight": [Rows("blocks.0.qkv.weight", i * D, D)] for i, n in enumerate("qkv")}
        table["blocks.1.swapped.bias"] = [Rows("blocks.1.qkv.bias", 0, D, D), Rows("blocks.1.qkv.bias", D, D, 0)]
        return {n: table[n] for n in names if n in table}

    sd, full = {}, torch.zeros(3 * D, D, dtype=torch.float64)
    for i, n in enumerate("qkv"):
        r = 2 + i
        a, b = _rand(r, D, g=g), _rand(D, r, g=g)
        stem = f"transformer.blocks.0.attn.to_{n}"
        sd[f"{stem}.lora_A.weight"], sd[f"{stem}.lora_B.weight"] = a, b
        sd[f"{stem}.alpha"] = torch.tensor(float(r * (i + 1)))
        full[i * D:(i + 1) * D] = (i + 1) * b @ a
    swapped = _rand(2 * D, g=g)
    sd["transformer.blocks.1.swapped.diff_b"] = swapped
    bias = torch.zeros(3 * D, dtype=torch.float64)
    bias[:D], bias[D:2 * D] = swapped[D:], swapped[:D]
    expected = _by_hand(net, {"blocks.0.qkv.weight": full, "blocks.1.qkv.bias": bias}, 0.7)(_x())
    plan = parse_lora(sd, net, key_map=key_map)
    assert [(layer.target, layer.rank) for layer in plan.layers] == [("blocks.0.qkv", 9)]
    for mode in ("hook", "merge"):
        model = copy.deepcopy(net)
        apply_lora(model, sd, scale=0.7, mode=mode, key_map=key_map)
        assert torch.allclose(model(_x()), expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(CheckpointError, match="9 of 10 keys match no layer"):  # no map: the q/k/v pairs match nothing
        apply_lora(copy.deepcopy(net), sd, key_map=lambda names: {n: v for n, v in key_map(names).items()
                                                                   if "swapped" in n})


def test_mismatches_are_one_line_with_counts_and_a_few_names():
    net = _net()
    sd, _ = _lightx2v(net, _g())
    sd["diffusion_model.blocks.7.self_attn.q.diff_b"] = torch.zeros(D, dtype=torch.float64)
    sd["diffusion_model.blocks.0.norm3.diff"] = torch.zeros(D + 1, dtype=torch.float64)
    with pytest.raises(CheckpointError) as err:
        apply_lora(net, sd, source="LoRA 'x.safetensors' for 'denoiser'")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("LoRA 'x.safetensors' for 'denoiser' does not fit this model")
    assert f"1 of {len(sd)} keys matches no layer of this model (diffusion_model.blocks.7.self_attn.q.diff_b)" in msg
    assert "diffusion_model.blocks.0.norm3.diff has shape (7,) but blocks.0.norm3.weight is (6,)" in msg
    with pytest.raises(CheckpointError, match=r"matches nothing in this model \(2 keys, e.g. other.lora_A.weight"):
        apply_lora(net, {"other.lora_A.weight": torch.zeros(2, D), "other.lora_B.weight": torch.zeros(D, 2)})


def test_norm_and_modulation_deltas_under_a_streaming_policy_and_removed_again():
    resident = get_policy("resident", torch.float32)
    comps = load(resident)
    plain = run(resident)
    g = torch.Generator().manual_seed(7)
    sd = {"blocks.0.norm.diff": torch.randn(8, generator=g), "blocks.1.norm.diff_b": torch.randn(8, generator=g),
          "blocks.0.fc1.lora_A.weight": torch.randn(2, 8, generator=g),
          "blocks.0.fc1.lora_B.weight": torch.randn(16, 2, generator=g), "inp.diff_b": torch.randn(8, generator=g)}
    apply_lora_to(resident, {"high": sd})
    expected = run(resident)
    assert not torch.equal(expected, plain)
    streamed = get_policy("stream", torch.float32)
    load(streamed)
    handles = apply_lora_to(streamed, {"high": sd})
    assert torch.equal(run(streamed), expected)
    remove_lora_from(streamed, handles)
    assert torch.equal(run(streamed), plain)
    assert comps["high"].blocks[0].norm.weight.shape == (8,)


def test_lora_spec_parsing():
    assert LoraSpec.parse("a.safetensors") == LoraSpec("a.safetensors")
    assert LoraSpec.parse("a.safetensors:0.5") == LoraSpec("a.safetensors", 0.5)
    assert LoraSpec.parse("/x/hi.safetensors@high_noise") == LoraSpec("/x/hi.safetensors", 1.0, ("high_noise",))
    assert LoraSpec.parse("c:/x/lo.safetensors:-1.5@low_noise,high_noise") == LoraSpec(
        "c:/x/lo.safetensors", -1.5, ("low_noise", "high_noise"))
    assert LoraSpec.parse("/mail@host/x.safetensors").path == "/mail@host/x.safetensors"  # not a component
    with pytest.raises(InvalidRequestError, match="LoRA scale"):
        LoraSpec.parse("a.safetensors:inf")
    with pytest.raises(InvalidRequestError, match="mode"):
        LoraSpec("a.safetensors", mode="fuse")
