"""Shared helpers of the Wan2.2 plugin tests: reference manifests and tiny configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def manifest(name: str) -> dict:
    return json.loads((DATA / name).read_text())




# -- tiny backends and checkpoints written in the official layout ----------------------------------
def tiny_specs():
    """Tiny variants of the three backends (same code paths, small numbers)."""
    from vidcore_wan22.backends import SPECS, WanSpec
    from vidcore_wan22.configs import DiTParams, T5Params, VAEParams

    t5 = T5Params(vocab=16, dim=16, dim_attn=16, dim_ffn=24, num_heads=2, num_layers=1, num_buckets=8,
                  max_distance=16, text_len=12)

    def dit(in_dim, out_dim):
        return DiTParams(dim=32, ffn_dim=48, num_heads=2, num_layers=2, in_dim=in_dim, out_dim=out_dim, text_dim=16,
                         text_len=12, freq_dim=16)

    def vae(version, z):
        return VAEParams(version, dim=4, z_dim=z, dec_dim=6 if version == "2.2" else None,
                         mean=tuple(0.05 * i for i in range(z)), std=tuple(1.0 + 0.1 * i for i in range(z)))

    by_name = {s.name: s for s in SPECS}
    out = []
    for name, d, v, sizes in [
        ("wan2.2-t2v-a14b", dit(4, 4), vae("2.1", 4), ((48, 32), (32, 48))),
        ("wan2.2-i2v-a14b", dit(12, 4), vae("2.1", 4), ((48, 32), (32, 48))),
        ("wan2.2-ti2v-5b", dit(4, 4), vae("2.2", 4), ((64, 32), (32, 64))),
    ]:
        base = by_name[name]
        d_ = base.defaults
        defaults = type(d_)(**{**d_.__dict__, "size": sizes[0], "frames": 5, "steps": 4})
        out.append(WanSpec(**{**base.__dict__, "name": name.replace("wan2.2-", "tiny-"), "dit": d, "vae": v,
                              "t5": t5, "defaults": defaults, "official_sizes": sizes}))
    out.append(WanSpec(**{**out[0].__dict__, "name": "tiny-t2v-a14b-diffusers", "layout_kind": "diffusers"}))
    return out


class TinyPlugin:
    """A plugin object registering the tiny backends (for `vidcore.plugins.reset(extra_plugins=...)`)."""

    def __init__(self, backends):
        from vidcore.hookspecs import hookimpl

        @hookimpl
        def register_backends(register):
            for b in backends:
                register(b)

        self.register_backends = register_backends


def write_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["a", "cat", "surfs", "on", "waves", "the", "dog", "runs", "色调艳丽，过曝，静态，细节模糊不清，字幕，风格"]
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(str(folder))


def write_official_checkpoint(backend, folder: Path, seed: int = 0) -> dict:
    """Random weights for ``backend`` saved as the official release lays them out; returns the state dicts."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    comps = backend.build("cpu")
    states = {}
    for name, module in comps.items():
        with torch.no_grad():
            for t in module.parameters():
                t.copy_(torch.randn_like(t) * 0.2)
        states[name] = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(states["text_encoder"], folder / "models_t5_umt5-xxl-enc-bf16.pth")
    torch.save(states["vae"], folder / backend.spec.vae_file)
    for comp, sub, _ in backend.spec.experts:
        d = folder / sub if sub else folder
        d.mkdir(parents=True, exist_ok=True)
        save_file(states[comp], str(d / "diffusion_pytorch_model.safetensors"))
        (d / "config.json").write_text(json.dumps({"_class_name": "WanModel"}))
    write_tokenizer(folder / "google" / "umt5-xxl")
    return states


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one intra-op thread is several times faster than two on a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_diffusers_checkpoint(backend, states: dict, folder: Path) -> None:
    """The same weights in the diffusers folder layout (names converted by our key maps)."""
    import torch
    from safetensors.torch import save_file
    from vidcore_wan22 import keymaps

    p = backend.spec.vae
    to_d, _ = keymaps.vae_name_map(p.version, p.num_res_blocks, p.temporal_downsample, len(p.dim_mult))
    for comp, _, sub in backend.spec.experts:
        (folder / sub).mkdir(parents=True, exist_ok=True)
        save_file({keymaps.dit_to_diffusers(k): v for k, v in states[comp].items()},
                  str(folder / sub / "diffusion_pytorch_model.safetensors"))
    (folder / "vae").mkdir(parents=True, exist_ok=True)
    save_file({to_d(k): v for k, v in states["vae"].items()},
              str(folder / "vae" / "diffusion_pytorch_model.safetensors"))
    (folder / "text_encoder").mkdir(parents=True, exist_ok=True)
    t5 = {keymaps.t5_to_transformers(k): v for k, v in states["text_encoder"].items()}
    t5["encoder.embed_tokens.weight"] = t5["shared.weight"].clone()  # transformers may store the tied copy
    save_file({k: v.to(torch.bfloat16) for k, v in t5.items()}, str(folder / "text_encoder" / "model.safetensors"))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    write_tokenizer(folder / "tokenizer")
