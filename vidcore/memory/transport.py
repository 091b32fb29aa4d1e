"""Copies between host memory and the accelerator, and a record of every move.

With CUDA, host copies are pinned and loads run on a side stream: `start`
issues the copy and records an event, `ready` makes the compute stream wait
for that event (a GPU-side wait; the CPU never blocks) and marks the tensors
as used by the compute stream so the caching allocator does not hand their
memory out before the compute that reads them has finished.

Without CUDA (tests, CPU runs) the same calls run synchronously and the CPU
stands in for the device: "device" copies are real copies, and a unit that
is not loaded is bound to NaN placeholders (`vidcore.memory.units.placeholder`),
so running weights the policy did not load shows up in the output. Every
move is recorded in `moves` with the bytes on the device after it.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import torch

from .units import Unit, placeholder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Move:
    """One event in a unit's life: ``load`` (copy issued), ``ready`` (bound for compute), ``release``."""

    action: str
    unit: str
    device_bytes: int  # bytes of managed weights on the device after this move


class Transport:
    """Moves `Unit`s for one policy on one device and keeps the books (bytes, peak, misses)."""

    def __init__(self, device: torch.device | str, *, pin: bool = True, max_moves: int = 200_000):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.standin = self.device.type == "cpu"
        self.pin = pin and self.cuda
        self.copy_stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.moves: deque[Move] = deque(maxlen=max_moves)
        self.device_bytes = 0
        self.peak_device_bytes = 0
        self.loads = 0
        self.sync_loads = 0  # units needed for compute that nobody had prefetched

    # -- adoption -----------------------------------------------------------------------------
    def adopt(self, unit: Unit, where: str) -> None:
        """Take a unit's current tensors: ``device`` (stay there), ``host`` (offloaded), ``cpu`` (run on host)."""
        current = unit.tensors()
        if where == "device":
            unit.host = []
            unit.bind([t.to(self.device) for t in current])
            unit.state = "device"
            self._count(unit.nbytes)
        elif where in ("host", "cpu"):
            unit.host = [self._to_host(t) for t in current]
            unit.state = "host"
            unit.bind(list(unit.host) if where == "cpu" else self._offloaded(unit))
        else:
            raise ValueError(f"unknown placement {where!r}")
        self._record("adopt-" + where, unit)

    def _to_host(self, t: torch.Tensor) -> torch.Tensor:
        t = t.detach().to("cpu")
        if self.pin and not t.is_pinned():
            t = t.pin_memory()
        return t

    def _offloaded(self, unit: Unit) -> list[torch.Tensor]:
        return [placeholder(h) for h in unit.host] if self.standin else list(unit.host)

    # -- moves --------------------------------------------------------------------------------
    def start(self, unit: Unit) -> None:
        """Issue the host-to-device copy of ``unit`` (asynchronous with CUDA); no-op unless on host."""
        if unit.state != "host" or not unit.host:
            return
        if self.cuda:
            with torch.cuda.stream(self.copy_stream):
                unit.dev = [h.to(self.device, non_blocking=True) for h in unit.host]
                event = torch.cuda.Event()
                event.record(self.copy_stream)
            unit.ready_event = event
        else:
            unit.dev = [h.to(self.device, copy=True) for h in unit.host]
        unit.state = "in-flight"
        self.loads += 1
        self._count(unit.nbytes)
        self._record("load", unit)

    def ready(self, unit: Unit, *, expected: bool = True) -> None:
        """Bind ``unit``'s device copy for compute, loading it now if nobody started it.

        ``expected=False`` marks a synchronous load that is part of the plan
        (component offload) rather than a prefetch miss.
        """
        if unit.state == "device":
            return
        if unit.state == "host":
            if expected:
                self.sync_loads += 1
            self.start(unit)
            if unit.state == "host":  # nothing to move (empty unit)
                return
        if unit.ready_event is not None:
            compute = torch.cuda.current_stream(self.device)
            compute.wait_event(unit.ready_event)
            for t in unit.dev:
                t.record_stream(compute)
            unit.ready_event = None
        unit.bind(unit.dev)
        unit.state = "device"
        self._record("ready", unit)

    def release(self, unit: Unit):
        """Drop ``unit``'s device copy and bind the host one (or placeholders). Returns a CUDA event
        marking the end of the compute issued so far (the copy's memory is reusable after it), or None."""
        if unit.state == "host" or not unit.host:
            return None
        was_bound = unit.state == "device"
        unit.bind(self._offloaded(unit))
        unit.dev = None
        unit.ready_event = None
        unit.state = "host"
        self._count(-unit.nbytes)
        self._record("release", unit)
        if self.cuda and was_bound:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))
            return event
        return None

    def restore(self, unit: Unit) -> None:
        """Leave the unit as a plain module would be: real host tensors bound (device units stay)."""
        if unit.host:
            self.release(unit)
            unit.bind(list(unit.host))

    # -- books --------------------------------------------------------------------------------
    def _count(self, delta: int) -> None:
        self.device_bytes += delta
        self.peak_device_bytes = max(self.peak_device_bytes, self.device_bytes)

    def _record(self, action: str, unit: Unit) -> None:
        self.moves.append(Move(action, unit.name, self.device_bytes))

    def stats(self) -> dict[str, int]:
        return {"device_bytes": self.device_bytes, "peak_device_bytes": self.peak_device_bytes,
                "loads": self.loads, "sync_loads": self.sync_loads}
