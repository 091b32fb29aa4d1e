"""The MemoryPolicy interface the generic pipeline talks to, and the resident policy.

The pipeline asks a policy where to materialise each component when loading
(``placement``), how to make a component usable for a while (``use``, a
context manager), and where a component's inputs should go
(``input_device``). Three optional calls let a policy do better than that
minimum, and are no-ops here: ``prefetch(component)`` (say which component
comes next, so its first weights can be in flight before the switch),
``edit(component)`` (change weights after setup, e.g. LoRA) and ``teardown()``
(release everything, remove hooks). Policies compose from parts (see
`vidcore.memory.composed`); presets are named in `vidcore.memory.presets` and looked up in `vidcore.memory.lookup`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

#: component names (prefixes) whose weights keep the backend's dtype whatever the policy says:
#: VAE decoders overflow or band in reduced precision, and the backend knows what its VAE needs
DTYPE_EXEMPT = ("vae",)


def component_role(component: str) -> str:
    """``text_encoder``, ``image_encoder``, ``vae`` or ``denoiser`` (anything else, e.g. each expert)."""
    for role in ("text_encoder", "image_encoder", "vae"):
        if component.startswith(role):
            return role
    return "denoiser"


class MemoryPolicy:
    """Everything on ``device`` in ``dtype`` (the resident policy); subclasses move weights around."""

    name = "resident"
    #: run conditional and unconditional passes as one batch (False halves activation memory)
    batched_guidance: bool = True
    #: VAE switches the plugins' VAEs honour
    vae_tiling: bool = False
    vae_chunking: bool = True

    def __init__(self, dtype: torch.dtype | None = None):
        self.dtype = dtype
        self.device = torch.device("cpu")
        self.components: dict[str, nn.Module] = {}

    def weight_dtype(self, component: str, default: torch.dtype | None) -> torch.dtype | None:
        if component.startswith(DTYPE_EXEMPT):
            return default
        return self.dtype or default

    def load_device(self, component: str, device: torch.device) -> torch.device:
        """Where to materialise ``component``'s weights when loading (straight to its home)."""
        return device

    def placement(self, device: torch.device, default_dtype: torch.dtype | None):
        """A `vidcore.backend.Placement` for `Backend.load`."""
        self.device = torch.device(device)
        return lambda comp: (self.load_device(comp, self.device), self.weight_dtype(comp, default_dtype))

    def setup(self, components: Mapping[str, nn.Module], device: torch.device) -> None:
        """Put loaded components where this policy keeps them between uses."""
        self.device = torch.device(device)
        self.components = dict(components)
        self.switch_on(self.components)
        for module in self.components.values():
            module.to(self.device)

    def switch_on(self, components: Mapping[str, nn.Module]) -> None:
        """Turn on the memory switches (VAE tiling/chunking) this policy asks for, on the components
        that declare them (`vidcore.nn.MemorySwitches`)."""
        from ..nn.switches import MemorySwitches

        for name, module in components.items():
            if component_role(name) == "vae" and isinstance(module, MemorySwitches):
                module.enable_memory_switches(tiling=self.vae_tiling, chunked=self.vae_chunking)

    def input_device(self, component: str) -> torch.device:
        return self.device

    @contextmanager
    def use(self, component: str) -> Iterator[nn.Module]:
        """The component, ready to run on its device, for the duration of the block."""
        yield self.components[component]

    def prefetch(self, component: str) -> None:
        """Hint: ``component`` is used next (call it one step before an expert switch). No-op here."""

    @contextmanager
    def edit(self, component: str) -> Iterator[nn.Module]:
        """The component with its real weights bound, for changing them (LoRA) after `setup`.

        On exit the component goes back where the policy keeps it, new
        tensors (e.g. adapter buffers) included.
        """
        module = self.components[component]
        yield module
        module.to(self.device)

    def teardown(self) -> None:
        """Release what the policy holds (hooks, device copies). Resident weights stay where they are."""

    def residency(self) -> dict[str, str]:
        """Where each unit of weights is now: ``device``, ``host`` or ``in-flight`` (for tests and logs)."""
        return dict.fromkeys(self.components, "device")

    def describe(self) -> dict:
        return {"name": self.name, "dtype": str(self.dtype).replace("torch.", "") if self.dtype else None,
                "batched_guidance": self.batched_guidance, "vae_tiling": self.vae_tiling}


class Resident(MemoryPolicy):
    """Every component on the accelerator for the whole run."""
