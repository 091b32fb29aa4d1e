"""Entry point of the hunyuan plugin: registers its backends with vidcore."""

from vidcore.hookspecs import hookimpl


@hookimpl
def register_backends(register):
    from .backends import BACKENDS

    for backend in BACKENDS:
        register(backend)
