"""Block streaming: a component's repeated blocks live in host memory and are copied in just ahead of use.

The component's `BlockStack`s (found with `vidcore.nn.block_stacks`, so no
model-specific code) are treated as one sequence of blocks. A forward
pre-hook on block ``i`` makes sure block ``i`` is bound (normally it is
already in flight) and starts the copies of blocks ``i+1 .. i+ahead``; a
forward hook releases block ``i`` afterwards. The window wraps around, so the
end of one forward starts the copies for the next one, and `prefetch` starts
the first blocks of a component that is about to be used (the next expert).
Everything outside the blocks (embeddings, heads, norms) stays on the device.

Device memory for the blocks is bounded by ``ahead + 2`` block copies: the
one running, ``ahead`` in flight, and one whose memory the GPU may still be
reading when the CPU runs ahead (`_throttle` waits for older ones).
"""

from __future__ import annotations

import logging
from collections import Counter, deque

from torch import nn

from ..nn import block_stacks
from .strategies import Offload, Strategy
from .transport import Transport
from .units import Unit

log = logging.getLogger(__name__)


class Stream(Strategy):
    """Stream the component's blocks ``ahead`` blocks ahead of compute; components without blocks offload."""

    kind = "stream"
    loads_on_host = True

    def __init__(self, ahead: int = 2):
        super().__init__()
        if ahead < 1:
            raise ValueError(f"ahead must be at least 1, got {ahead}")
        self.ahead = ahead
        self.blocks: list[Unit] = []
        self.index: dict[int, int] = {}
        self.handles: list = []
        self.pending: deque = deque()
        self.active = 0
        self.fallback: Offload | None = None

    # -- setup --------------------------------------------------------------------------------
    def setup(self, component: str, module: nn.Module, transport: Transport) -> None:
        self.component, self.transport = component, transport
        stacks = block_stacks(module)
        if not stacks:
            log.info("component %r has no BlockStack; offloading it whole instead of streaming", component)
            self.fallback = Offload()
            self.fallback.setup(component, module, transport)
            self.units = self.fallback.units
            return
        names = {id(m): n for n, m in module.named_modules()}
        blocks = [b for stack in stacks for b in stack]
        shared = _shared_tensors(module, blocks)
        self.blocks = [Unit(f"{component}.{names[id(b)]}", b, exclude=shared) for b in blocks]
        in_blocks = set().union(*(u.tensor_ids() for u in self.blocks))
        rest = Unit(f"{component}.rest", module, exclude=in_blocks)
        transport.adopt(rest, "device")
        for unit in self.blocks:
            transport.adopt(unit, "host")
        self.units = [rest, *self.blocks]
        self.index = {id(b): i for i, b in enumerate(blocks)}
        for b in blocks:
            self.handles.append(b.register_forward_pre_hook(self._before_block))
            self.handles.append(b.register_forward_hook(self._after_block))

    # -- the policy's calls -------------------------------------------------------------------
    def enter(self) -> None:
        if self.fallback is not None:
            return self.fallback.enter()
        self.active += 1
        if self.active == 1:
            self.prefetch()

    def exit(self) -> None:
        if self.fallback is not None:
            return self.fallback.exit()
        self.active -= 1
        if self.active == 0:
            for i in range(len(self.blocks)):
                self._release(i)

    def prefetch(self) -> None:
        for i in range(min(self.ahead, len(self.blocks))):
            self._start(i)

    def teardown(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        if self.fallback is None:
            for i in range(len(self.blocks)):
                self._release(i)
            while self.pending:
                self.pending.popleft().synchronize()
        super().teardown()
        self.blocks, self.index, self.active, self.fallback = [], {}, 0, None

    # -- hooks --------------------------------------------------------------------------------
    def _window(self, i: int) -> list[int]:
        n = len(self.blocks)
        return [(i + j) % n for j in range(min(self.ahead, n - 1) + 1)]

    def _before_block(self, block: nn.Module, args) -> None:
        if not self.active:
            raise RuntimeError(f"component {self.component!r} streams its blocks: run it inside "
                               f"policy.use({self.component!r})")
        i = self.index[id(block)]
        window = self._window(i)
        keep = set(window)
        for j, unit in enumerate(self.blocks):  # e.g. blocks left in flight by a skipped (cached) run
            if unit.state != "host" and j not in keep:
                self._release(j)
        self.transport.ready(self.blocks[i])
        for j in window[1:]:
            self._start(j)

    def _after_block(self, block: nn.Module, args, output) -> None:
        i = self.index[id(block)]
        if self.ahead < len(self.blocks) - 1:  # otherwise every block stays in the window
            self._release(i)

    # -- moves --------------------------------------------------------------------------------
    def _start(self, i: int) -> None:
        if self.blocks[i].state == "host":
            self._throttle()
            self.transport.start(self.blocks[i])

    def _release(self, i: int) -> None:
        event = self.transport.release(self.blocks[i])
        if event is not None:
            self.pending.append(event)

    def _throttle(self) -> None:
        """Keep at most ``ahead + 2`` block copies alive when the CPU runs ahead of the GPU."""
        while self.pending and self.pending[0].query():
            self.pending.popleft()
        live = sum(u.state != "host" for u in self.blocks)
        while self.pending and live + len(self.pending) >= self.ahead + 2:
            self.pending.popleft().synchronize()


def _shared_tensors(module: nn.Module, blocks: list[nn.Module]) -> set[int]:
    """Ids of tensors that must not stream: used by several blocks, or by a block and the rest."""
    counts: Counter[int] = Counter()
    for b in blocks:
        counts.update({id(t) for m in b.modules() for t in _own_tensors(m)})
    block_ids = {id(b) for b in blocks}
    outside: set[int] = set()
    todo, seen = [module], set()
    while todo:  # modules reachable from the root without entering a block (a module may be in both)
        m = todo.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        outside.update(id(t) for t in _own_tensors(m))
        todo.extend(c for c in m._modules.values() if c is not None and id(c) not in block_ids)
    return {i for i, c in counts.items() if c > 1} | (set(counts) & outside)


def _own_tensors(m: nn.Module) -> list:
    return [t for t in (*m._parameters.values(), *m._buffers.values()) if t is not None]
