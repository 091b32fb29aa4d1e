"""The core's own plugin: its samplers and attention kernels register through the public hooks."""

from __future__ import annotations

from .hookspecs import hookimpl


@hookimpl
def register_samplers(register):
    from .sampling.samplers import BUILTIN_SAMPLERS

    for name, fn in BUILTIN_SAMPLERS.items():
        register(name, fn)


@hookimpl
def register_attention(register):
    from .kernels.attention_backends import builtin_attention_backends

    for name, fn, available, priority in builtin_attention_backends():
        register(name, fn, available=available, priority=priority)
