"""Shared fixtures: a registry with only the core and the toy backend, and a toy checkpoint folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(1)


@pytest.fixture
def toy_registry(monkeypatch):
    """Only the core plugin and the toy backends (installed plugins are not loaded)."""
    import toy_backend

    from vidcore import plugins

    monkeypatch.setenv("VIDCORE_LOAD_PLUGINS", "")
    plugins.reset(extra_plugins=[("toy", toy_backend)])
    yield plugins.registry()
    plugins.reset()


@pytest.fixture
def toy_ckpt(tmp_path, toy_registry):
    import toy_backend

    return toy_backend.write_checkpoint(toy_backend.TOY, tmp_path / "toy-ckpt")


@pytest.fixture
def toy_moe_ckpt(tmp_path, toy_registry):
    import toy_backend

    return toy_backend.write_checkpoint(toy_backend.TOY_MOE, tmp_path / "toy-moe-ckpt")


@pytest.fixture
def no_load(monkeypatch):
    """Loading weights fails the test: every case using it must be refused before it."""
    import vidcore.pipeline

    def forbidden(*args, **kwargs):
        raise AssertionError("weights were loaded for a run that should have been refused first")

    monkeypatch.setattr(vidcore.pipeline, "load", forbidden)


@pytest.fixture
def out_dir(tmp_path):
    d = tmp_path / "outputs"
    d.mkdir()
    return d
