"""Which guidance pass the denoiser is running, for wrappers that keep per-pass state.

A step cache compares each call with the previous call *of the same pass*:
when guidance runs the conditional and unconditional inputs as two calls on
one block stack, their states must not mix; when it runs them as one batch,
or runs only the conditional pass (scale 1, outside an interval), there is one
state. `Guidance` says which it is doing by running each call inside
`running_pass`; nothing has to be told by hand how guidance batches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

#: "cond" (a conditional pass, or no guidance), "uncond", or "both" (the two as one batch)
_PASS: ContextVar[str] = ContextVar("vidcore_guidance_pass", default="cond")


def current_pass() -> str:
    return _PASS.get()


@contextlib.contextmanager
def running_pass(name: str) -> Iterator[None]:
    token = _PASS.set(name)
    try:
        yield
    finally:
        _PASS.reset(token)
