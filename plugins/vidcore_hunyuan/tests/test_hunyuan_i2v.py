"""HunyuanVideo-I2V pieces: the LLaVA image+prompt encoding against diffusers' I2V pipeline, the official
buckets, the image preprocessing, and a tiny I2V run through `vidcore.load` (token replacement, stability)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hunyuan_tiny import tiny_i2v_parts
from vidcore_hunyuan.buckets import closest_bucket, crop_size_list
from vidcore_hunyuan.image import clip_pixels, resize_center_crop
from vidcore_hunyuan.llava import LlavaTextEncoder

from vidcore.backend import Conditions
from vidcore.errors import InvalidRequestError
from vidcore.seeds import initial_noise

diffusers = pytest.importorskip("diffusers")
DATA = Path(__file__).parent / "data"
PROMPTS = ["a cat surfing a wave", "the cat"]


def _image(h=40, w=56, seed=0):
    return torch.randint(0, 256, (h, w, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_llava_encoding_matches_diffusers_i2v_pipeline():
    torch.manual_seed(0)
    tok, cfg, tpl, proc = tiny_i2v_parts(" ".join(PROMPTS))
    enc = LlavaTextEncoder(cfg).eval()
    enc.tokenizer, enc.image_processor = tok, proc
    image = _image()
    pixels = clip_pixels(proc, image)
    pipe = diffusers.HunyuanVideoImageToVideoPipeline(
        text_encoder=enc.model, tokenizer=tok, transformer=None, vae=None, scheduler=None, text_encoder_2=None,
        tokenizer_2=None, image_processor=proc)
    from PIL import Image

    pil = Image.fromarray(image.numpy())
    template = {"template": tpl.template, "crop_start": tpl.crop_start, "image_emb_start": tpl.image_emb_start,
                "image_emb_end": tpl.image_emb_start + tpl.image_emb_len, "image_emb_len": tpl.image_emb_len}
    lengths = []
    for prompt in PROMPTS:  # diffusers' I2V encoding takes one image per prompt
        states, mask = enc.encode([prompt], pixels, tpl, text_len=20)
        with torch.no_grad():
            want, want_mask = pipe._get_llama_prompt_embeds(pil, [prompt], template, device=torch.device("cpu"),
                                                            max_sequence_length=20,
                                                            image_embed_interleave=tpl.interleave)
        assert states.shape == want.shape and torch.equal(mask, want_mask.to(mask.dtype))
        torch.testing.assert_close(states, want, rtol=0, atol=1e-6)
        lengths.append(int(mask.sum()))
    # image features first (4 / interleave 2 = 2), then the prompt (+ <|eot_id|>) without the reply header
    assert lengths == [2 + 6, 2 + 3]


def test_buckets_are_the_official_lists():
    ref = json.loads((DATA / "hunyuan_defaults.json").read_text())
    buckets = ref["tasks"]["hunyuanvideo-i2v/i2v-720p"]["resolution_buckets"]["value"]
    for tier, base in (("720p", 960), ("540p", 720), ("360p", 480)):
        assert [list(b) for b in crop_size_list(base, 32)] == buckets[tier]["buckets_hw"]
    lst = crop_size_list(960)
    assert closest_bucket(720, 1280, lst) == (704, 1248)  # 16:9: only strictly taller buckets count (official)
    h, w = closest_bucket(1024, 1024, lst)
    assert h / w <= 1.0 and (h, w) == (960, 960)  # a square image takes the square bucket
    h, w = closest_bucket(1000, 700, lst)  # portrait: only buckets no taller than the image
    assert h / w <= 1000 / 700
    assert closest_bucket(100, 1000, lst) == (480, 1920)  # very wide: the widest bucket


def test_resize_center_crop_geometry_and_range():
    img = torch.zeros(60, 100, 3, dtype=torch.uint8)
    img[:, 50:] = 255  # right half white
    x = resize_center_crop(img, 32, 48)
    assert x.shape == (3, 32, 48) and x.min() >= -1 and x.max() <= 1
    assert torch.all(x[:, :, :20] == -1) and torch.all(x[:, :, 28:] == 1)  # the edge stays centred


def test_i2v_backend_validation():
    from vidcore_hunyuan.backends import BACKENDS

    from vidcore.request import load_inputs, resolve

    i2v = next(b for b in BACKENDS if b.name == "hunyuan-video-i2v")
    with pytest.raises(InvalidRequestError, match="image"):
        resolve(i2v, "a cat")
    assert i2v.spec.stability and i2v.defaults.schedule_options["shift"] == 7.0
    dyn = next(b for b in BACKENDS if b.name == "hunyuan-video-i2v-dynamic")
    assert not dyn.spec.stability and dyn.defaults.schedule_options["shift"] == 17.0
    req = resolve(i2v, "a cat", image="x.png")
    with pytest.raises(InvalidRequestError):
        i2v.validate(req, type("I", (), {"image": None})())
    del load_inputs


@pytest.fixture(scope="module")
def tiny_i2v(tmp_path_factory):
    import dataclasses

    from hunyuan_tiny import tiny_i2v_spec, write_tiny_i2v_checkpoint
    from vidcore_hunyuan.backends import HunyuanBackend

    import vidcore

    tok, cfg, tpl, proc = tiny_i2v_parts(" ".join(PROMPTS))
    spec = tiny_i2v_spec(tok, cfg, dataclasses.replace(tpl, interleave=4))
    root = write_tiny_i2v_checkpoint(tmp_path_factory.mktemp("hunyuan_i2v"), spec, tok, proc)
    backend = HunyuanBackend(spec)
    return backend, root, vidcore.load(backend, root, dtype="fp32", device="cpu")


def test_i2v_run_matches_diffusers_token_replace(tiny_i2v, tmp_path):
    from PIL import Image
    from vidcore_hunyuan.convert import to_diffusers

    from vidcore.request import resolve

    backend, _, pipe = tiny_i2v
    spec = backend.spec
    image = _image(48, 32, seed=3)  # h:w 3:2 is exactly a bucket: no resize, no crop
    path = tmp_path / "ref.png"
    Image.fromarray(image.numpy()).save(path)
    xs: list[torch.Tensor] = []
    video = pipe(PROMPTS[0], image=str(path), frames=5, steps=3, seed=11, callback=lambda i: xs.append(i["x"].clone()))
    assert video.frames.shape == (5, 48, 32, 3)

    comps = pipe.components
    d = spec.dit
    dit = diffusers.HunyuanVideoTransformer3DModel(
        in_channels=d.in_channels, out_channels=d.out_channels, num_attention_heads=d.heads,
        attention_head_dim=d.head_dim, num_layers=d.double_blocks, num_single_layers=d.single_blocks,
        num_refiner_layers=d.refiner_blocks, mlp_ratio=d.mlp_ratio, patch_size=2, patch_size_t=1,
        guidance_embeds=True, text_embed_dim=d.text_dim, pooled_projection_dim=d.pooled_dim, rope_theta=256.0,
        rope_axes_dim=d.rope_dims, image_condition_type="token_replace").eval()
    dit.load_state_dict(to_diffusers(comps["denoiser"].state_dict(), d.hidden_size))
    p = spec.vae
    vae = diffusers.AutoencoderKLHunyuanVideo(
        latent_channels=p.latent_channels, block_out_channels=p.block_out_channels,
        layers_per_block=p.layers_per_block, norm_num_groups=p.norm_groups, scaling_factor=p.scaling_factor).eval()
    vae.load_state_dict(comps["vae"].state_dict())
    llm = comps["text_encoder"]
    ref = diffusers.HunyuanVideoImageToVideoPipeline(
        text_encoder=llm.model, tokenizer=llm.tokenizer, transformer=dit, vae=vae,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=comps["text_encoder_2"].model,
        tokenizer_2=comps["text_encoder_2"].tokenizer, image_processor=llm.image_processor)
    req = resolve(backend, PROMPTS[0], image=str(path), frames=5, seed=11)
    req.width, req.height = 32, 48
    state = {"noise_dtype": torch.float32}  # what encode records for this fp32 run
    noise = initial_noise(backend, req, torch.device("cpu"), Conditions({}, state=state))  # raw draw
    tpl = spec.template
    with torch.no_grad():
        want = ref(image=Image.fromarray(image.numpy()), prompt=PROMPTS[0], height=48, width=32, num_frames=5,
                   num_inference_steps=3, guidance_scale=6.0, true_cfg_scale=1.0, latents=noise.clone(),
                   output_type="latent", max_sequence_length=spec.text_len,
                   prompt_template={"template": tpl.template, "crop_start": tpl.crop_start,
                                    "image_emb_start": tpl.image_emb_start,
                                    "image_emb_end": tpl.image_emb_start + tpl.image_emb_len,
                                    "image_emb_len": tpl.image_emb_len}).frames
    ours = xs[-1]
    scale = float(want.abs().max())
    torch.testing.assert_close(ours[:, :, 1:], want[:, :, 1:], rtol=0, atol=1e-4 * scale)


def test_i2v_stability_start_and_pinned_first_frame(tiny_i2v, tmp_path):
    from PIL import Image

    from vidcore.backend import Inputs
    from vidcore.request import resolve

    backend, _, pipe = tiny_i2v
    image = _image(48, 32, seed=4)
    path = tmp_path / "ref.png"
    Image.fromarray(image.numpy()).save(path)
    req = resolve(backend, "a cat", image=str(path), frames=5, seed=5)
    req.width, req.height = 32, 48
    raw = initial_noise(backend, req, torch.device("cpu"))  # official default: drawn in fp16
    assert torch.equal(raw, raw.half().float())
    conds = backend.encode(pipe.components, req, Inputs(image=image), torch.device("cpu"))
    z = conds.cond["first_frame"]
    assert z.shape == (1, 4, 1, 6, 4)
    conds.state["noise_dtype"] = torch.float16  # as with the official fp16 text encoders
    mixed = initial_noise(backend, req, torch.device("cpu"), conds)
    want = (raw.half() * torch.tensor([0.999]) + z.half() * (1 - torch.tensor([0.999]))).half().float()
    torch.testing.assert_close(mixed, want, rtol=0, atol=0)
    latents = torch.randn(1, 4, 2, 6, 4)
    frames = backend.decode(pipe.components, latents, req, conditions=conds)  # pins frame 0 to the image latent
    ref = backend.decode(pipe.components, torch.cat([z, latents[:, :, 1:]], dim=2), req,
                         conditions=Conditions({}))
    assert torch.equal(frames, ref)
