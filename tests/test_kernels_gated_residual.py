"""Triton gated residual ``x + gate * y`` against the torch reference, interpreted on CPU."""

from __future__ import annotations

import pytest
import torch

from vidcore.kernels import reference as ref
from vidcore.kernels.testing import TOL, assert_close, interpreted

SHAPES = [(2, 7, 96), (1, 1, 33), (3, 5, 1030), (2, 3, 4, 20), (5, 12)]


@pytest.fixture(scope="module")
def kern():
    with interpreted("gated_residual") as mod:
        yield mod


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", SHAPES)
def test_gated_residual_matches_reference(kern, dtype, shape):
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=gen).to(dtype)
    y = torch.randn(shape, generator=gen).to(dtype)
    per_sample = (shape[0], *([1] * (len(shape) - 2)), shape[-1])
    gates = [
        None,
        torch.randn(per_sample, generator=gen).to(dtype),
        torch.randn(shape, generator=gen),  # float32 gate: product and sum promote, result in x's dtype
        torch.randn(*shape[:-1], 6, shape[-1], generator=gen).to(dtype).unbind(-2)[2],  # strided chunk
        torch.randn(shape[-1], generator=gen).to(dtype),
    ]
    for gate in gates:
        assert_close(kern.gated_residual(x, y, gate), ref.gated_residual(x, y, gate), TOL[dtype])


def test_in_place_output(kern):
    gen = torch.Generator().manual_seed(0)
    x, y, gate = torch.randn(2, 9, 40, generator=gen), torch.randn(2, 9, 40, generator=gen), torch.randn(2, 1, 40)
    expected = ref.gated_residual(x, y, gate)
    stream = x.clone()
    out = kern.gated_residual(stream, y, gate, out=stream)
    assert out.data_ptr() == stream.data_ptr()
    assert_close(stream, expected, 1e-6)
    ref_stream = x.clone()
    assert ref.gated_residual(ref_stream, y, gate, out=ref_stream) is ref_stream
    assert_close(ref_stream, expected, 0)


def test_public_function_routes_to_the_kernel(kern, monkeypatch):
    import vidcore.kernels as K

    calls = []
    real = kern.gated_residual
    monkeypatch.setattr(kern, "gated_residual", lambda *a, **k: calls.append(1) or real(*a, **k))
    x, y, g = torch.randn(1, 5, 8), torch.randn(1, 5, 8), torch.randn(1, 1, 8)
    assert_close(K.gated_residual(x, y, g), ref.gated_residual(x, y, g), 1e-6)
    assert calls == [1]
    assert not torch.allclose(K.gated_residual(x, y, g), ref.gated_residual(x, y))
