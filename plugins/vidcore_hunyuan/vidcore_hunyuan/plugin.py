"""Entry point of the hunyuan plugin: registers its backends and its schedule with vidcore."""

from vidcore.hookspecs import hookimpl


@hookimpl
def register_backends(register):
    from .backends import BACKENDS

    for backend in BACKENDS:
        register(backend)


@hookimpl
def register_schedules(register):
    from .schedules import hunyuan_flow

    register("hunyuan_flow", hunyuan_flow)
