"""Benchmark (numerics): which bf16 Wan DiT is closer to float32, ours or diffusers'? CPU-sized.

A 12-layer, 512-wide Wan DiT with random float32 weights; the same weights rounded to bf16 run
through our WanModel and through diffusers' WanTransformer3DModel (its ``_keep_in_fp32_modules``
kept in float32, as ``from_pretrained`` does). Prints each one's relative difference (norm) from our
float32 output, and from each other. The GPU acceptance run's ``numerics`` stage does the same at
full size.

    python bench/bench_bf16_closeness.py [--layers 12] [--dim 512]
"""

from __future__ import annotations

import argparse
import copy

import torch
from diffusers import WanTransformer3DModel
from vidcore_wan22 import keymaps
from vidcore_wan22.configs import DiTParams
from vidcore_wan22.dit import WanModel

from vidcore.bench.random_weights import materialise
from vidcore.bench.reference import as_loaded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--dim", type=int, default=512)
    args = ap.parse_args()
    p = DiTParams(dim=args.dim, ffn_dim=3 * args.dim, num_heads=args.dim // 128, num_layers=args.layers,
                  text_dim=256, text_len=64, freq_dim=256)
    with torch.device("meta"):
        ours = WanModel(p)
    materialise(ours, "cpu", torch.float32)
    ref = WanTransformer3DModel(patch_size=p.patch_size, num_attention_heads=p.num_heads,
                                attention_head_dim=p.head_dim, in_channels=p.in_dim, out_channels=p.out_dim,
                                text_dim=p.text_dim, freq_dim=p.freq_dim, ffn_dim=p.ffn_dim, num_layers=p.num_layers,
                                cross_attn_norm=p.cross_attn_norm, qk_norm="rms_norm_across_heads", eps=p.eps)
    ref.load_state_dict({keymaps.dit_to_diffusers(k): v.clone() for k, v in ours.state_dict().items()})
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 4, 32, 32, generator=gen)
    ctx = torch.randn(1, p.text_len, p.text_dim, generator=gen)
    ctx[:, 20:] = 0
    t = torch.tensor([900.0])
    with torch.no_grad():
        gold = ours(x, t, ctx).float()
        ours_bf16 = copy.deepcopy(ours).to(torch.bfloat16)(x, t, ctx).float()
        as_loaded(ref, torch.device("cpu"), torch.bfloat16)
        ref_bf16 = ref(x.bfloat16(), t, ctx.bfloat16(), return_dict=False)[0].float()

    def rd(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / b.norm())

    print(f"Wan DiT {args.layers} layers x {args.dim}, {x.shape[2] * x.shape[3] * x.shape[4] // 4} tokens, "
          f"torch {torch.__version__}")
    print(f"  vidcore bf16   vs float32: {rd(ours_bf16, gold):.2e}")
    print(f"  diffusers bf16 vs float32: {rd(ref_bf16, gold):.2e}")
    print(f"  vidcore bf16 vs diffusers bf16: {rd(ours_bf16, ref_bf16):.2e}")


if __name__ == "__main__":
    main()
