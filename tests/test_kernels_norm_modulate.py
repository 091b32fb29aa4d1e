"""Triton norm + AdaLN modulation (and plain rms_norm/layer_norm) against the torch reference, interpreted on CPU."""

from __future__ import annotations

import pytest
import torch

from vidcore.kernels import reference as ref
from vidcore.kernels.testing import TOL, assert_close, interpreted

# (B, L, C): odd and non-power-of-2 widths, one-token sequences, 2-D input.
SHAPES = [(2, 7, 96), (1, 1, 33), (3, 5, 130), (1, 3, 8, 40), (6, 50)]


@pytest.fixture(scope="module")
def kern():
    with interpreted("norm_modulate") as mod:
        yield mod


def _mod(shape, how, dtype, gen):
    """shift/scale as the models lay them out: per sample, per token, or strided chunks of one tensor."""
    C = shape[-1]
    if how == "per-sample":
        s = (shape[0], *([1] * (len(shape) - 2)), C)
        return torch.randn(s, generator=gen).to(dtype), 0.2 * torch.randn(s, generator=gen).to(dtype)
    if how == "per-token":
        return torch.randn(shape, generator=gen).to(dtype), 0.2 * torch.randn(shape, generator=gen).to(dtype)
    e = torch.randn(*shape[:-1], 6, C, generator=gen).to(dtype)  # Wan: modulation chunks along dim -2
    chunks = e.unbind(-2)
    return chunks[0], 0.2 * chunks[1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_norm_modulate_matches_reference(kern, dtype, shape, kind):
    gen = torch.Generator().manual_seed(sum(shape))
    x = (3 * torch.randn(shape, generator=gen) + 1).to(dtype)
    C = shape[-1]
    for how in ("per-sample", "per-token", "strided"):
        shift, scale = _mod(shape, how, dtype, gen)
        assert_close(kern.norm_modulate(x, shift, scale, kind=kind),
                     ref.norm_modulate(x, shift, scale, kind=kind), TOL[dtype])
    # affine weight/bias in the input dtype, float32 modulation (Wan's autocast layout), explicit out dtype
    w, b = torch.randn(C, generator=gen).to(dtype), torch.randn(C, generator=gen).to(dtype)
    shift, scale = _mod(shape, "per-sample", torch.float32, gen)
    bias = b if kind == "layer" else None
    assert_close(kern.norm_modulate(x, shift, scale, kind=kind, weight=w, bias=bias, eps=1e-5),
                 ref.norm_modulate(x, shift, scale, kind=kind, weight=w, bias=bias, eps=1e-5), TOL[dtype])
    assert_close(kern.norm_modulate(x, shift, scale, kind=kind, out_dtype=dtype),
                 ref.norm_modulate(x, shift, scale, kind=kind, out_dtype=dtype), TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", SHAPES)
def test_plain_norms_match_reference(kern, dtype, shape):
    gen = torch.Generator().manual_seed(7 + sum(shape))
    x = (2 * torch.randn(shape, generator=gen) - 0.5).to(dtype)
    w, b = torch.randn(shape[-1], generator=gen), torch.randn(shape[-1], generator=gen)
    assert_close(kern.rms_norm(x), ref.rms_norm(x), TOL[dtype])
    assert_close(kern.rms_norm(x, w.to(dtype)), ref.rms_norm(x, w.to(dtype)), TOL[dtype])
    assert_close(kern.rms_norm(x, w), ref.rms_norm(x, w), TOL[dtype])  # float32 weight promotes
    assert_close(kern.layer_norm(x), ref.layer_norm(x), TOL[dtype])
    assert_close(kern.layer_norm(x, w, b), ref.layer_norm(x, w, b), TOL[dtype])


def test_public_functions_route_to_the_kernel(kern, monkeypatch):
    """Under VIDCORE_KERNELS=triton the public functions run the kernel (a broken one would show here)."""
    import vidcore.kernels as K

    calls = []
    real = kern.norm_modulate
    monkeypatch.setattr(kern, "norm_modulate", lambda *a, **k: calls.append(1) or real(*a, **k))
    x, shift, scale = torch.randn(2, 3, 24), torch.randn(2, 1, 24), torch.randn(2, 1, 24)
    assert_close(K.norm_modulate(x, shift, scale, kind="rms"), ref.norm_modulate(x, shift, scale, kind="rms"),
                 1e-5)
    assert calls == [1]
    assert_close(K.rms_norm(x), ref.rms_norm(x), 1e-5)
    assert_close(K.layer_norm(x), ref.layer_norm(x), 1e-5)


def test_kernel_output_depends_on_each_input(kern):
    """Guards the comparison itself: a wrong eps or a dropped shift changes the result."""
    x, shift, scale = torch.randn(1, 4, 16), torch.randn(1, 1, 16), torch.randn(1, 1, 16)
    out = kern.norm_modulate(x, shift, scale, kind="layer")
    assert not torch.allclose(out, ref.norm_modulate(x, torch.zeros_like(shift), scale, kind="layer"))
    assert not torch.allclose(out, ref.norm_modulate(x, shift, scale, kind="rms"))
