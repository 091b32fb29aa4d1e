"""Run a function on N CPU processes joined in a gloo group, for tests of distributed code.

Processes are forked, not spawned: they share the parent's imported torch, so
a 4-process world starts in well under a second instead of ~10 s per process
on a busy machine. The rendezvous is a file (no port to collide with other
test runs). Any rank's exception is re-raised in the parent with its
traceback; a hang ends in a timeout, never a stuck test run.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any


class WorkerError(RuntimeError):
    """A rank failed (its traceback is the message) or the world did not finish in time."""


def _worker(fn: Callable[..., Any], rank: int, world: int, init_file: str, results: Any, args: tuple) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    try:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
        out = fn(rank, world, *args)
        results.put((rank, True, out))
        dist.barrier()
        dist.destroy_process_group()
    except BaseException:  # report everything, including SystemExit from a user-error path
        results.put((rank, False, traceback.format_exc()))


def launch(fn: Callable[..., Any], world: int, *args: Any, timeout: float = 120.0) -> list[Any]:
    """``[fn(rank, world, *args) for each rank]``, run in ``world`` processes under one gloo group.

    ``fn`` must be a module-level function; what it returns must pickle.
    RANK / WORLD_SIZE / LOCAL_RANK are set as torchrun sets them.
    """
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="vidcore-dist-") as tmp:
        init_file = os.path.join(tmp, "rendezvous")
        procs = [ctx.Process(target=_worker, args=(fn, r, world, init_file, results, args), daemon=True)
                 for r in range(world)]
        for p in procs:
            p.start()
        out: dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        try:
            while len(out) < world:
                try:
                    rank, ok, payload = results.get(timeout=max(0.1, deadline - time.monotonic()))
                except queue.Empty:
                    raise WorkerError(f"{world - len(out)} of {world} ranks did not finish within {timeout:.0f} s "
                                      f"(finished: {sorted(out)})") from None
                if not ok:
                    raise WorkerError(f"rank {rank} of {world} failed:\n{payload}")
                out[rank] = payload
            for p in procs:
                p.join(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
                    p.join(5)
    return [out[r] for r in range(world)]


def randomize(module: Any, seed: int = 0) -> None:
    """Non-trivial weights everywhere: AdaLN-zero and zero-initialised heads would make a sharded and an
    unsharded forward agree trivially (all zeros)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim > 1:
                p.copy_(noise * 0.5 / p.shape[-1] ** 0.5)
            else:  # norm weights around 1, biases and modulation vectors around 0
                p.copy_(1 + 0.2 * noise if "norm" in name else 0.1 * noise)


def sharded_vs_single(build: Callable[[], tuple[Any, tuple, dict]], ulysses: int = 1, ring: int = 1) -> dict:
    """On one rank of a `launch`: build the model and inputs (identically on every rank), run the
    one-process forward, then the sequence-parallel one under ``Layout(ulysses, ring)``.

    Returns the max abs difference (``err``), the reference's max abs value (``scale``), the output,
    and the shapes of the state each block stack's first block received (proof that it ran sharded).
    """
    import torch

    from ..nn.blocks import block_stacks
    from .layout import Layout, build_groups
    from .plan import disable_sequence_parallel, enable_sequence_parallel

    model, args, kwargs = build()
    with torch.no_grad():
        ref = model(*args, **kwargs)
    enable_sequence_parallel(model, build_groups(Layout(ulysses, ring)))
    seen: list[tuple[int, ...]] = []
    hooks = [s[0].register_forward_pre_hook(lambda _m, a: seen.append(tuple(a[0].shape)))
             for s in block_stacks(model) if len(s)]
    try:
        with torch.no_grad():
            out = model(*args, **kwargs)
    finally:
        for h in hooks:
            h.remove()
        disable_sequence_parallel(model)
    return {"err": (out - ref).abs().max().item(), "scale": ref.abs().max().item(), "out": out, "seen": seen}
