"""Entry point of the wan22 plugin: registers its backends and its schedule with vidcore."""

from vidcore.hookspecs import hookimpl


@hookimpl
def register_backends(register):
    from .backends import BACKENDS

    for backend in BACKENDS:
        register(backend)


@hookimpl
def register_schedules(register):
    from .schedules import wan_flow

    register("wan_flow", wan_flow)


@hookimpl
def register_generation_presets(register):
    from .speedups import PRESETS

    for name, preset in PRESETS.items():
        register(name, preset)
