"""Helpers for testing the Triton kernels on CPU under Triton's interpreter.

``@triton.jit`` decides at decoration time, i.e. when a kernel module is
imported, whether it builds a GPU kernel or an interpreted one, so
``TRITON_INTERPRET=1`` must be set before the import. `interpreted` sets it,
imports fresh copies of the kernel modules, and on exit restores the
environment and forgets those copies, so nothing leaks into other tests in
the same process (a later import builds GPU kernels again).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType

import torch

_PREFIX = "vidcore.kernels.triton_"
_ENV = ("TRITON_INTERPRET", "VIDCORE_KERNELS")


def _forget_kernel_modules() -> None:
    for name in [n for n in sys.modules if n.startswith(_PREFIX) or n == "vidcore.kernels._launch"]:
        del sys.modules[name]


@contextlib.contextmanager
def interpreted(kernel: str, *, force: bool = True) -> Iterator[ModuleType]:
    """Import ``vidcore.kernels.triton_<kernel>`` interpreted; with ``force`` the dispatcher picks it too."""
    saved = {k: os.environ.get(k) for k in _ENV}
    _forget_kernel_modules()
    os.environ["TRITON_INTERPRET"] = "1"
    if force:
        os.environ["VIDCORE_KERNELS"] = "triton"
    try:
        yield importlib.import_module(_PREFIX + kernel)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _forget_kernel_modules()


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    """Max abs error within ``rel`` times the reference's max magnitude, with dtypes and shapes equal."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    a, e = actual.double(), expected.double()
    assert torch.isfinite(a).all(), "non-finite values in the kernel output"
    err = (a - e).abs().max().item()
    bound = rel * max(e.abs().max().item(), 1e-30)
    assert err <= bound, f"max abs error {err:.3g} > {bound:.3g} ({rel} relative)"


TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
