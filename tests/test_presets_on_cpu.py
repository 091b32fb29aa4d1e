"""Every memory preset and weight dtype runs the demo model on the CPU, or is refused in one line first.

Half-precision networks answer in their own dtype while the sampler's state
stays fp32 (as the official pipelines keep fp32 latents); before that was
handled, ``--memory low-vram`` (the README's own example) crashed in the
flow-Euler step. The frames of every combination must be close to the fp32
resident ones: a preset moves or compresses weights, it never changes the video.
"""

from __future__ import annotations

import pytest
import torch

import vidcore
from vidcore.errors import VidcoreError
from vidcore.memory import preset_names

pytest.importorskip("vidcore_latte")

DTYPES = [None, "fp32", "bf16", "fp16"]


@pytest.fixture(scope="module")
def reference() -> torch.Tensor:
    with vidcore.load("latte-shapes", memory="resident", dtype="fp32", device="cpu") as pipe:
        return pipe("a red ball bouncing", seed=3, steps=2).frames.float()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("preset", preset_names())
def test_preset_and_dtype_run_on_cpu_or_refuse_first(reference, preset, dtype):
    try:
        pipe = vidcore.load("latte-shapes", memory=preset, dtype=dtype, device="cpu")
    except VidcoreError as exc:  # refused before any work: one line is all we ask
        assert "\n" not in str(exc)
        return
    with pipe:
        frames = pipe("a red ball bouncing", seed=3, steps=2).frames.float()
    assert frames.shape == reference.shape
    assert torch.isfinite(frames).all() and frames.std() > 10  # not a black or flat video
    # fp8 storage is the coarsest: its frames stay within a few levels of fp32 on average
    assert (frames - reference).abs().mean() < 2.0, (preset, dtype)
