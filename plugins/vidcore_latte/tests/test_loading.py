"""Latte model files load through the core recipe, and a load never changes the registered backend."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from vidcore_latte.backends import DEMO, GENERIC
from vidcore_latte.system import build_components, file_layout, load_model, read_config, save_model

import vidcore
from conftest import tiny_model
from vidcore import plugins
from vidcore.errors import CheckpointError


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_model()
    path = tmp_path / "model.safetensors"
    save_model(path, build_components(cfg), cfg)
    return path


def test_one_file_holds_every_component_under_its_prefix(model_file):
    layout = file_layout(model_file, read_config(model_file))
    assert dict(layout.files) == {"text_encoder": ("model.safetensors",), "denoiser": ("model.safetensors",)}
    assert dict(layout.prefixes) == {"text_encoder": "text_encoder.", "denoiser": "denoiser."}
    comps, cfg = load_model(model_file, dtype=torch.float16)
    stored = load_file(str(model_file))
    assert cfg == tiny_model() and set(comps) == {"text_encoder", "denoiser"}
    for name, module in comps.items():
        assert not module.training
        for key, value in module.state_dict().items():
            want = stored[f"{name}.{key}"]
            assert torch.equal(value, want.half() if want.is_floating_point() else want), key


def test_a_file_that_does_not_match_its_config_is_one_line(model_file, tmp_path):
    state = load_file(str(model_file))
    dropped = next(k for k in state if k.startswith("denoiser."))
    del state[dropped]
    state["denoiser.stray.weight"] = torch.zeros(2)
    bad = tmp_path / "bad.safetensors"
    with safe_open(str(model_file), "pt") as f:
        save_file(state, str(bad), metadata=f.metadata())
    with pytest.raises(CheckpointError) as err:
        load_model(bad)
    msg = str(err.value)
    assert "\n" not in msg and "denoiser" in msg and dropped.removeprefix("denoiser.") in msg
    assert "1 missing" in msg and "1 unexpected" in msg and "stray.weight" in msg


def test_loading_binds_a_copy_and_leaves_the_registered_backends_alone(model_file):
    plugins.reset()
    before = (GENERIC._config, GENERIC.layout, GENERIC.components, DEMO._config, DEMO.layout)
    pipe = vidcore.load("latte", model_file.parent, device="cpu")
    demo = vidcore.load("latte-shapes", device="cpu")
    assert (GENERIC._config, GENERIC.layout, GENERIC.components, DEMO._config, DEMO.layout) == before
    assert pipe.backend is not GENERIC and pipe.backend.model_config() == tiny_model()
    assert pipe.backend.components == ("text_encoder", "denoiser")  # a pixel model: no VAE
    assert demo.backend is not DEMO and demo.backend.model_config() == read_config(DEMO.weights)
    assert pipe.backend.for_checkpoint(model_file) is pipe.backend  # binding the same file again is free
    with pytest.raises(vidcore.VidcoreError, match="needs --ckpt DIR"):
        GENERIC.model_config()
