"""The diffusers layout of the HunyuanVideo DiT, to and from the official names.

diffusers (``HunyuanVideoTransformer3DModel``) renames most tensors and also
*reshapes* some: the fused q|k|v projections (``*_attn_qkv``,
``self_attn_qkv``) become three tensors, the single-block ``linear1``
(q|k|v|mlp_in) becomes four, and ``final_layer.adaLN_modulation.1`` stores
(scale, shift) where the official stores (shift, scale). A plain key map
cannot express that, so each official tensor is described by *pieces*: row
ranges of the official tensor and where they sit in a diffusers tensor. The
same pieces convert in both directions. Facts from diffusers'
``scripts/convert_hunyuan_video_to_diffusers.py``; the mapping is ours.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from vidcore.errors import CheckpointError

# plain renames, applied in order to the official name (longest, most specific first)
_DOUBLE = [
    ("img_mod.linear", "norm1.linear"), ("txt_mod.linear", "norm1_context.linear"),
    ("img_attn_q_norm", "attn.norm_q"), ("img_attn_k_norm", "attn.norm_k"),
    ("txt_attn_q_norm", "attn.norm_added_q"), ("txt_attn_k_norm", "attn.norm_added_k"),
    ("img_attn_proj", "attn.to_out.0"), ("txt_attn_proj", "attn.to_add_out"),
    ("img_mlp.fc1", "ff.net.0.proj"), ("img_mlp.fc2", "ff.net.2"),
    ("txt_mlp.fc1", "ff_context.net.0.proj"), ("txt_mlp.fc2", "ff_context.net.2"),
]
_SINGLE = [("linear2", "proj_out"), ("q_norm", "attn.norm_q"), ("k_norm", "attn.norm_k"),
           ("modulation.linear", "norm.linear")]
_REFINER = [("norm1", "norm1"), ("norm2", "norm2"), ("self_attn_proj", "attn.to_out.0"),
            ("mlp.fc1", "ff.net.0.proj"), ("mlp.fc2", "ff.net.2"), ("adaLN_modulation.1", "norm_out.linear")]
_TOP = [
    ("img_in.", "x_embedder."),
    ("time_in.mlp.0.", "time_text_embed.timestep_embedder.linear_1."),
    ("time_in.mlp.2.", "time_text_embed.timestep_embedder.linear_2."),
    ("guidance_in.mlp.0.", "time_text_embed.guidance_embedder.linear_1."),
    ("guidance_in.mlp.2.", "time_text_embed.guidance_embedder.linear_2."),
    ("vector_in.in_layer.", "time_text_embed.text_embedder.linear_1."),
    ("vector_in.out_layer.", "time_text_embed.text_embedder.linear_2."),
    ("txt_in.input_embedder.", "context_embedder.proj_in."),
    ("txt_in.t_embedder.mlp.0.", "context_embedder.time_text_embed.timestep_embedder.linear_1."),
    ("txt_in.t_embedder.mlp.2.", "context_embedder.time_text_embed.timestep_embedder.linear_2."),
    ("txt_in.c_embedder.linear_1.", "context_embedder.time_text_embed.text_embedder.linear_1."),
    ("txt_in.c_embedder.linear_2.", "context_embedder.time_text_embed.text_embedder.linear_2."),
    ("final_layer.linear.", "proj_out."),
]


@dataclass(frozen=True)
class Piece:
    """Rows ``[start, stop)`` of an official tensor are rows ``[dst_start, dst_start + stop - start)`` of ``dst``."""

    start: int
    stop: int
    dst: str
    dst_start: int = 0


def _whole(dst: str, rows: int) -> list[Piece]:
    return [Piece(0, rows, dst)]


def diffusers_pieces(name: str, rows: int, hidden: int) -> list[Piece]:
    """Where the official tensor ``name`` (``rows`` along dim 0) goes in the diffusers layout."""
    m = re.fullmatch(r"double_blocks\.(\d+)\.(.+)\.(weight|bias)", name)
    if m:
        i, mod, kind = m.groups()
        base = f"transformer_blocks.{i}"
        if mod in ("img_attn_qkv", "txt_attn_qkv"):
            q, k, v = ("to_q", "to_k", "to_v") if mod == "img_attn_qkv" else ("add_q_proj", "add_k_proj", "add_v_proj")
            return [Piece(j * hidden, (j + 1) * hidden, f"{base}.attn.{n}.{kind}") for j, n in enumerate((q, k, v))]
        for old, new in _DOUBLE:
            if mod == old:
                return _whole(f"{base}.{new}.{kind}", rows)
    m = re.fullmatch(r"single_blocks\.(\d+)\.(.+)\.(weight|bias)", name)
    if m:
        i, mod, kind = m.groups()
        base = f"single_transformer_blocks.{i}"
        if mod == "linear1":
            dsts = ("attn.to_q", "attn.to_k", "attn.to_v")
            out = [Piece(j * hidden, (j + 1) * hidden, f"{base}.{d}.{kind}") for j, d in enumerate(dsts)]
            return out + [Piece(3 * hidden, rows, f"{base}.proj_mlp.{kind}")]
        for old, new in _SINGLE:
            if mod == old:
                return _whole(f"{base}.{new}.{kind}", rows)
    m = re.fullmatch(r"txt_in\.individual_token_refiner\.blocks\.(\d+)\.(.+)\.(weight|bias)", name)
    if m:
        i, mod, kind = m.groups()
        base = f"context_embedder.token_refiner.refiner_blocks.{i}"
        if mod == "self_attn_qkv":
            return [Piece(j * hidden, (j + 1) * hidden, f"{base}.attn.{n}.{kind}")
                    for j, n in enumerate(("to_q", "to_k", "to_v"))]
        for old, new in _REFINER:
            if mod == old:
                return _whole(f"{base}.{new}.{kind}", rows)
    if name.startswith("final_layer.adaLN_modulation.1."):
        half = rows // 2  # official (shift, scale) -> diffusers (scale, shift)
        dst = "norm_out.linear." + name.rsplit(".", 1)[1]
        return [Piece(0, half, dst, half), Piece(half, rows, dst, 0)]
    for old, new in _TOP:
        if name.startswith(old):
            return _whole(new + name[len(old):], rows)
    raise KeyError(f"no diffusers equivalent for HunyuanVideo tensor {name!r}")


def diffusers_names(official: Mapping[str, tuple[int, ...]], hidden: int) -> dict[str, tuple[int, ...]]:
    """Diffusers tensor names and shapes for official ``{name: shape}`` (for manifests and checks)."""
    out: dict[str, tuple[int, ...]] = {}
    for name, shape in official.items():
        for pc in diffusers_pieces(name, shape[0], hidden):
            rows = out.get(pc.dst, (0, *shape[1:]))[0]
            out[pc.dst] = (max(rows, pc.dst_start + pc.stop - pc.start), *shape[1:])
    return out


def to_diffusers(state: Mapping[str, torch.Tensor], hidden: int) -> dict[str, torch.Tensor]:
    """Official state dict -> diffusers state dict (views where possible; no copies of whole tensors)."""
    parts: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for name, t in state.items():
        for pc in diffusers_pieces(name, t.shape[0], hidden):
            parts.setdefault(pc.dst, []).append((pc.dst_start, t[pc.start:pc.stop]))
    return {k: _assemble(v) for k, v in parts.items()}


def from_diffusers(state: Mapping[str, torch.Tensor], official_names: Iterable[str], hidden: int,
                   rows_of: Mapping[str, int]) -> dict[str, torch.Tensor]:
    """Diffusers state dict -> official names (concatenating split projections, un-swapping the final AdaLN).

    ``official_names``/``rows_of`` describe the target model (e.g. from a meta build).
    Raises `CheckpointError` naming the first diffusers tensor that is missing.
    """
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for name in official_names:
        pieces = diffusers_pieces(name, rows_of[name], hidden)
        chunks = []
        for pc in sorted(pieces, key=lambda p: p.start):
            if pc.dst not in state:
                raise CheckpointError(f"diffusers checkpoint lacks tensor {pc.dst!r} (needed for {name!r})")
            used.add(pc.dst)
            chunks.append(state[pc.dst][pc.dst_start:pc.dst_start + pc.stop - pc.start])
        out[name] = chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=0)
    extra = sorted(set(state) - used)
    if extra:
        raise CheckpointError(f"diffusers checkpoint has {len(extra)} unexpected tensors, e.g. {extra[0]!r}")
    return out


def _assemble(chunks: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
    if len(chunks) == 1 and chunks[0][0] == 0:
        return chunks[0][1]
    return torch.cat([t for _, t in sorted(chunks, key=lambda c: c[0])], dim=0)


def looks_like_diffusers(names: Iterable[str]) -> bool:
    """True for a diffusers-layout DiT state dict (``transformer_blocks.*``, ``x_embedder.*``)."""
    return any(n.startswith(("transformer_blocks.", "x_embedder.", "single_transformer_blocks.")) for n in names)
