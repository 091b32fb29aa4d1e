"""Tiny configurations shared by the latte tests (everything here runs in seconds on one CPU thread)."""

from __future__ import annotations

import pytest
import torch
from vidcore_latte.system import ModelConfig
from vidcore_latte.train.config import TrainConfig

torch.set_num_threads(1)


def tiny_model(**dit) -> ModelConfig:
    """A 32x32, 8-frame pixel-space Latte DiT with a one-layer text encoder."""
    spec = {"hidden": 32, "depth": 1, "heads": 2, "patch": 8, "temporal_patch": 4, "frame_conditioning": True}
    spec.update(dit)
    return ModelConfig(dit=spec, text={"dim": 16, "heads": 2, "layers": 1}, frames=8, size=32)


def tiny_train(tmp_path, **changes) -> TrainConfig:
    base = TrainConfig(model=tiny_model(), batch=4, steps=4, lr=1e-3, warmup=2, save_every=2, log_every=1,
                       predict_prob=0.5, max_context_frames=3, out=str(tmp_path / "run"), threads=1)
    return base.with_(**changes)


@pytest.fixture
def tiny_config(tmp_path):
    return tiny_train(tmp_path)
