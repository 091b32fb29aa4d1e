"""Tensor-name maps between the official Wan checkpoints (our module names) and other layouts.

The official names are our names, so the official folders load unchanged.
These maps let us also load the diffusers layout (``Wan-AI/...-Diffusers``:
``transformer/``, ``transformer_2/``, ``vae/``) and transformers' UMT5 encoder
naming, and let the tests convert weights into the diffusers/transformers
oracles. Each map is a list of (official, other) name fragments matched on
whole dotted components, applied in both directions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

# -- DiT --------------------------------------------------------------------------------------------
_DIT_TOP = [
    ("time_embedding.0.", "condition_embedder.time_embedder.linear_1."),
    ("time_embedding.2.", "condition_embedder.time_embedder.linear_2."),
    ("text_embedding.0.", "condition_embedder.text_embedder.linear_1."),
    ("text_embedding.2.", "condition_embedder.text_embedder.linear_2."),
    ("time_projection.1.", "condition_embedder.time_proj."),
    ("head.head.", "proj_out."),
]
_DIT_BLOCK = [  # inside blocks.N.
    ("self_attn.q.", "attn1.to_q."), ("self_attn.k.", "attn1.to_k."), ("self_attn.v.", "attn1.to_v."),
    ("self_attn.o.", "attn1.to_out.0."), ("self_attn.norm_q.", "attn1.norm_q."),
    ("self_attn.norm_k.", "attn1.norm_k."),
    ("cross_attn.q.", "attn2.to_q."), ("cross_attn.k.", "attn2.to_k."), ("cross_attn.v.", "attn2.to_v."),
    ("cross_attn.o.", "attn2.to_out.0."), ("cross_attn.norm_q.", "attn2.norm_q."),
    ("cross_attn.norm_k.", "attn2.norm_k."),
    ("norm3.", "norm2."),  # official norm3 is the cross-attention norm; diffusers calls it norm2
    ("ffn.0.", "ffn.net.0.proj."), ("ffn.2.", "ffn.net.2."),
]


def _swap(name: str, pairs: list[tuple[str, str]], forward: bool) -> str | None:
    for a, b in pairs:
        src, dst = (a, b) if forward else (b, a)
        if name.startswith(src):
            return dst + name[len(src):]
    return None


def dit_to_diffusers(name: str) -> str:
    """Official WanModel tensor name -> diffusers WanTransformer3DModel name."""
    if name == "head.modulation":
        return "scale_shift_table"
    m = re.match(r"(blocks\.\d+\.)(.*)", name)
    if m:
        prefix, rest = m.groups()
        if rest == "modulation":
            return prefix + "scale_shift_table"
        out = _swap(rest, _DIT_BLOCK, True)
        if out is None:
            raise KeyError(f"no diffusers name for DiT tensor {name!r}")
        return prefix + out
    out = _swap(name, _DIT_TOP, True)
    if out is None and name.startswith("patch_embedding."):
        out = name
    if out is None:
        raise KeyError(f"no diffusers name for DiT tensor {name!r}")
    return out


def dit_from_diffusers(name: str) -> str:
    """diffusers WanTransformer3DModel tensor name -> official name."""
    if name == "scale_shift_table":
        return "head.modulation"
    m = re.match(r"(blocks\.\d+\.)(.*)", name)
    if m:
        prefix, rest = m.groups()
        if rest == "scale_shift_table":
            return prefix + "modulation"
        out = _swap(rest, _DIT_BLOCK, False)
        if out is None:
            raise KeyError(f"no official name for diffusers DiT tensor {name!r}")
        return prefix + out
    out = _swap(name, _DIT_TOP, False)
    if out is None and name.startswith("patch_embedding."):
        out = name
    if out is None:
        raise KeyError(f"no official name for diffusers DiT tensor {name!r}")
    return out


# -- VAE --------------------------------------------------------------------------------------------
def _vae_pairs(version: str, num_res_blocks: int, temporal_downsample: Iterable[bool],
               stages: int) -> list[tuple[str, str]]:
    """Exact (official module prefix, diffusers module prefix) pairs for one Wan VAE config."""
    pairs: list[tuple[str, str]] = [
        ("encoder.conv1.", "encoder.conv_in."), ("decoder.conv1.", "decoder.conv_in."),
        ("conv1.", "quant_conv."), ("conv2.", "post_quant_conv."),
        ("encoder.head.0.", "encoder.norm_out."), ("encoder.head.2.", "encoder.conv_out."),
        ("decoder.head.0.", "decoder.norm_out."), ("decoder.head.2.", "decoder.conv_out."),
    ]
    res = [("residual.0.", "norm1."), ("residual.2.", "conv1."), ("residual.3.", "norm2."),
           ("residual.6.", "conv2."), ("shortcut.", "conv_shortcut.")]
    attn = [("norm.", "norm."), ("to_qkv.", "to_qkv."), ("proj.", "proj.")]
    for side in ("encoder", "decoder"):
        pairs += [(f"{side}.middle.0.{a}", f"{side}.mid_block.resnets.0.{b}") for a, b in res]
        pairs += [(f"{side}.middle.1.{a}", f"{side}.mid_block.attentions.0.{b}") for a, b in attn]
        pairs += [(f"{side}.middle.2.{a}", f"{side}.mid_block.resnets.1.{b}") for a, b in res]
    resample = [("resample.1.", "resample.1."), ("time_conv.", "time_conv.")]
    if version == "2.1":
        # encoder: flat list of res blocks and resamples; diffusers keeps the same flat indices
        idx = 0
        for s in range(stages):
            for _ in range(num_res_blocks):
                pairs += [(f"encoder.downsamples.{idx}.{a}", f"encoder.down_blocks.{idx}.{b}") for a, b in res]
                idx += 1
            if s != stages - 1:
                pairs += [(f"encoder.downsamples.{idx}.{a}", f"encoder.down_blocks.{idx}.{b}") for a, b in resample]
                idx += 1
        # decoder: flat official list -> up_blocks.S.resnets.J / up_blocks.S.upsamplers.0
        idx = 0
        for s in range(stages):
            for j in range(num_res_blocks + 1):
                pairs += [(f"decoder.upsamples.{idx}.{a}", f"decoder.up_blocks.{s}.resnets.{j}.{b}") for a, b in res]
                idx += 1
            if s != stages - 1:
                pairs += [(f"decoder.upsamples.{idx}.{a}", f"decoder.up_blocks.{s}.upsamplers.0.{b}")
                          for a, b in resample]
                idx += 1
    else:
        for s in range(stages):
            for j in range(num_res_blocks):
                pairs += [(f"encoder.downsamples.{s}.downsamples.{j}.{a}", f"encoder.down_blocks.{s}.resnets.{j}.{b}")
                          for a, b in res]
            if s != stages - 1:
                j = num_res_blocks
                pairs += [(f"encoder.downsamples.{s}.downsamples.{j}.{a}",
                           f"encoder.down_blocks.{s}.downsampler.{b}") for a, b in resample]
            for j in range(num_res_blocks + 1):
                pairs += [(f"decoder.upsamples.{s}.upsamples.{j}.{a}", f"decoder.up_blocks.{s}.resnets.{j}.{b}")
                          for a, b in res]
            if s != stages - 1:
                j = num_res_blocks + 1
                pairs += [(f"decoder.upsamples.{s}.upsamples.{j}.{a}",
                           f"decoder.up_blocks.{s}.upsampler.{b}") for a, b in resample]
    return pairs


def vae_name_map(version: str, num_res_blocks: int = 2, temporal_downsample: Iterable[bool] = (False, True, True),
                 stages: int = 4) -> tuple[Callable[[str], str], Callable[[str], str]]:
    """(official -> diffusers, diffusers -> official) name functions for a Wan VAE config."""
    pairs = sorted(_vae_pairs(version, num_res_blocks, temporal_downsample, stages), key=lambda p: -len(p[0]))
    back = sorted(pairs, key=lambda p: -len(p[1]))

    def to_diffusers(name: str) -> str:
        out = _swap(name, pairs, True)
        if out is None:
            raise KeyError(f"no diffusers name for VAE tensor {name!r}")
        return out

    def from_diffusers(name: str) -> str:
        out = _swap(name, back, False)
        if out is None:
            raise KeyError(f"no official name for diffusers VAE tensor {name!r}")
        return out

    return to_diffusers, from_diffusers


# -- umT5 -------------------------------------------------------------------------------------------
def t5_to_transformers(name: str) -> str:
    """Wan's umT5 encoder name -> transformers UMT5EncoderModel name."""
    if name == "token_embedding.weight":
        return "shared.weight"
    if name == "norm.weight":
        return "encoder.final_layer_norm.weight"
    m = re.match(r"blocks\.(\d+)\.(.*)", name)
    if not m:
        raise KeyError(f"no transformers name for T5 tensor {name!r}")
    i, rest = m.groups()
    table = {
        "norm1.weight": "layer.0.layer_norm.weight",
        "attn.q.weight": "layer.0.SelfAttention.q.weight",
        "attn.k.weight": "layer.0.SelfAttention.k.weight",
        "attn.v.weight": "layer.0.SelfAttention.v.weight",
        "attn.o.weight": "layer.0.SelfAttention.o.weight",
        "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
        "norm2.weight": "layer.1.layer_norm.weight",
        "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
        "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
        "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
    }
    if rest not in table:
        raise KeyError(f"no transformers name for T5 tensor {name!r}")
    return f"encoder.block.{i}.{table[rest]}"


def t5_from_transformers(name: str) -> str | None:
    """transformers UMT5EncoderModel name -> Wan's name (None for tensors Wan does not have, e.g. a tied copy)."""
    if name in ("shared.weight", "encoder.embed_tokens.weight"):
        return "token_embedding.weight" if name == "shared.weight" else None
    if name == "encoder.final_layer_norm.weight":
        return "norm.weight"
    m = re.match(r"encoder\.block\.(\d+)\.(.*)", name)
    if not m:
        raise KeyError(f"no Wan name for transformers T5 tensor {name!r}")
    i, rest = m.groups()
    for ours in ("norm1.weight", "attn.q.weight", "attn.k.weight", "attn.v.weight", "attn.o.weight",
                 "pos_embedding.embedding.weight", "norm2.weight", "ffn.gate.0.weight", "ffn.fc1.weight",
                 "ffn.fc2.weight"):
        if t5_to_transformers(f"blocks.{i}.{ours}") == name:
            return f"blocks.{i}.{ours}"
    raise KeyError(f"no Wan name for transformers T5 tensor {name!r} ({rest})")
