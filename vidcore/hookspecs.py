"""The hooks a vidcore plugin can implement: the table of contents of the plugin API.

A plugin is any module registered under the entry-point group ``vidcore``.
Each hook receives a ``register`` callable; call it once per thing you add.
See docs/plugins.md for a worked example.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("vidcore")
hookimpl = pluggy.HookimplMarker("vidcore")


@hookspec
def register_backends(register):
    """Add model backends: ``register(backend)`` with a `vidcore.Backend` instance."""


@hookspec
def register_samplers(register):
    """Add samplers: ``register(name, fn)`` where ``fn(model, x, schedule, *, callback, generator, **opts)``."""


@hookspec
def register_schedules(register):
    """Add noise schedules: ``register(name, fn)`` where ``fn(steps, **options) -> vidcore.sampling.Schedule``.

    Options are keyword-only arguments with defaults; ``Scheduler(name, **options)`` checks them by name.
    """


@hookspec
def register_memory_presets(register):
    """Add ``--memory`` presets: ``register(name, spec)`` with a `vidcore.memory.PolicySpec` (combinable with
    ``+``) or a factory ``dtype -> MemoryPolicy``."""


@hookspec
def register_generation_presets(register):
    """Add ``--preset`` recipes: ``register(name, preset)`` with a `vidcore.presets.GenerationPreset` (settings
    per backend name, and the source they follow)."""


@hookspec
def register_attention(register):
    """Add attention kernels: ``register(name, fn, available=callable_or_None)``; see `vidcore.attention`."""


@hookspec
def register_commands(register):
    """Add CLI subcommands: ``register(name, configure, run, help=...)``.

    ``configure(parser)`` adds arguments to an argparse parser; ``run(args)``
    returns an exit code. Lets a plugin offer e.g. ``vidcore train`` without
    the core knowing its model family.
    """
