"""Triton QK RMSNorm (Wan: over the full hidden dim; HunyuanVideo: per head) against the reference, on CPU."""

from __future__ import annotations

import pytest
import torch

from vidcore.kernels import reference as ref
from vidcore.kernels.testing import TOL, assert_close, interpreted


@pytest.fixture(scope="module")
def kern():
    with interpreted("qk_rms_norm") as mod:
        yield mod


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("q_shape,k_shape", [
    ((2, 7, 96), (2, 7, 96)),            # Wan: (B, L, heads*head_dim) rows before the head split
    ((1, 1, 3 * 22), (1, 5, 3 * 22)),    # cross-attention: one query token, other key length
    ((2, 5, 3, 24), (2, 9, 3, 24)),      # HunyuanVideo: per head_dim
    ((1, 4, 2, 130), (1, 4, 2, 130)),    # non-power-of-2 head dim
])
def test_qk_rms_norm_matches_reference(kern, dtype, q_shape, k_shape):
    gen = torch.Generator().manual_seed(sum(q_shape) + sum(k_shape))
    q = (2 * torch.randn(q_shape, generator=gen)).to(dtype)
    k = (torch.randn(k_shape, generator=gen) + 1).to(dtype)
    C = q_shape[-1]
    wq, wk = torch.randn(C, generator=gen), torch.randn(C, generator=gen).to(dtype)
    for weights in [(None, None), (wq, wk), (wq.to(dtype), None)]:
        got, want = kern.qk_rms_norm(q, k, *weights, eps=1e-6), ref.qk_rms_norm(q, k, *weights, eps=1e-6)
        assert_close(got[0], want[0], TOL[dtype])
        assert_close(got[1], want[1], TOL[dtype])


def test_q_and_k_use_their_own_weights(kern):
    q, k = torch.randn(1, 3, 16), torch.randn(1, 3, 16)
    wq, wk = torch.full((16,), 2.0), torch.full((16,), -1.0)
    nq, nk = kern.qk_rms_norm(q, k, wq, wk)
    assert_close(nq, 2 * ref.rms_norm(q), 1e-6)
    assert_close(nk, -ref.rms_norm(k), 1e-6)


def test_public_function_routes_to_the_kernel(kern, monkeypatch):
    import vidcore.kernels as K

    calls = []
    real = kern.qk_rms_norm
    monkeypatch.setattr(kern, "qk_rms_norm", lambda *a, **k: calls.append(1) or real(*a, **k))
    q, k = torch.randn(1, 3, 2, 8), torch.randn(1, 4, 2, 8)
    got, want = K.qk_rms_norm(q, k), ref.qk_rms_norm(q, k)
    assert_close(got[0], want[0], 1e-5)
    assert_close(got[1], want[1], 1e-5)
    assert calls == [1]
