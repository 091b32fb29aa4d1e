"""The loop's batched call: several videos of one shape in one run, each the video it would be alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vidcore
from vidcore.errors import InvalidRequestError
from vidcore.request import resolve


@pytest.fixture
def pipe(toy_ckpt):
    p = vidcore.load("toy", toy_ckpt, device="cpu")
    yield p
    p.close()


def test_a_batch_equals_the_videos_alone(pipe):
    prompts, seeds = ["a red ball", "a blue cube", "a green cone"], [1, 2, 3]
    alone = [pipe(p, seed=s, progress=False) for p, s in zip(prompts, seeds)]
    together = pipe(prompts, seed=seeds, progress=False)
    assert isinstance(together, list) and len(together) == 3
    for one, many in zip(alone, together):
        assert (one.frames.int() - many.frames.int()).abs().max() <= 1  # batched-matmul rounding only
        assert many.record["request"] == {**one.record["request"]}
    assert [v.record["batch"] for v in together] == [{"size": 3, "index": i} for i in range(3)]
    assert "batch" not in alone[0].record


def test_a_stochastic_sampler_keeps_each_videos_generator(pipe):
    """Each video draws the sampler's noise from its own stream, so batching does not change it."""
    settings = dict(sampler="euler", sampler_options={"s_churn": 1.0}, progress=False)  # on the flow schedule
    alone = [pipe("a", seed=s, **settings) for s in (5, 6)]
    together = pipe("a", seed=[5, 6], **settings)
    for one, many in zip(alone, together):
        assert (one.frames.int() - many.frames.int()).abs().max() <= 1


def test_one_value_applies_to_every_video_and_lists_must_agree(pipe):
    videos = pipe(["x", "y"], seed=4, progress=False)
    assert [v.record["request"]["seed"] for v in videos] == [4, 4]
    with pytest.raises(InvalidRequestError, match="one value per video"):
        pipe(["x", "y"], seed=[1, 2, 3], progress=False)


def test_videos_of_different_shapes_are_refused_in_one_line(pipe):
    a = resolve(pipe.backend, "a", seed=1)
    b = resolve(pipe.backend, "b", seed=2, steps=2)
    with pytest.raises(InvalidRequestError, match="must share steps.*separate batches"):
        pipe.run_many([a, b])


def test_conditions_that_cannot_stack_run_one_by_one(pipe, monkeypatch, caplog):
    """A backend whose conditions differ in shape (e.g. text lengths) still gets every video, made apart."""
    backend = type(pipe.backend)
    original = backend.encode

    def ragged(self, components, request, inputs, device):
        c = original(self, components, request, inputs, device)
        c.cond["extra"] = torch.zeros(1, len(request.prompt))  # one shape per prompt length
        return c

    calls = []

    def experts(self, components, request):
        den = components["denoiser"]

        def network(x, t, *, text, extra=None):
            calls.append(x.shape[0])
            return den(x, t, text=text)

        return [vidcore.Expert("denoiser", "denoiser", network, "flow", 0.0)]

    monkeypatch.setattr(backend, "encode", ragged)
    monkeypatch.setattr(backend, "experts", experts)
    with caplog.at_level("INFO", logger="vidcore.pipeline"):
        videos = pipe(["short", "a much longer prompt"], seed=[1, 2], progress=False)
    assert len(videos) == 2 and "one by one" in caplog.text
    assert max(calls) == 1  # guidance runs cond and uncond as separate calls when they cannot concatenate


def test_in_memory_images_are_inputs_and_named_by_digest(pipe, tmp_path):
    from vidcore.video import write_image

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    path = write_image(tmp_path / "in.png", image)
    from_file = pipe("a", image=str(path), seed=3, progress=False)
    as_array = pipe("a", image=image, seed=3, progress=False)
    as_float = pipe("a", image=torch.from_numpy(image).permute(2, 0, 1).float() / 255, seed=3, progress=False)
    assert torch.equal(from_file.frames, as_array.frames)
    assert torch.equal(as_array.frames, as_float.frames)
    label = as_array.record["request"]["image"]
    assert label.startswith("in-memory:image 16x16x3 sha256:")
    with pytest.raises(InvalidRequestError, match="given in memory"):  # a replay asks for the pixels again
        pipe.run(vidcore.request.Request.from_dict(as_array.record["request"]))


def test_pil_images_are_accepted(pipe):
    Image = pytest.importorskip("PIL.Image")
    image = Image.new("RGB", (16, 16), (200, 30, 10))
    video = pipe("a", image=image, seed=3, progress=False)
    assert video.record["request"]["image"].startswith("in-memory:image")


@pytest.mark.parametrize("bad,match", [
    ({"image": object()}, "file path, a PIL image"),
    ({"image": np.zeros((16, 16, 5), np.uint8)}, "1, 3 or 4 channels"),
    ({"image": np.full((16, 16, 3), 2.0)}, r"values in \[0, 1\]"),
    ({"image": np.zeros((4, 16, 16, 3), np.uint8)}, r"\(H, W, 3\)"),
])
def test_bad_in_memory_media_are_one_line(pipe, bad, match, no_load):
    with pytest.raises(InvalidRequestError, match=match):
        pipe("a", progress=False, **bad)


def test_diffusers_names_work_or_name_ours(pipe):
    ours = pipe("a", steps=2, guidance=3.0, negative="bad", size="16x8", frames=5, seed=9, progress=False)
    theirs = pipe("a", num_inference_steps=2, guidance_scale=3.0, negative_prompt="bad", height=8, width=16,
                  num_frames=5, generator=torch.Generator().manual_seed(9), progress=False)
    assert torch.equal(ours.frames, theirs.frames)
    assert ours.record["request"] == theirs.record["request"]
    with pytest.raises(InvalidRequestError, match="seed=\\[1, 2, 3\\]"):
        pipe("a", num_videos_per_prompt=3)
    with pytest.raises(InvalidRequestError, match="not both"):
        pipe("a", steps=2, num_inference_steps=3)
    with pytest.raises(InvalidRequestError, match="both height= and width="):
        pipe("a", height=8)


def test_guidance_scale_on_a_distilled_model_is_refused_and_true_cfg_warned(pipe, monkeypatch, caplog):
    monkeypatch.setattr(type(pipe.backend), "embedded_guidance", True)
    with pytest.raises(InvalidRequestError, match="embedded.*true classifier-free"):
        pipe("a", guidance_scale=6.0)
    with caplog.at_level("WARNING", logger="vidcore.habits"):
        resolve(pipe.backend, "a", guidance=6.0)
    assert "two denoiser passes per step" in caplog.text


def test_notebook_helpers(pipe):
    video = pipe("a", seed=1, progress=False)
    text = repr(video)
    assert text.startswith("Video(5 frames, 16x16, 8 fps") and "seed 1" in text and "tensor" not in text
    html = video._repr_html_()
    assert html.startswith("<video") and "data:video/mp4;base64," in html and len(html) > 200
    assert video.to_numpy().shape == (5, 16, 16, 3) and video.to_numpy().dtype == np.uint8


def test_the_callback_gets_a_lazy_latent_preview(pipe):
    seen = []
    pipe("a", seed=1, progress=False, callback=lambda info: seen.append(info["preview"]()))
    assert len(seen) == 3 and all(p.dtype == torch.uint8 and p.shape == (5, 16, 16, 3) for p in seen)


def test_a_policy_switches_only_components_that_declare_switches():
    from torch import nn

    from vidcore.memory import get_policy
    from vidcore.nn import MemorySwitches

    class Switchable(MemorySwitches, nn.Module):
        pass

    class Plain(nn.Module):
        tiling = False  # an attribute of the same name is not a declaration

    comps = {"vae": Switchable(), "vae_2": Plain(), "denoiser": Switchable()}
    get_policy("low-vram", None).setup(comps, torch.device("cpu"))
    assert comps["vae"].tiling is True
    assert comps["vae_2"].tiling is False and comps["denoiser"].tiling is False


def test_the_requests_step_cache_is_installed_for_its_run_only(pipe):
    from vidcore.cache import step_caches

    plain = pipe("a", seed=1, steps=6, progress=False)
    cached = pipe("a", seed=1, steps=6, cache="teacache:10", progress=False)
    (cache,) = step_caches(pipe.components["denoiser"])
    assert cache.stats.skipped > 0 and not torch.equal(plain.frames, cached.frames)
    assert cached.record["request"]["cache"]["kind"] == "teacache"
    again = pipe("a", seed=1, steps=6, progress=False)  # no cache asked: the request's cache is removed
    assert torch.equal(again.frames, plain.frames) and not step_caches(pipe.components["denoiser"])
