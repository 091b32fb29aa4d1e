"""The sequence-parallel state of the block stack running now, consulted by `vidcore.attention`.

While a sharded `BlockStack` runs, the attention seam's context variable
(`vidcore.attention.sequence_parallel_scope`) holds this rank's `SequenceContext`
(`ShardInfo` and process groups); ``vidcore.attention(..., sequence_parallel=True)``
then computes attention over the whole sequence (Ulysses and/or ring) instead
of over the local shard. Outside a sharded stack the keyword is a no-op, so a
model marks its self-attention once and runs unchanged on one process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..attention import sequence_parallel, sequence_parallel_scope

if TYPE_CHECKING:
    import torch

    from .layout import Groups


@dataclass(frozen=True)
class ShardInfo:
    """How a sequence of ``length`` units is split over ``degree`` ranks; this rank holds shard ``index``.

    Every shard holds ``local`` units (the sequence is padded at its end to
    ``local * degree``), so collectives see equal sizes; `valid` says how many
    of a shard's units are real. A unit is a token, or a frame / row of tokens
    when a model shards a coarser axis.
    """

    length: int
    degree: int
    index: int

    @property
    def local(self) -> int:
        return -(-self.length // self.degree)

    @property
    def padded(self) -> int:
        return self.local * self.degree

    @property
    def start(self) -> int:
        return self.index * self.local

    def valid(self, shard: int | None = None) -> int:
        """Real (unpadded) units in ``shard`` (default: this rank's)."""
        s = self.index if shard is None else shard
        return max(0, min(self.local, self.length - s * self.local))

    # -- helpers for plans (see vidcore.distributed.plan) ----------------------------------------
    def count(self, n: int | Sequence[int] | None) -> Any:
        """A count that includes the whole sharded sequence (e.g. image + text tokens) -> its local value."""
        if n is None:
            return None
        if isinstance(n, int):
            return n - self.length + self.local
        return type(n)(int(v) - self.length + self.local for v in n)

    def prefix(self, n: int) -> int:
        """How many of this shard's units fall among the sequence's first ``n`` units."""
        return max(0, min(self.local, n - self.start))


@dataclass
class SequenceContext:
    groups: Groups
    info: ShardInfo

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float | None,
                  backend: str | None, replicated: int) -> torch.Tensor:
        from .attention import sequence_parallel_attention

        return sequence_parallel_attention(q, k, v, self, scale=scale, backend=backend, replicated=replicated)


def current() -> SequenceContext | None:
    """The sequence-parallel context of the stack running now, or None (attention runs locally)."""
    sp = sequence_parallel()
    return sp if isinstance(sp, SequenceContext) else None


@contextlib.contextmanager
def sharded(groups: Groups, info: ShardInfo) -> Iterator[SequenceContext]:
    ctx = SequenceContext(groups, info)
    with sequence_parallel_scope(ctx):
        yield ctx


@contextlib.contextmanager
def suspended() -> Iterator[None]:
    """Run a region locally even inside a sharded stack (nothing in it talks to other ranks)."""
    with sequence_parallel_scope(None):
        yield
