"""Where one component lives: the parts a composed policy is built from.

Each strategy handles one component for the policy: ``setup`` (take the
loaded weights), ``enter``/``exit`` (around `MemoryPolicy.use`), ``prefetch``
(the component comes next), ``teardown`` (leave a plain module). Block
streaming is in `vidcore.memory.streaming`.
"""

from __future__ import annotations

import torch
from torch import nn

from .transport import Transport
from .units import Unit


class Strategy:
    """Resident: the component stays on the device from setup on."""

    kind = "resident"
    #: materialise the weights on the host (True) or straight on the device (False) at load time
    loads_on_host = False

    def __init__(self) -> None:
        self.units: list[Unit] = []
        self.transport: Transport | None = None
        self.component = ""

    def setup(self, component: str, module: nn.Module, transport: Transport) -> None:
        self.component, self.transport = component, transport
        unit = Unit(component, module)
        transport.adopt(unit, "device")
        self.units = [unit]

    def enter(self) -> None:
        """The component is about to run."""

    def exit(self) -> None:
        """The component has finished running for now."""

    def prefetch(self) -> None:
        """The component runs next; start what can be started."""

    def teardown(self) -> None:
        for unit in self.units:
            self.transport.restore(unit)
        self.units = []

    def input_device(self, device: torch.device) -> torch.device:
        return device

    def residency(self) -> dict[str, str]:
        return {u.name: u.state for u in self.units}


class Offload(Strategy):
    """Component offload: on the device only while in use, in (pinned) host memory otherwise.

    A whole component moves at once, synchronously: the official
    ``--offload_model True``. Prefetching would need room for two components
    at once, which is what this strategy exists to avoid, so it does nothing.
    """

    kind = "offload"
    loads_on_host = True

    def setup(self, component: str, module: nn.Module, transport: Transport) -> None:
        self.component, self.transport = component, transport
        unit = Unit(component, module)
        transport.adopt(unit, "host")
        self.units = [unit]

    def enter(self) -> None:
        self.transport.ready(self.units[0], expected=False)

    def exit(self) -> None:
        self.transport.release(self.units[0])


class OnHost(Strategy):
    """Runs on the CPU (``--t5_cpu``): its inputs go to the CPU, its outputs are moved on by the pipeline."""

    kind = "cpu"
    loads_on_host = True

    def setup(self, component: str, module: nn.Module, transport: Transport) -> None:
        self.component, self.transport = component, transport
        unit = Unit(component, module)
        transport.adopt(unit, "cpu")
        self.units = [unit]

    def input_device(self, device: torch.device) -> torch.device:
        return torch.device("cpu")
