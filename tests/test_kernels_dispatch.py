"""The kernel dispatcher: auto picks the reference off CUDA, forced modes obey or raise one clear line."""

from __future__ import annotations

import os
import sys

import pytest
import torch

import vidcore.kernels as K
from vidcore.errors import UnknownNameError
from vidcore.kernels import dispatch as D
from vidcore.kernels import reference as ref
from vidcore.kernels.testing import interpreted


@pytest.fixture
def no_kernel_import(monkeypatch):
    """Fail if the dispatcher tries to load any Triton module."""
    def boom(kernel, op):
        raise AssertionError(f"dispatcher loaded triton_{kernel}.{op}")
    monkeypatch.setattr(D, "launcher", boom)


def test_auto_on_cpu_runs_the_reference(monkeypatch, no_kernel_import):
    monkeypatch.delenv("VIDCORE_KERNELS", raising=False)
    x = torch.randn(2, 3, 16)
    assert torch.equal(K.rms_norm(x), ref.rms_norm(x))
    assert torch.equal(K.gated_residual(x, x, x), ref.gated_residual(x, x, x))


def test_reference_mode_never_loads_a_kernel(monkeypatch, no_kernel_import):
    monkeypatch.setenv("VIDCORE_KERNELS", "reference")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    x = torch.randn(4, 8)
    assert torch.equal(K.layer_norm(x), ref.layer_norm(x))


def test_forced_triton_without_cuda_raises_one_line(monkeypatch):
    monkeypatch.setenv("VIDCORE_KERNELS", "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(K.KernelUnavailableError) as info:
        K.rms_norm(torch.randn(2, 8))
    msg = str(info.value)
    assert "\n" not in msg and "VIDCORE_KERNELS" in msg and "cpu" in msg


def test_unknown_mode_is_named(monkeypatch):
    monkeypatch.setenv("VIDCORE_KERNELS", "fastest")
    with pytest.raises(UnknownNameError, match="fastest"):
        K.rms_norm(torch.randn(2, 8))


def test_grad_takes_the_reference_and_forced_triton_refuses(monkeypatch):
    x = torch.randn(2, 8, requires_grad=True)
    monkeypatch.delenv("VIDCORE_KERNELS", raising=False)
    K.rms_norm(x).sum().backward()  # auto: the reference, with autograd
    assert x.grad is not None
    with interpreted("norm_modulate"):
        with pytest.raises(K.KernelUnavailableError, match="grad"):
            K.rms_norm(x)
        with torch.no_grad():
            assert torch.allclose(K.rms_norm(x), ref.rms_norm(x), atol=1e-6)


def test_unsupported_shapes_fall_back_when_auto_and_raise_when_forced(monkeypatch):
    x, w = torch.randn(3, 8), torch.randn(1, 8)  # a (1, C) weight broadcasts in torch; the kernel declines it
    with interpreted("norm_modulate"):
        with pytest.raises(K.KernelUnavailableError, match="weight"):
            K.rms_norm(x, w)
        monkeypatch.setenv("VIDCORE_KERNELS", "auto")
        monkeypatch.setattr(D, "why_not_triton", lambda tensors, forced: None)  # pretend CUDA
        assert torch.equal(K.rms_norm(x, w), ref.rms_norm(x, w))
        assert torch.allclose(K.rms_norm(x), ref.rms_norm(x), atol=1e-6)  # supported: the kernel runs


def test_interpreted_context_does_not_leak():
    before = os.environ.get("TRITON_INTERPRET"), os.environ.get("VIDCORE_KERNELS")
    with interpreted("gated_residual") as mod:
        assert os.environ["TRITON_INTERPRET"] == "1"
        assert type(mod._gated_residual_kernel).__name__ == "InterpretedFunction"
    assert (os.environ.get("TRITON_INTERPRET"), os.environ.get("VIDCORE_KERNELS")) == before
    assert not [m for m in sys.modules if m.startswith("vidcore.kernels.triton_")]
