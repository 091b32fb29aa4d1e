"""Choosing between a Triton kernel and its torch reference, per call.

Rules (docs/kernels.md):

- ``VIDCORE_KERNELS`` unset or ``auto``: the Triton kernel runs when Triton
  imports, CUDA is available, every tensor argument is on CUDA and no autograd
  graph is being recorded through them; anything else (and any launcher that
  declines the shapes) runs the reference, silently.
- ``VIDCORE_KERNELS=reference``: always the reference.
- ``VIDCORE_KERNELS=triton``: always the kernel; when it cannot run, one
  `KernelUnavailableError` line says why. Under ``TRITON_INTERPRET=1`` a forced
  kernel also runs on CPU tensors (that is how the CPU tests exercise it).

The kernels are for inference: they record no autograd graph, so a call that
needs gradients takes the reference.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable
from typing import Any

import torch

from ..errors import UnknownNameError, VidcoreError

MODES = ("auto", "reference", "triton")
ENV = "VIDCORE_KERNELS"


class KernelUnavailableError(VidcoreError):
    """A Triton kernel was forced (``VIDCORE_KERNELS=triton``) but cannot run these inputs here."""


class Unsupported(Exception):
    """Raised by a launcher, before launching, for inputs it does not handle (the reference does)."""


def mode() -> str:
    raw = (os.environ.get(ENV) or "auto").strip().lower()
    if raw not in MODES:
        raise UnknownNameError("kernel mode (VIDCORE_KERNELS)", raw, MODES)
    return raw


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=1)
def triton_importable() -> str | None:
    """None when Triton imports, else the reason it does not."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install raising anything
        return f"triton does not import ({type(exc).__name__}: {exc})"
    return None


def why_not_triton(tensors: list[torch.Tensor], *, forced: bool) -> str | None:
    """None when the Triton path can run these tensors, else a short reason (cheap checks first)."""
    if any(t.requires_grad for t in tensors) and torch.is_grad_enabled():
        return "the inputs require grad and the kernels have no backward (use torch.no_grad())"
    devices = {t.device.type for t in tensors}
    on_cuda = devices == {"cuda"} and torch.cuda.is_available()
    if not on_cuda and not (forced and interpreting() and devices == {"cpu"}):
        where = ", ".join(sorted(devices))
        return f"the tensors are on {where}, and the kernels need CUDA (or TRITON_INTERPRET=1 for CPU)"
    return triton_importable()


def launcher(kernel: str, op: str) -> Callable[..., Any]:
    """The Triton launcher ``vidcore.kernels.triton_<kernel>.<op>`` (imported on first use)."""
    return getattr(importlib.import_module(f"vidcore.kernels.triton_{kernel}"), op)


def dispatch(kernel: str, op: str, reference: Callable[..., Any], tensors: list[torch.Tensor | None],
             *args: Any, **kwargs: Any) -> Any:
    """Run ``op`` through ``vidcore.kernels.triton_<kernel>.<op>`` or ``reference`` by the rules above."""
    m = mode()
    if m == "reference":
        return reference(*args, **kwargs)
    present = [t for t in tensors if t is not None]
    forced = m == "triton"
    reason = why_not_triton(present, forced=forced)
    if reason is None:
        try:
            return launcher(kernel, op)(*args, **kwargs)
        except Unsupported as exc:
            reason = str(exc)
    if forced:
        raise KernelUnavailableError(
            f"VIDCORE_KERNELS=triton but the Triton {op} cannot run: {reason}; "
            f"unset VIDCORE_KERNELS to fall back to the reference"
        )
    return reference(*args, **kwargs)
