"""Registers the example backend with vidcore (see docs/plugins.md)."""

from vidcore.hookspecs import hookimpl


@hookimpl
def register_backends(register):
    from .backend import ExampleBackend

    register(ExampleBackend())


@hookimpl
def register_samplers(register):
    from .sampler import sample_midpoint

    register("example_midpoint", sample_midpoint)
