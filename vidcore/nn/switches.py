"""Run-time switches a memory policy may flip on a component, declared by the component.

A VAE that can decode in spatial tiles or chunk by chunk in time subclasses
`MemorySwitches`; the memory policy's ``setup`` turns on what the policy asks
for (``vae_tiling``, ``vae_chunking``). A component that does not subclass it
has no switches and is left alone, so the policy never guesses at attributes.
"""

from __future__ import annotations


class MemorySwitches:
    """Mixin for modules with memory-saving modes; a policy only ever switches them on."""

    #: decode (and encode) in overlapping spatial tiles
    tiling: bool = False
    #: run the temporal axis chunk by chunk (causal caches carried between chunks)
    chunked: bool = True

    def enable_memory_switches(self, *, tiling: bool = False, chunked: bool = False) -> None:
        if tiling:
            self.tiling = True
        if chunked:
            self.chunked = True
