"""Write a run's EMA weights as one model file (what backends and `vidcore eval` load)."""

from __future__ import annotations

import json
from pathlib import Path

from ..system import save_model


def export_ema(trainer, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    comps = trainer.ema_components()
    trained = {k: v for k, v in comps.items() if k not in trainer.frozen}
    state = {f"{n}.{k}": v for n, m in trained.items() for k, v in m.state_dict().items()}
    if "vae" in trainer.frozen:
        state.update({f"vae.{k}": v for k, v in trainer.frozen["vae"].state_dict().items()})
    save_model(path, comps, trainer.config.model, state=state,
               extra=portable({"train_config": json.dumps(trainer.config.to_dict()), "step": str(trainer.step)}))
    return path


#: training settings that name files on the machine that trained
_PATH_SETTINGS = ("out", "init", "data", "vae_model", "latent_cache")


def portable(meta: dict[str, str]) -> dict[str, str]:
    """Metadata with the training run's file paths cut to file names.

    An exported model travels (the demo's ships in the package); the trainer's
    home directory and run folders mean nothing elsewhere and are nobody's business.
    """
    if "train_config" not in meta:
        return meta
    config = json.loads(meta["train_config"])
    for key in _PATH_SETTINGS:
        if isinstance(config.get(key), str):
            config[key] = Path(config[key]).name
    return {**meta, "train_config": json.dumps(config)}


def export_checkpoint(checkpoint_dir: str | Path, path: str | Path, ema: bool = True, half: bool = False) -> Path:
    """Copy a checkpoint's (EMA) weights, config and step to a standalone model file (``half``: float16)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    src = Path(checkpoint_dir) / ("ema.safetensors" if ema else "model.safetensors")
    with safe_open(str(src), "pt") as f:
        meta = f.metadata()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tensors = load_file(str(src))
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(tensors, str(path), metadata=portable(meta or {}))
    return Path(path)
