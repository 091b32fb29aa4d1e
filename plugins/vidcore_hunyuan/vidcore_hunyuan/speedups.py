"""What HunyuanVideo knows about speed-ups: diffusers-named LoRAs and the TeaCache fit.

- LoRA key map: a diffusers HunyuanVideo LoRA (``transformer.transformer_blocks.N.attn.to_q``...)
  names diffusers' tensors, which split our fused projections (q|k|v, the single blocks'
  q|k|v|mlp) and swap the final AdaLN halves. `convert.diffusers_pieces` describes each of our
  tensors as pieces of diffusers' ones; read backwards, a diffusers name becomes `vidcore.lora.Rows`
  of ours (e.g. ``to_q`` = the first ``hidden`` rows of ``img_attn_qkv``). Official/ComfyUI/musubi
  names (``diffusion_model.double_blocks.N.img_attn_qkv``, ``lora_unet_double_blocks_N_...``) are
  ours already.
- TeaCache: ali-vilab/TeaCache ``TeaCache4HunyuanVideo/teacache_sample_video.py`` (commit 7c10efc)
  compares the first double block's modulated, normalised image input (``img_mod`` of ``vec``,
  then the AdaLN of ``img_norm1``) and rescales by a fitted polynomial; the first step is always
  computed; thresholds 0.1 (1.6x) and 0.15 (2.1x). It skips the whole model at once, so the
  single-stream stack follows the double-stream stack's decision (``linked``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from vidcore.lora import Rows

from .convert import diffusers_pieces

TEACACHE_SOURCE = ("https://github.com/ali-vilab/TeaCache/blob/7c10efc4702c6b619f47805f7abe4a7a08085aa0/"
                   "TeaCache4HunyuanVideo/teacache_sample_video.py (coefficients; 0.1 for 1.6x, 0.15 for 2.1x)")
TEACACHE_COEFFICIENTS = [7.33226126e+02, -4.01131952e+02, 6.75869174e+01, -3.14987800e+00, 9.61237896e-02]


def diffusers_rows(module: nn.Module, hidden: int) -> dict[str, Any]:
    """diffusers DiT tensor name -> our name (a whole tensor) or the `Rows` of ours it holds."""
    out: dict[str, list[Rows]] = {}
    for name, p in module.named_parameters():
        try:
            pieces = diffusers_pieces(name, p.shape[0], hidden)
        except KeyError:
            continue
        for pc in pieces:
            out.setdefault(pc.dst, []).append(Rows(name, pc.start, pc.stop - pc.start, pc.dst_start))
    rows_of = {n: p.shape[0] for n, p in module.named_parameters()}
    return {dst: (rows[0].target if len(rows) == 1 and rows[0].at == 0 and rows[0].start == 0
                  and rows[0].count == rows_of[rows[0].target] else rows) for dst, rows in out.items()}


def step_cache_options(module: nn.Module, kind: str) -> dict[str, Any]:
    if kind != "teacache":
        return {"linked": True}  # first-block: the first double block decides for the whole model
    from .dit import _modulate

    first = module.double_blocks[0]

    def signal(state: tuple, kwargs: dict) -> Any:
        shift, scale = first.img_mod(kwargs["vec"])[:2]
        return _modulate(state[0], shift, scale)

    return {"signal": signal, "coefficients": TEACACHE_COEFFICIENTS, "warmup": 1, "linked": True,
            "source": TEACACHE_SOURCE}
