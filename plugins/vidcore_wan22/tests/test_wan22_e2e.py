"""End to end on CPU: tiny random checkpoints in the official layout, loaded by `vidcore.load`, sampled by the
generic pipeline and compared with an independent loop written like the official ``generate`` (diffusers' UniPC
on the official grid as the solver); the CLI (download from a fake hub, verify, generate, --from-record); and
the one-line errors for bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from vidcore_wan22.backends import WanBackend
from vidcore_wan22.t5 import WanTokenizer
from wan22_helpers import (  # noqa: F401
    TinyPlugin,
    one_thread,
    tiny_specs,
    write_diffusers_checkpoint,
    write_official_checkpoint,
)

import vidcore
from vidcore import plugins
from vidcore.errors import CheckpointError, InvalidRequestError, VidcoreError

ROOT_TESTS = Path(__file__).resolve().parents[3] / "tests"


@pytest.fixture(scope="module")
def tiny():
    backends = {s.name: WanBackend(s) for s in tiny_specs()}
    plugins.reset(extra_plugins=[("wan22-tiny", TinyPlugin(list(backends.values())))])
    yield backends
    plugins.reset()


@pytest.fixture(scope="module")
def ckpts(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("wan22-ckpts")
    return {name: (root / name, write_official_checkpoint(b, root / name, seed=i))
            for i, (name, b) in enumerate(tiny.items()) if not name.endswith("-diffusers")}


def _image(path: Path, w: int = 40, h: int = 30) -> Path:
    from PIL import Image

    g = torch.Generator().manual_seed(5)
    arr = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()
    Image.fromarray(arr).save(path)
    return path


def _reference(backend, states, folder, req, image_path=None):
    """The official loop (text2video/image2video/textimage2video.py) over our modules, with diffusers' UniPC."""
    import diffusers
    from vidcore_wan22 import conditioning as cond

    from vidcore.sampling import Scheduler

    comps = backend.build("cpu")
    for name, m in comps.items():
        m.load_state_dict(states[name])
        m.eval()
    tok = WanTokenizer(folder / "google" / "umt5-xxl", backend.spec.t5.text_len)

    def text(p):
        ids, mask = tok([p])
        out = comps["text_encoder"](ids, mask)
        return out[0, : int(mask.sum())]  # the official trim; the DiT zero-pads again

    ctx, ctx_null = text(req.prompt), text(req.negative)
    g = torch.Generator("cpu")
    g.manual_seed(req.seed)
    shape = backend.latent_shape(req)
    latents = torch.randn(shape, generator=g, dtype=torch.float32)
    y = z = None
    if req.task == "i2v":
        img = cond.load_rgb(image_path, None)
        video = cond.i2v_first_frame_video(img, req.width, req.height, req.frames)
        lat = comps["vae"].encode(video)[0]
        y = torch.cat([cond.i2v_mask(req.frames, shape[2], shape[3]), lat])
    if req.task == "ti2v":
        img = cond.load_rgb(image_path, None)
        z = comps["vae"].encode(cond.ti2v_image(img, req.width, req.height))[0]
        latents[:, :1] = z
    sched = diffusers.UniPCMultistepScheduler(solver_type="bh2", use_flow_sigmas=True, flow_shift=1.0,
                                              prediction_type="flow_prediction")
    grid = Scheduler("wan_flow", **req.schedule_options)(req.steps)
    sched.set_timesteps(sigmas=grid.sigmas[:-1].numpy())
    experts = backend.spec.experts
    boundary = backend.spec.boundary * 1000
    used = []
    for t in sched.timesteps:
        name = experts[0][0] if len(experts) == 1 or t.item() >= boundary else experts[1][0]
        used.append(name)
        scale = req.guidance[name] if isinstance(req.guidance, dict) else req.guidance
        model = comps[name]
        ts = torch.stack([t])
        if z is not None:
            ts = torch.stack([torch.zeros(()), *[t.float()] * (shape[1] - 1)])[None]
        kw = {} if y is None else {"y": y[None]}
        c = model(latents[None], ts, ctx[None], **kw)[0]
        u = model(latents[None], ts, ctx_null[None], **kw)[0]
        pred = u + scale * (c - u)
        latents = sched.step(pred[None], t, latents[None], return_dict=False)[0][0]
        if z is not None:
            latents[:, :1] = z
    frames = cond.to_uint8_frames(comps["vae"].decode(latents[None]))
    return latents, frames, used


@pytest.mark.parametrize("name,task", [("tiny-t2v-a14b", "t2v"), ("tiny-i2v-a14b", "i2v"), ("tiny-ti2v-5b", "ti2v")])
def test_pipeline_equals_official_loop(tiny, ckpts, tmp_path, name, task):
    folder, states = ckpts[name]
    image = _image(tmp_path / "in.png") if task != "t2v" else None
    pipe = vidcore.load(name, folder, dtype="fp32", device="cpu")
    steps: list[torch.Tensor] = []
    video = pipe("a cat surfs", image=image, seed=7, callback=lambda info: steps.append(info["x"].clone()),
                 progress=False)
    req = vidcore.request.resolve(tiny[name], "a cat surfs", image=image, seed=7)
    vidcore.request.load_inputs(tiny[name], req)
    ref_latents, ref_frames, used = _reference(tiny[name], states, folder, req, image)
    if len(tiny[name].spec.experts) == 2:
        assert used[0] == "high_noise" and used[-1] == "low_noise"  # the expert switch happens in this run
    ours = steps[-1][0]
    if task == "ti2v":
        ours = ours.clone()
        ours[:, :1] = ref_latents[:, :1]
    assert ours.shape == ref_latents.shape
    assert (ours - ref_latents).abs().max() <= 1e-4 * ref_latents.abs().max()
    assert video.frames.dtype == torch.uint8 and video.frames.shape == ref_frames[0].shape
    assert (video.frames.int() - ref_frames[0].int()).abs().max() <= 1
    assert video.fps == tiny[name].defaults.fps


def test_cli_download_verify_generate_from_record(tiny, ckpts, tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT_TESTS))
    from fakehub import hub_env

    from vidcore.cli import main

    name = "tiny-t2v-a14b"
    folder, _ = ckpts[name]
    repo = tiny[name].layout.repo_id
    with hub_env(monkeypatch, tmp_path) as hub:
        hub.add_repo(repo, folder, files={"README.md": b"# not needed\n", "assets/logo.png": b"x" * 10})
        dest = tmp_path / "dl"
        assert main(["download", name, "--dir", str(dest)]) == 0
    got = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file() and ".cache" not in p.parts}
    assert "README.md" not in got and "assets/logo.png" not in got
    assert {"high_noise_model/diffusion_pytorch_model.safetensors", "Wan2.1_VAE.pth",
            "models_t5_umt5-xxl-enc-bf16.pth", "google/umt5-xxl/tokenizer.json"} <= got
    assert main(["verify", name, str(dest)]) == 0
    out = tmp_path / "cat.mp4"
    args = ["generate", "a cat", "--backend", name, "--ckpt", str(dest), "--steps", "2", "--seed", "3",
            "--dtype", "fp32", "--device", "cpu", "--out", str(out), "--quiet"]
    assert main(args) == 0 and out.exists() and out.with_suffix(".json").exists()
    replay = tmp_path / "replay.mp4"
    assert main(["generate", "--from-record", str(out.with_suffix(".json")), "--out", str(replay), "--quiet"]) == 0
    a, _ = vidcore.video.read_video(out)
    b, _ = vidcore.video.read_video(replay)
    assert torch.equal(a, b)


def test_bad_inputs_fail_in_one_line_before_loading(tiny, ckpts, tmp_path):
    import shutil

    from vidcore.request import load_inputs, resolve

    t2v, i2v = tiny["tiny-t2v-a14b"], tiny["tiny-i2v-a14b"]
    with pytest.raises(InvalidRequestError, match="not supported") as e:
        load_inputs(t2v, resolve(t2v, "x", size="40x40"))
    assert "\n" not in str(e.value)
    with pytest.raises(InvalidRequestError, match="frame count"):
        load_inputs(t2v, resolve(t2v, "x", frames=6))
    with pytest.raises(InvalidRequestError, match="image"):
        resolve(i2v, "x")
    # a folder without low_noise_model/
    folder, _ = ckpts["tiny-t2v-a14b"]
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    shutil.rmtree(broken / "low_noise_model")
    with pytest.raises(VidcoreError, match="low_noise_model") as e:
        vidcore.load("tiny-t2v-a14b", broken, dtype="fp32", device="cpu")
    assert "\n" not in str(e.value)
    # a T5 .pth whose tensors have the wrong shape
    bad = tmp_path / "bad-t5"
    shutil.copytree(folder, bad)
    sd = torch.load(bad / "models_t5_umt5-xxl-enc-bf16.pth", weights_only=True)
    sd["blocks.0.attn.q.weight"] = torch.zeros(3, 3)
    torch.save(sd, bad / "models_t5_umt5-xxl-enc-bf16.pth")
    with pytest.raises(CheckpointError, match="blocks.0.attn.q.weight") as e:
        vidcore.load("tiny-t2v-a14b", bad, dtype="fp32", device="cpu")
    assert "\n" not in str(e.value)
    # no tokenizer folder
    notok = tmp_path / "no-tok"
    shutil.copytree(folder, notok)
    shutil.rmtree(notok / "google")
    with pytest.raises(VidcoreError, match="umt5-xxl|tokenizer"):
        vidcore.load("tiny-t2v-a14b", notok, dtype="fp32", device="cpu")


def test_diffusers_layout_loads_through_the_key_maps(tiny, ckpts, tmp_path):
    """The same weights saved in the diffusers layout give the same video as the official layout.

    (The T5 is stored in bf16 there, as the -Diffusers repos do; both runs load it as bf16 weights.)
    """
    folder, states = ckpts["tiny-t2v-a14b"]
    dfolder = tmp_path / "diffusers"
    write_diffusers_checkpoint(tiny["tiny-t2v-a14b-diffusers"], states, dfolder)
    from vidcore.manifest import verify

    assert verify(tiny["tiny-t2v-a14b-diffusers"], dfolder).ok
    kw = dict(seed=11, steps=3, progress=False)
    a = vidcore.load("tiny-t2v-a14b", folder, dtype="fp32", device="cpu")
    a.components["text_encoder"].to(torch.bfloat16)
    b = vidcore.load("tiny-t2v-a14b-diffusers", dfolder, dtype="fp32", device="cpu")
    b.components["text_encoder"].to(torch.bfloat16)
    for name in ("high_noise", "low_noise", "vae"):
        sa, sb = a.components[name].state_dict(), b.components[name].state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(a("a cat", **kw).frames, b("a cat", **kw).frames)
