"""Regional compilation: `torch.compile` each repeated block of a DiT, not the whole model.

A video DiT is 30-60 copies of one block. Compiling the block's ``forward``
(rather than the model) costs one compilation however deep the model is,
since the copies share code and torch treats their parameters as inputs, and
leaves the code around the blocks (embeddings, step caches, memory-policy
hooks that move weights) eager. Only ``forward`` is replaced, so module hooks
still run eagerly around each compiled block and state-dict names are
unchanged. Off by default; `compile_blocks` turns it on, `uncompile_blocks`
off.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from .nn.blocks import block_stacks

log = logging.getLogger(__name__)

_EAGER = "_vidcore_eager_forward"


def compile_blocks(module: nn.Module, *, mode: str | None = None, dynamic: bool | None = None,
                   fullgraph: bool = False, backend: str | Any = "inductor", **options: Any) -> int:
    """Compile the ``forward`` of every block in ``module``'s `BlockStack`s; returns how many.

    Arguments go to `torch.compile`. Calling it again recompiles with the new
    arguments. The first call of each compiled block is slow (tracing and
    code generation); the following ones are fast.
    """
    uncompile_blocks(module)
    count = 0
    for stack in block_stacks(module):
        for block in stack:
            eager = block.forward
            compiled = torch.compile(eager, mode=mode, dynamic=dynamic, fullgraph=fullgraph, backend=backend,
                                     **options)
            object.__setattr__(block, _EAGER, eager)
            object.__setattr__(block, "forward", compiled)
            count += 1
    log.info("regional compilation: %d blocks (backend %s, mode %s)", count, backend, mode)
    return count


def uncompile_blocks(module: nn.Module) -> int:
    """Restore the eager ``forward`` of blocks compiled by `compile_blocks`; returns how many."""
    count = 0
    for stack in block_stacks(module):
        for block in stack:
            if _EAGER in block.__dict__:
                eager = block.__dict__.pop(_EAGER)
                if getattr(eager, "__self__", None) is block and eager.__func__ is type(block).forward:
                    block.__dict__.pop("forward", None)  # back to the class's method
                else:
                    object.__setattr__(block, "forward", eager)
                count += 1
    return count


def is_compiled(module: nn.Module) -> bool:
    """True when any block of ``module`` runs a compiled forward."""
    return any(_EAGER in b.__dict__ for s in block_stacks(module) for b in s)
