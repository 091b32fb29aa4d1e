"""The core's own plugin: its samplers, schedules, memory presets and attention kernels register through
the public hooks, as anyone's do."""

from __future__ import annotations

from .hookspecs import hookimpl


@hookimpl
def register_samplers(register):
    from .sampling.samplers import BUILTIN_SAMPLERS

    for name, fn in BUILTIN_SAMPLERS.items():
        register(name, fn)


@hookimpl
def register_schedules(register):
    from .sampling.schedules import BUILTIN_SCHEDULES

    for name, fn in BUILTIN_SCHEDULES.items():
        register(name, fn)


@hookimpl
def register_memory_presets(register):
    from .memory.presets import BUILTIN_PRESETS

    for name, spec in BUILTIN_PRESETS.items():
        register(name, spec)


@hookimpl
def register_attention(register):
    from .kernels.attention_backends import builtin_attention_backends, sdpa

    register("sdpa", sdpa)  # torch's own choice: the automatic choice's last resort
    for name, fn, available, priority in builtin_attention_backends():
        register(name, fn, available=available, priority=priority)
