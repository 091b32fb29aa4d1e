"""Registers the example backend, sampler, schedule and memory preset with vidcore (see docs/plugins.md)."""

from vidcore.hookspecs import hookimpl


@hookimpl
def register_backends(register):
    from .backend import ExampleBackend

    register(ExampleBackend())


@hookimpl
def register_samplers(register):
    from .sampler import sample_midpoint

    register("example_midpoint", sample_midpoint)


@hookimpl
def register_schedules(register):
    from .schedule import example_cosine

    register("example_cosine", example_cosine)  # fn(steps, *, **options) -> Schedule


@hookimpl
def register_memory_presets(register):
    from vidcore.memory import PolicySpec

    # a PolicySpec combines with the core's presets: --memory example-lean+bf16
    register("example-lean", PolicySpec("example-lean", rules={"text_encoder": "cpu"}, vae_tiling=True))
