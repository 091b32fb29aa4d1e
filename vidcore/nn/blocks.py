"""`BlockStack`: a model's repeated transformer blocks, as one seam for the core.

A drop-in for ``nn.ModuleList`` (state-dict names stay ``blocks.0....``), so
checkpoints load unchanged. Memory policies find every stack with
`block_stacks` and stream its blocks through forward pre-hooks; step caches
wrap the whole stack's run through ``wrappers``.

Calling the stack runs the blocks in order: each block receives the running
state positionally plus the shared keyword arguments, and returns either one
tensor or a tuple that becomes the next state.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

Runner = Callable[..., Any]


class BlockStack(nn.ModuleList):
    def __init__(self, blocks: Iterable[nn.Module] = ()):
        super().__init__(blocks)
        #: callables ``wrapper(run, *state, **kwargs)`` around the plain run (outermost last)
        self.wrappers: list[Callable[..., Any]] = []

    def run_plain(self, *state: Any, **kwargs: Any) -> Any:
        for block in self:
            out = block(*state, **kwargs)
            state = out if isinstance(out, tuple) else (out,)
        return state[0] if len(state) == 1 else state

    def forward(self, *state: Any, **kwargs: Any) -> Any:
        run: Runner = self.run_plain
        for wrapper in self.wrappers:
            run = functools.partial(wrapper, run)
        return run(*state, **kwargs)


def block_stacks(module: nn.Module) -> list[BlockStack]:
    """Every `BlockStack` inside ``module``, in registration order."""
    return [m for m in module.modules() if isinstance(m, BlockStack)]
