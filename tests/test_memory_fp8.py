"""fp8 (e4m3, per-output-channel scales) weight storage: error bounds, the per-layer report, and the policy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vidcore.memory import FP8Linear, format_table, fp8_error_table, get_policy, quantize_fp8_
from vidcore.memory.fp8 import FP8_MAX, dequantize_weight, quantize_linear_, quantize_weight
from vidcore.memory.testing import load, run


def _rows_of_many_magnitudes() -> torch.Tensor:
    torch.manual_seed(0)
    w = torch.randn(24, 40) * torch.logspace(-4, 2, 24)[:, None]
    w[5] = 0.0  # an all-zero row
    return w


def test_quantisation_error_is_within_half_an_e4m3_step_per_element():
    w = _rows_of_many_magnitudes()
    q, scale = quantize_weight(w)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (24,) and scale.dtype == torch.float32
    err = (dequantize_weight(q, scale) - w).abs()
    # e4m3: 3 mantissa bits (relative half-step 2^-4) for normal values, subnormal step 2^-9 below 2^-6
    bound = 2.0**-4 * w.abs() + 2.0**-10 * scale[:, None]
    assert (err <= bound * (1 + 1e-6)).all()
    assert torch.equal(dequantize_weight(q, scale)[5], torch.zeros(40))
    # the largest entry of each row uses the top of the e4m3 range
    assert torch.allclose(q.float().abs().amax(1)[scale != 1], torch.full((23,), FP8_MAX))


def test_per_channel_scales_beat_one_scale_per_tensor():
    w = _rows_of_many_magnitudes()
    q, scale = quantize_weight(w)
    per_channel = (dequantize_weight(q, scale) - w).norm(dim=1) / w.norm(dim=1).clamp_min(1e-30)
    s = w.abs().max() / FP8_MAX
    per_tensor = ((w / s).to(torch.float8_e4m3fn).float() * s - w).norm(dim=1) / w.norm(dim=1).clamp_min(1e-30)
    small = (w.abs().amax(1) < 1e-3) & (w.abs().amax(1) > 0)
    assert (per_channel[small] < 0.07).all() and (per_tensor[small] > 0.2).all()


def test_fp8_linear_is_the_same_module_computing_with_dequantised_weights():
    torch.manual_seed(1)
    lin = nn.Linear(16, 8)
    hook_calls = []
    lin.register_forward_hook(lambda m, a, o: hook_calls.append(1))
    w = lin.weight.detach().clone()
    rel, max_abs = quantize_linear_(lin)
    assert isinstance(lin, FP8Linear) and isinstance(lin, nn.Linear)
    assert lin.weight.dtype == torch.float8_e4m3fn and lin.compute_dtype == torch.float32
    x = torch.randn(5, 16)
    expected = F.linear(x, dequantize_weight(lin.weight, lin.weight_scale), lin.bias)
    assert torch.allclose(lin(x), expected, rtol=1e-5, atol=1e-6)
    assert hook_calls == [1]  # hooks registered before the conversion still run
    assert 0 < rel < 0.07 and max_abs == (dequantize_weight(lin.weight, lin.weight_scale) - w).abs().max().item()


def test_error_table_reports_every_linear_without_changing_the_module():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Sequential(nn.Linear(64, 16)), nn.LayerNorm(16))
    before = [p.clone() for p in model.parameters()]
    rows = fp8_error_table(model)
    assert [(r.name, r.shape) for r in rows] == [("0", (64, 32)), ("2.0", (16, 64))]
    for r in rows:
        assert 1e-3 < r.weight_rel < 0.07 and 1e-3 < r.output_rel < 0.07 and r.weight_max_abs > 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    text = format_table(rows)
    assert len(text.splitlines()) == 4 and "(max)" in text and "2.0" in text
    # converting in place reports the same weight errors (of the weights as loaded)
    model.to(torch.bfloat16)
    again = quantize_fp8_(model)
    assert [r.name for r in again] == ["0", "2.0"]
    assert all(abs(a.weight_rel - b.weight_rel) < 1e-6 for a, b in zip(rows, again, strict=True))
    assert quantize_fp8_(model) == []  # already fp8: nothing to do


def test_fp8_policy_stores_only_the_denoisers_in_fp8():
    policy = get_policy("fp8")
    assert policy.load_device("high", torch.device("cuda")) == torch.device("cpu")  # quantised before moving
    comps = load(policy)
    for comp in ("high", "low"):
        linears = [m for m in comps[comp].modules() if isinstance(m, nn.Linear)]
        assert linears and all(isinstance(m, FP8Linear) and m.compute_dtype == torch.bfloat16 for m in linears)
        assert len(policy.fp8_report[comp]) == len(linears)
    assert not isinstance(comps["text_encoder"].proj, FP8Linear) and not isinstance(comps["vae"], FP8Linear)
    assert set(policy.fp8_report) == {"high", "low"}
    out = run(policy).float()
    bf16 = get_policy("bf16")
    load(bf16)
    ref = run(bf16).float()
    assert 0 < (out - ref).norm() / ref.norm() < 0.1


@pytest.mark.parametrize("preset", ["fp8+stream", "fp8+offload", "low-vram+fp8"])
def test_fp8_storage_works_under_every_placement(preset):
    reference = get_policy("fp8", torch.float32)
    load(reference)
    expected = run(reference)
    policy = get_policy(preset, torch.float32)
    comps = load(policy)
    assert isinstance(comps["high"].blocks[0].fc1, FP8Linear)
    out = run(policy)
    assert torch.equal(out, expected)
    if "stream" in preset or "low-vram" in preset:
        block = policy.strategies["high"].blocks[0]
        assert any(t.dtype == torch.float8_e4m3fn for t in block.host)  # what streams is fp8
