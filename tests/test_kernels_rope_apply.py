"""Triton 3D RoPE (interleaved pairs, Wan/HunyuanVideo layouts) against the torch reference, on CPU."""

from __future__ import annotations

import pytest
import torch

from vidcore.kernels import reference as ref
from vidcore.kernels.testing import TOL, assert_close, interpreted

# (head-dim split over t/h/w, latent grid): Wan's 44/42/42 split scaled down, HunyuanVideo's 16/56/56 likewise,
# and an odd grid with one-token axes.
CASES = [((6, 4, 4), (2, 3, 2)), ((2, 8, 8), (3, 1, 5)), ((4, 2, 2), (1, 1, 1))]


@pytest.fixture(scope="module")
def kern():
    with interpreted("rope_apply") as mod:
        yield mod


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("table_dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("dims,grid", CASES)
def test_rope_matches_reference(kern, dtype, table_dtype, dims, grid):
    gen = torch.Generator().manual_seed(sum(dims) + sum(grid))
    cos, sin = ref.rope_freqs_3d(dims, grid, dtype=table_dtype)
    L, D = cos.shape[0], 2 * cos.shape[1]
    # head-first (B, H, L, D), also 3-D and 2-D
    for shape in [(2, 3, L, D), (3, L, D), (L, D)]:
        x = torch.randn(shape, generator=gen).to(dtype)
        assert_close(kern.rope_apply(x, cos, sin), ref.rope_apply(x, cos, sin), TOL[dtype])
    # token-first (B, L, H, D) with (L, 1, D/2) tables, HunyuanVideo / Wan's layout
    x = torch.randn(2, L, 3, D, generator=gen).to(dtype)
    c, s = cos[:, None], sin[:, None]
    assert_close(kern.rope_apply(x, c, s), ref.rope_apply(x, c, s), TOL[dtype])
    # a strided view: the image tokens of a longer [image, text] sequence
    longer = torch.randn(2, L + 5, 3, D, generator=gen).to(dtype)
    assert_close(kern.rope_apply(longer[:, :L], c, s), ref.rope_apply(longer[:, :L], c, s), TOL[dtype])


def test_rope_rotates_pairs_not_halves(kern):
    """Interleaved pairs: rotating by 90 degrees maps (a, b) -> (-b, a) within each pair."""
    x = torch.arange(8, dtype=torch.float32).view(1, 8).expand(2, 8).contiguous()
    cos, sin = torch.zeros(2, 4), torch.ones(2, 4)
    out = kern.rope_apply(x, cos, sin)
    assert torch.equal(out[0], torch.tensor([-1.0, 0, -3, 2, -5, 4, -7, 6]))


def test_public_function_routes_to_the_kernel(kern, monkeypatch):
    import vidcore.kernels as K

    calls = []
    real = kern.rope_apply
    monkeypatch.setattr(kern, "rope_apply", lambda *a, **k: calls.append(1) or real(*a, **k))
    cos, sin = ref.rope_freqs_3d((4, 2, 2), (2, 2, 1))
    x = torch.randn(1, 2, 4, 8)
    assert_close(K.rope_apply(x, cos, sin), ref.rope_apply(x, cos, sin), 1e-5)
    assert calls == [1]
