"""Entry point of the latte plugin: its backends and the `vidcore train` / `vidcore eval` commands."""

from vidcore.hookspecs import hookimpl


@hookimpl
def register_backends(register):
    from .backends import BACKENDS

    for backend in BACKENDS:
        register(backend)


@hookimpl
def register_commands(register):
    from . import evaluate
    from .train import cli as train_cli

    register("train", train_cli.configure, train_cli.run,
             help="train a Latte DiT, 3D U-Net or causal 3D VAE (vidcore-latte)")
    register("eval", evaluate.configure, evaluate.run,
             help="judge latte-shapes clips with the analytic detector (vidcore-latte)")
