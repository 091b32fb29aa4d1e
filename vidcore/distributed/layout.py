"""How the ranks of one torchrun world share the work of one video: CFG x ring x Ulysses.

A world of ``cfg * ring * ulysses`` ranks is laid out with Ulysses innermost
(its all-to-all moves the most bytes, so its ranks should be neighbours on one
NVLink island), ring next, and the CFG pair outermost (it exchanges one
denoised latent per step)::

    rank = (cfg_rank * ring + ring_rank) * ulysses + ulysses_rank

The tokens of a video are split over the ``ring * ulysses`` ranks of a
sequence-parallel (SP) group; shard ``s = ring_rank * ulysses + ulysses_rank``
holds the s-th contiguous slice. `Layout.check` rejects a bad split in one line
(`InvalidRequestError`) before anything heavy happens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidRequestError


@dataclass(frozen=True)
class Layout:
    """Degrees of parallelism for one video; ``cfg`` is 1 or 2 (conditional / unconditional pass)."""

    ulysses: int = 1
    ring: int = 1
    cfg: int = 1

    def __post_init__(self) -> None:
        if self.ulysses < 1 or self.ring < 1:
            raise InvalidRequestError(f"--ulysses and --ring must be at least 1 (got {self.ulysses} and {self.ring})")
        if self.cfg not in (1, 2):
            raise InvalidRequestError(f"CFG parallelism splits the work in 2 (got {self.cfg})")

    @property
    def sp(self) -> int:
        """Ranks that share the tokens of one pass (the sequence-parallel degree)."""
        return self.ulysses * self.ring

    @property
    def world(self) -> int:
        return self.cfg * self.sp

    def describe(self) -> str:
        return f"--ulysses {self.ulysses} --ring {self.ring}" + (" --cfg-parallel" if self.cfg == 2 else "")

    def check(self, world_size: int, heads: int | None = None) -> None:
        """Fail fast with one line if this split cannot run on ``world_size`` ranks or on ``heads`` heads."""
        if world_size != self.world:
            hint = (f"launch with torchrun --nproc-per-node {self.world}" if world_size == 1 else
                    f"torchrun started {world_size}; make --ulysses x --ring (x 2 with --cfg-parallel) "
                    f"equal the number of processes" + (" (or use vidcore batch for one video per process)"
                                                        if self.world == 1 else ""))
            raise InvalidRequestError(f"{self.describe()} needs {self.world} processes "
                                      f"({self.cfg} x {self.ring} x {self.ulysses}); {hint}")
        if heads is not None and heads % self.ulysses:
            divisors = [d for d in range(1, heads + 1) if heads % d == 0]
            raise InvalidRequestError(
                f"--ulysses {self.ulysses} does not divide the model's {heads} attention heads; use one of "
                f"{divisors} and put the rest of the split in --ring (ring attention works for any head count)")

    def coords(self, rank: int) -> tuple[int, int, int]:
        """(cfg_rank, ring_rank, ulysses_rank) of a rank counted from 0 within this layout."""
        return rank // self.sp, (rank // self.ulysses) % self.ring, rank % self.ulysses

    def rank_of(self, cfg_rank: int, ring_rank: int, ulysses_rank: int) -> int:
        return (cfg_rank * self.ring + ring_rank) * self.ulysses + ulysses_rank

    def group_ranks(self) -> dict[str, list[list[int]]]:
        """Every group of each kind, as lists of layout ranks (each list ordered by the group's own rank)."""
        cs, rs, us = range(self.cfg), range(self.ring), range(self.ulysses)
        return {
            "ulysses": [[self.rank_of(c, r, u) for u in us] for c in cs for r in rs],
            "ring": [[self.rank_of(c, r, u) for r in rs] for c in cs for u in us],
            "sp": [[self.rank_of(c, r, u) for r in rs for u in us] for c in cs],
            "cfg": [[self.rank_of(c, r, u) for c in cs] for r in rs for u in us],
        }


@dataclass
class Groups:
    """This rank's process groups (None where the degree is 1) and its coordinates in the layout.

    ``ranks`` maps each kind to the global ranks of this rank's group, in
    group order (ring attention sends to its neighbours by global rank).
    """

    layout: Layout
    rank: int
    ulysses: Any = None
    ring: Any = None
    sp: Any = None
    cfg: Any = None
    ranks: dict[str, list[int]] = field(default_factory=dict)

    @property
    def cfg_rank(self) -> int:
        return self.layout.coords(self.rank)[0]

    @property
    def ring_rank(self) -> int:
        return self.layout.coords(self.rank)[1]

    @property
    def ulysses_rank(self) -> int:
        return self.layout.coords(self.rank)[2]

    @property
    def shard(self) -> int:
        """Index of this rank's token shard within its SP group."""
        return self.ring_rank * self.layout.ulysses + self.ulysses_rank


def build_groups(layout: Layout) -> Groups:
    """Create the process groups of ``layout`` over the whole world (every rank must call this).

    torch's ``new_group`` is collective over the default group, so every rank
    creates every group, in the same order, and keeps the ones it belongs to.
    """
    import torch.distributed as dist

    layout.check(dist.get_world_size())
    me = dist.get_rank()
    groups = Groups(layout, me)
    for kind, lists in layout.group_ranks().items():
        for members in lists:
            pg = dist.new_group(members) if len(members) > 1 else None
            if me in members:
                groups.ranks[kind] = members
                setattr(groups, kind, pg)
    return groups
