"""Attention dispatch: every CPU backend equals a math reference; varlen; forcing; env var; plugin backends."""

from __future__ import annotations

import math
import types

import pytest
import torch

from vidcore import plugins
from vidcore.attention import (
    AttentionBackendError,
    attention,
    attention_backends,
    attention_varlen,
    cu_seqlens,
    pack,
    unpack,
)
from vidcore.errors import UnknownNameError
from vidcore.hookspecs import hookimpl


def reference(q, k, v, mask=None, scale=None, causal=False):
    """softmax(q k^T * scale + mask) v in float64, written out (GQA by repeating k/v heads)."""
    q, k, v = q.double(), k.double(), v.double()
    rep = q.shape[-3] // k.shape[-3]
    k, v = k.repeat_interleave(rep, dim=-3), v.repeat_interleave(rep, dim=-3)
    s = (q @ k.transpose(-1, -2)) * (scale if scale is not None else 1 / math.sqrt(q.shape[-1]))
    if causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).tril().logical_not(), float("-inf"))
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask.double()
    return torch.softmax(s, -1) @ v


@pytest.fixture
def core_only(monkeypatch):
    monkeypatch.setenv("VIDCORE_LOAD_PLUGINS", "")
    monkeypatch.delenv("VIDCORE_ATTENTION", raising=False)
    plugins.reset()
    yield
    plugins.reset()


def _cpu_backends(q, k, v, **kw):
    """Names that run these inputs on this machine (the rest must refuse with AttentionBackendError)."""
    ok = []
    for name in attention_backends():
        try:
            attention(q, k, v, backend=name, **kw)
            ok.append(name)
        except AttentionBackendError:
            pass
    return ok


CASES = {
    "plain": dict(),
    "scale": dict(scale=0.3),
    "causal": dict(causal=True),
    "bool-mask": dict(mask="bool"),
    "additive-mask": dict(mask="add"),
}


SELF, CROSS_GQA = ((2, 4, 7, 16), (2, 4, 7, 16)), ((1, 4, 5, 8), (1, 2, 9, 8))


@pytest.mark.parametrize("case,shape", [(c, SELF) for c in CASES] + [(c, CROSS_GQA) for c in CASES if c != "causal"])
def test_every_cpu_backend_equals_math(core_only, case, shape):
    torch.manual_seed(0)
    (qs, ks) = shape
    q, k, v = torch.randn(qs), torch.randn(ks), torch.randn(ks)
    kw = dict(CASES[case])
    if kw.get("mask") == "bool":
        kw["mask"] = torch.rand(qs[-2], ks[-2]) > 0.3
        kw["mask"][:, 0] = True  # no fully masked row
    elif kw.get("mask") == "add":
        kw["mask"] = torch.randn(qs[-2], ks[-2])
    names = _cpu_backends(q, k, v, **kw)
    assert {"sdpa", "sdpa-math", "sdpa-flash"} <= set(names), names
    want = reference(q, k, v, **kw)
    for name in names + [None]:
        got = attention(q, k, v, backend=name, **kw)
        assert got.shape == want.shape
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5, msg=f"backend {name}")


@pytest.mark.parametrize("backend", [None, "sdpa", "sdpa-math", "sdpa-flash"])
@pytest.mark.parametrize("causal", [False, True])
def test_varlen_equals_per_sequence(core_only, backend, causal):
    torch.manual_seed(1)
    lq, lk = [5, 1, 9], [5, 1, 9] if causal else [3, 7, 2]
    q = torch.randn(sum(lq), 4, 8)
    k, v = torch.randn(sum(lk), 4, 8), torch.randn(sum(lk), 4, 8)
    cq, ck = cu_seqlens(lq), cu_seqlens(lk)
    out = attention_varlen(q, k, v, cq, ck, causal=causal, backend=backend, scale=0.5)
    assert out.shape == q.shape
    for i in range(3):
        qi, ki, vi = (t[c[i]:c[i + 1]].transpose(0, 1)[None] for t, c in ((q, cq), (k, ck), (v, ck)))
        want = reference(qi, ki, vi, scale=0.5, causal=causal)[0].transpose(0, 1)
        torch.testing.assert_close(out[cq[i]:cq[i + 1]].double(), want, rtol=1e-5, atol=1e-5)


def test_varlen_matches_padded_key_mask_and_pack_roundtrip(core_only):
    torch.manual_seed(2)
    lengths, L = [6, 3], 6
    q, k, v = (torch.randn(2, L, 2, 8) for _ in range(3))  # (B, L, H, D), padded
    valid = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]
    masked = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                       mask=valid[:, None, None, :]).transpose(1, 2)
    cu = cu_seqlens(lengths)
    packed = attention_varlen(pack(q, lengths), pack(k, lengths), pack(v, lengths), cu, cu)
    out = unpack(packed, cu, L)
    torch.testing.assert_close(out[valid], masked[valid], rtol=1e-5, atol=1e-5)
    assert torch.equal(out[~valid], torch.zeros_like(out[~valid]))  # padding is never computed
    assert torch.equal(unpack(pack(q, lengths), cu, L)[valid], q[valid])


def test_varlen_empty_sequence_gives_zeros(core_only):
    q, k = torch.randn(4, 2, 8), torch.randn(4, 2, 8)
    out = attention_varlen(q, k, k, cu_seqlens([4, 0]), cu_seqlens([0, 4]))
    assert torch.equal(out, torch.zeros_like(out))
    with pytest.raises(Exception, match="cu_seqlens"):
        attention_varlen(q, k, k, cu_seqlens([4]), cu_seqlens([2, 2]))


def test_forced_backend_that_cannot_run_raises_one_line(core_only, monkeypatch):
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(AttentionBackendError) as info:
        attention(q, q, q, backend="sdpa-efficient")  # CUDA only
    assert "\n" not in str(info.value) and "sdpa-efficient" in str(info.value)
    with pytest.raises(AttentionBackendError):
        attention_varlen(q[0].transpose(0, 1), q[0].transpose(0, 1), q[0].transpose(0, 1),
                         cu_seqlens([4]), cu_seqlens([4]), backend="sdpa-cudnn")
    with pytest.raises(UnknownNameError, match="no-such-kernel"):
        attention(q, q, q, backend="no-such-kernel")


def _spy_plugin(calls, *, priority=5, available=True, fails=False, varlen=False):
    def spy(q, k, v, *, mask=None, scale=None, causal=False):
        calls.append("spy")
        if fails:
            raise RuntimeError("spy kernel broke")
        return reference(q, k, v, mask, scale, causal).to(q.dtype)

    def spy_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, causal=False):
        calls.append(("varlen", max_q, max_k))
        return torch.zeros_like(q)

    mod = types.ModuleType("spy_attention_plugin")

    @hookimpl
    def register_attention(register):
        extra = {"varlen": spy_varlen} if varlen else {}
        register("spy", spy, available=lambda q, k, v, mask: available, priority=priority, **extra)

    mod.register_attention = register_attention
    return mod


@pytest.fixture
def with_plugin(monkeypatch):
    monkeypatch.setenv("VIDCORE_LOAD_PLUGINS", "")
    monkeypatch.delenv("VIDCORE_ATTENTION", raising=False)

    def install(**kw):
        calls: list = []
        plugins.reset(extra_plugins=[("spy", _spy_plugin(calls, **kw))])
        return calls

    yield install
    plugins.reset()


def test_plugin_backend_is_chosen_automatically(with_plugin):
    calls = with_plugin(priority=5)
    q = torch.randn(1, 2, 4, 8)
    assert "spy" in attention_backends()
    torch.testing.assert_close(attention(q, q, q).double(), reference(q, q, q), rtol=1e-5, atol=1e-5)
    assert calls == ["spy"]


def test_plugin_backend_with_priority_zero_runs_only_when_named(with_plugin, monkeypatch):
    calls = with_plugin(priority=0)
    q = torch.randn(1, 2, 4, 8)
    attention(q, q, q)
    assert calls == []
    monkeypatch.setenv("VIDCORE_ATTENTION", "spy")  # the environment variable selects it
    attention(q, q, q)
    assert calls == ["spy"]
    attention(q, q, q, backend="sdpa")  # a per-call choice beats the environment
    assert calls == ["spy"]


def test_automatic_choice_falls_back_silently(with_plugin, caplog):
    q = torch.randn(1, 2, 4, 8)
    for kw in (dict(available=False), dict(fails=True)):
        calls = with_plugin(**kw)
        torch.testing.assert_close(attention(q, q, q).double(), reference(q, q, q), rtol=1e-5, atol=1e-5)
        assert calls == ([] if "available" in kw else ["spy"])
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]


def test_forced_plugin_backend_refusing_inputs_raises(with_plugin, monkeypatch):
    with_plugin(available=False)
    monkeypatch.setenv("VIDCORE_ATTENTION", "spy")
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(AttentionBackendError, match="'spy' cannot run"):
        attention(q, q, q)


def test_varlen_uses_a_plugin_native_kernel_or_loops_over_its_dense_one(with_plugin):
    q = torch.randn(7, 2, 8)
    cu = cu_seqlens([3, 4])
    calls = with_plugin(varlen=True)
    assert torch.equal(attention_varlen(q, q, q, cu, cu, backend="spy"), torch.zeros_like(q))
    assert calls == [("varlen", 4, 4)]
    calls = with_plugin(varlen=False)
    out = attention_varlen(q, q, q, cu, cu, backend="spy")
    assert calls == ["spy", "spy"]  # one dense call per sequence
    want = reference(q[:3].transpose(0, 1)[None], q[:3].transpose(0, 1)[None], q[:3].transpose(0, 1)[None])
    torch.testing.assert_close(out[:3].double(), want[0].transpose(0, 1), rtol=1e-5, atol=1e-5)
