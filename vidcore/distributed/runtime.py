"""One video on several GPUs under torchrun: set up, hook into the pipeline, write once.

``torchrun --nproc-per-node 8 -m vidcore generate ... --ulysses 4 --cfg-parallel``
runs the same `vidcore generate` on every rank. `init_from_args` checks the
split (before any weights load), joins the process group and builds the
layout's groups; the returned `Parallel` then

- `prepare(pipe)`: installs sequence parallelism on the planned block stacks;
- `same_request(req)`: makes every rank use rank 0's request (a seed left
  unset is drawn at random on each rank otherwise);
- `guide(guidance, model, cond, uncond, schedule)`: replaces
  ``guidance.wrap(...)``, with the CFG pair on two ranks when asked;
- `decoding()`: a context around the VAE decode that spreads its tiles;
- `is_writer`: only global rank 0 writes the video and its record.

All ranks run the whole loop on identical latents (every collective returns
the same bytes everywhere), so no rank waits on another's control flow.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InvalidRequestError
from .cfg import cfg_parallel_guidance
from .layout import Groups, Layout, build_groups
from .plan import enable_sequence_parallel, find_plans, plan_heads
from .vae import decode_split

log = logging.getLogger(__name__)


def env_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def check_backend(backend: Any, layout: Layout) -> None:
    """Fail fast if ``backend``'s denoiser cannot take ``layout`` (no plan, or Ulysses not dividing
    its heads); builds the components on the meta device only (no weights, no memory)."""
    if layout.sp == 1:
        return
    components = backend.build("meta")
    plans = [(m, p) for c in components.values() for m, p in find_plans(c)]
    if not plans:
        raise InvalidRequestError(f"backend {backend.name!r} declares no sequence_parallel_plan, so it cannot split "
                                  f"one video's tokens; run without --ulysses/--ring (--cfg-parallel still works)")
    for module, plan in plans:
        layout.check(layout.world, plan_heads(module, plan))


@dataclass
class Parallel:
    """This rank's part in generating one video across a torchrun world (see the module docstring)."""

    layout: Layout
    groups: Groups
    device: torch.device
    owns_process_group: bool = False

    @property
    def rank(self) -> int:
        return self.groups.rank

    @property
    def is_writer(self) -> bool:
        return self.groups.rank == 0

    def prepare(self, components: Mapping[str, Any]) -> None:
        """Install sequence parallelism on the components' planned stacks (`vidcore.load(..., parallel=)`
        calls it; the pipeline then calls `guide` and `decoding`)."""
        if self.layout.sp > 1:
            enable_sequence_parallel(components, self.groups)

    def same_request(self, req: Any) -> Any:
        """Rank 0's request on every rank (our own objects, pickled between our own processes)."""
        import torch.distributed as dist

        box = [req]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def guide(self, guidance: Any, model: Callable[..., torch.Tensor], cond: dict[str, Any],
              uncond: dict[str, Any] | None, schedule: Any) -> Callable[..., torch.Tensor]:
        """``guidance.wrap(model, cond, uncond, schedule)``, the CFG pair split when ``--cfg-parallel``."""
        if self.layout.cfg == 2:
            return cfg_parallel_guidance(guidance, model, cond, uncond, schedule, self.groups)
        return guidance.wrap(model, cond, uncond, schedule)

    @contextlib.contextmanager
    def decoding(self) -> Iterator[None]:
        """Spread the tiles of a tiled VAE decode over every rank (same frames as one process)."""
        with decode_split(True):
            yield

    def close(self) -> None:
        import torch.distributed as dist

        if self.owns_process_group and dist.is_initialized():
            dist.destroy_process_group()


def init(ulysses: int = 1, ring: int = 1, cfg_parallel: bool = False, *, backend: Any = None,
         device: str | torch.device | None = None) -> Parallel | None:
    """Check the split, join torchrun's process group and build the groups; None on one plain process.

    Every check that can fail (world size, heads, a plan) runs before the
    process group is joined and before any weights load.
    """
    import torch.distributed as dist

    layout = Layout(ulysses, ring, 2 if cfg_parallel else 1)
    _, world, local_rank = env_world()
    if layout.world == 1 and world == 1:
        return None
    layout.check(world)
    if backend is not None:
        check_backend(backend, layout)
    owns = False
    use_cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
    if use_cuda:
        dev = torch.device("cuda", local_rank) if device is None or torch.device(device).index is None \
            else torch.device(device)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device(device) if device is not None else torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        owns = True
    groups = build_groups(layout)
    log.info("rank %d/%d: %s (cfg %d, ring %d, ulysses %d) on %s", dist.get_rank(), world, layout.describe(),
             *layout.coords(groups.rank), dev)
    return Parallel(layout, groups, dev, owns)


def init_from_args(args: Any, backend: Any = None) -> Parallel | None:
    """`init` from ``vidcore generate``'s ``--ulysses K --ring R --cfg-parallel`` (and ``--device``)."""
    ulysses, ring = getattr(args, "ulysses", 1), getattr(args, "ring", 1)
    return init(1 if ulysses is None else ulysses, 1 if ring is None else ring,
                bool(getattr(args, "cfg_parallel", False)), backend=backend, device=getattr(args, "device", None))


def add_arguments(parser: Any) -> None:
    """The ``generate`` options for one video on several GPUs (for the CLI's parser)."""
    parser.add_argument("--ulysses", type=int, default=1, metavar="K",
                        help="split each attention's tokens over K ranks by all-to-all (K divides the heads)")
    parser.add_argument("--ring", type=int, default=1, metavar="R",
                        help="split tokens over R ranks by ring attention (any head count)")
    parser.add_argument("--cfg-parallel", action="store_true",
                        help="run the conditional and unconditional passes on two ranks")
