"""Request resolution: official defaults fill gaps; every bad setting fails in one line before loading."""

from __future__ import annotations

import pytest

from vidcore.errors import InvalidRequestError, UnknownNameError
from vidcore.request import Request, load_inputs, parse_dtype, resolve


def test_defaults_fill_the_request(toy_registry):
    import toy_backend

    req = resolve(toy_backend.TOY, "a cat", seed=7)
    assert (req.width, req.height, req.frames, req.steps, req.sampler) == (16, 16, 5, 3, "flow_euler")
    assert req.negative == "blurry" and req.guidance == 2.0 and req.seed == 7
    assert Request.from_dict(req.to_dict()) == req


def test_random_seed_is_recorded(toy_registry):
    import toy_backend

    a, b = resolve(toy_backend.TOY, "x"), resolve(toy_backend.TOY, "x")
    assert isinstance(a.seed, int) and a.seed != b.seed


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "steps must be between 1 and 1000; got 0"),
    ({"guidance": -1.0}, "guidance must be between 0 and 100; got -1"),
    ({"sampler": "nope"}, "unknown sampler 'nope'"),
    ({"size": "16by16"}, "is not WIDTHxHEIGHT"),
    ({"task": "predict"}, "cannot do task 'predict'"),
    ({"task": "i2v"}, "needs an input image"),
    ({"video": "clip.mp4"}, "--video is for prediction"),
])
def test_bad_settings(toy_registry, kwargs, message):
    import toy_backend

    with pytest.raises((InvalidRequestError, UnknownNameError), match=message):
        resolve(toy_backend.TOY, "x", **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"size": "17x16"}, r"size 17x16 is not supported; use width and height multiples of 8"),
    ({"size": "128x128"}, "between 8 and 64"),
    ({"frames": 6}, r"frame count 6 is not supported; use 4n\+1 frames"),
    ({"frames": 13}, "up to 9"),
])
def test_sizes_and_frames_are_checked_with_the_rule(toy_registry, kwargs, message):
    import toy_backend

    req = resolve(toy_backend.TOY, "x", **kwargs)
    with pytest.raises(InvalidRequestError, match=message):
        load_inputs(toy_backend.TOY, req)


def test_missing_and_unreadable_image(toy_registry, tmp_path):
    import toy_backend

    req = resolve(toy_backend.TOY, "x", image=tmp_path / "missing.png")
    with pytest.raises(InvalidRequestError, match="does not exist"):
        load_inputs(toy_backend.TOY, req)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    req = resolve(toy_backend.TOY, "x", image=junk)
    with pytest.raises(InvalidRequestError, match="cannot read image"):
        load_inputs(toy_backend.TOY, req)


def test_dtype_names():
    import torch

    assert parse_dtype("bf16") is torch.bfloat16 and parse_dtype("fp32") is torch.float32
    with pytest.raises(UnknownNameError, match="unknown dtype 'int4'; choose one of: bf16, fp16, fp32"):
        parse_dtype("int4")


def test_official_sampler_options_do_not_follow_another_sampler(toy_registry):
    import dataclasses

    import toy_backend

    b = toy_backend.ToyBackend()
    b.defaults = dataclasses.replace(b.defaults, sampler="unipc", sampler_options={"variant": "bh2"})
    assert resolve(b, "x").sampler_options == {"variant": "bh2"}
    assert resolve(b, "x", sampler="euler").sampler_options == {}
    with pytest.raises(InvalidRequestError, match="sampler 'euler' has no option 'variant'"):
        resolve(b, "x", sampler="euler", sampler_options={"variant": "bh2"})
