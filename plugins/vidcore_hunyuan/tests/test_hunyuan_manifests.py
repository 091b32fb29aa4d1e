"""Full-size meta-device builds against the official (and diffusers) manifests: names, shapes, counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from vidcore_hunyuan.convert import diffusers_names
from vidcore_hunyuan.dit import HunyuanVideoDiT
from vidcore_hunyuan.params import DIT_VARIANTS

DATA = Path(__file__).parent / "data"


def _manifest(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("variant,manifest", [("t2v", "hunyuan_t2v_dit.json"), ("i2v", "hunyuan_i2v_dit.json")])
def test_dit_meta_build_matches_official_manifest(variant, manifest):
    ref = _manifest(manifest)
    model = HunyuanVideoDiT(DIT_VARIANTS[variant], device="meta")
    got = _shapes(model)
    want = {k: tuple(v) for k, v in ref["tensors"].items()}
    assert list(got) == list(want)  # same names in the same state_dict order
    assert got == want
    assert len(got) == ref["count"]
    assert sum(p.numel() for p in model.state_dict().values()) == ref["params"]


def test_dit_diffusers_names_match_diffusers_manifest():
    ref = _manifest("diffusers_hunyuan_transformer.json")
    p = DIT_VARIANTS["t2v"]
    ours = _shapes(HunyuanVideoDiT(p, device="meta"))
    got = diffusers_names(ours, p.hidden_size)
    want = {k: tuple(v) for k, v in ref["tensors"].items()}
    assert set(got) == set(want)
    assert got == want
    assert len(got) == ref["count"] == 1264
