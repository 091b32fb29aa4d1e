"""Beyond one GPU, on torch.distributed: one video split over ranks (sequence and CFG parallelism,
VAE decode split). Many videos over ranks and hosts is `vidcore.batch`.

See docs/distributed.md. Modules: `layout` (the CFG x ring x Ulysses split and
its groups), `plan` (the ``sequence_parallel_plan`` contract a DiT declares and
the `BlockStack` wrapper), `attention` (Ulysses / ring / both), `cfg`, `vae`,
`runtime` (torchrun setup and the pipeline's hooks), `collectives`.
"""

from .context import ShardInfo, current
from .layout import Groups, Layout, build_groups
from .plan import (
    Count,
    Prefix,
    SequenceParallel,
    SequenceParallelPlan,
    StackPlan,
    Tokens,
    disable_sequence_parallel,
    enable_sequence_parallel,
)
from .runtime import Parallel, add_arguments, init, init_from_args

__all__ = [
    "Count", "Groups", "Layout", "Parallel", "Prefix", "SequenceParallel", "SequenceParallelPlan", "ShardInfo",
    "StackPlan", "Tokens", "add_arguments", "build_groups", "current", "disable_sequence_parallel",
    "enable_sequence_parallel", "init", "init_from_args",
]
