"""`vidcore train`: train a Latte DiT, U-Net or VAE from a YAML config (a file or a built-in name)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def builtin_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_config(name_or_path: str, overrides: dict | None = None):
    """A `TrainConfig` from a YAML file or a built-in config name, with top-level overrides."""
    from vidcore.errors import InvalidRequestError, UnknownNameError

    from .config import TrainConfig

    path = Path(name_or_path)
    if not path.is_file():
        # a built-in name wins over a folder of the same name (e.g. the run folder runs/latte-shapes)
        if name_or_path not in builtin_configs():
            raise UnknownNameError("training config", name_or_path, builtin_configs())
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    data = yaml.safe_load(path.read_text()) or {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        *parents, leaf = key.split(".")  # "model.dit.refine" sets a nested setting
        node = data
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InvalidRequestError(f"--set {key}: {part!r} is not a group of settings")
        node[leaf] = value
    try:
        return TrainConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"{path}: {exc}") from None


def parse_settings(items: list[str]) -> dict:
    """``["time_shift=4", "amp=bf16"]`` -> ``{"time_shift": 4, "amp": "bf16"}`` (values parsed as YAML)."""
    from vidcore.errors import InvalidRequestError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidRequestError(f"--set {item!r} is not KEY=VALUE; e.g. --set time_shift=4")
        out[key.strip()] = yaml.safe_load(value)
    return out


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True,
                        help=f"YAML file or built-in name ({', '.join(builtin_configs()) or 'none'})")
    parser.add_argument("--out", help="run folder (checkpoints, log.jsonl, tb/, samples/)")
    parser.add_argument("--steps", type=int, help="total optimizer steps")
    parser.add_argument("--batch", type=int, help="global batch per step")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--data", help="'shapes' or a YAML split file")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"])
    parser.add_argument("--device", help="cpu or cuda")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--no-resume", action="store_true", help="start over even if the run folder has checkpoints")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any training setting, e.g. --set time_shift=4 or --set model.dit.refine=16 "
                             "(repeatable; values are read as YAML)")
    parser.add_argument("--export", help="after training, write the EMA weights to this .safetensors file")


def run(args: argparse.Namespace) -> int:
    from .trainer import Trainer

    overrides = {k: getattr(args, k) for k in ("out", "steps", "batch", "lr", "seed", "data", "amp", "device",
                                               "threads")}
    overrides.update(parse_settings(args.set))
    config = load_config(args.config, overrides)
    from vidcore.errors import InvalidRequestError

    if config.init and not Path(config.init).is_file():
        raise InvalidRequestError(f"init: no weights file {config.init} (give a .safetensors from --export)")
    try:
        trainer = Trainer(config, resume=not args.no_resume)
    except ValueError as exc:  # settings that only the built model can check (train_only, vae_model)
        raise InvalidRequestError(str(exc)) from None
    trainer.run()
    if args.export and trainer.rank == 0:
        from .export import export_ema

        export_ema(trainer, args.export)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m vidcore_latte.train", description=__doc__)
    configure(parser)
    return run(parser.parse_args(argv))
