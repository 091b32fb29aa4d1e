"""Benchmark: `vidcore.attention` dispatch vs plain SDPA, each backend, and varlen packing vs a padding mask.

Default shapes: Wan2.2 A14B 720p self-attention q/k/v (1, 40, 75600, 128) bf16 on CUDA; (1, 4, 1024, 64)
fp32 on CPU. The varlen part pads two sequences (full length and ``--valid`` of it) and compares a boolean
key mask over the padded batch with `attention_varlen` over the valid tokens only.

    python bench/bench_attention.py [--device cuda] [--heads 40] [--tokens 75600] [--head-dim 128]
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from vidcore.attention import AttentionBackendError, attention, attention_backends, attention_varlen, cu_seqlens, pack
from vidcore.kernels import benchmark as bm


def flops(b: int, h: int, lq: int, lk: int, d: int) -> float:
    return 4.0 * b * h * lq * lk * d


def main() -> None:
    p = bm.common_args(__doc__.splitlines()[0])
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--head-dim", type=int, default=None)
    p.add_argument("--valid", type=float, default=0.6, help="fraction of valid tokens in the shorter sequence")
    args = p.parse_args()
    device, dtype, _ = bm.resolve_common(args)
    cuda = device.type == "cuda"
    H = args.heads or (40 if cuda else 4)
    L = args.tokens or (75600 if cuda else 1024)
    D = args.head_dim or (128 if cuda else 64)
    print(f"device: {bm.device_name(device)}; torch {torch.__version__}; q/k/v (1, {H}, {L}, {D}) {dtype}")
    q, k, v = (torch.randn(1, H, L, D, device=device, dtype=dtype) for _ in range(3))
    f = flops(1, H, L, L, D)

    def line(name: str, t: bm.Timing, base: float | None, fl: float) -> None:
        ratio = f"{base / t.median_ms:5.2f}x plain SDPA" if base else ""
        print(f"  {name:26s} {t.median_ms:10.3f} ms  {fl / (t.median_ms * 1e-3) / 1e12:8.2f} TFLOP/s  {ratio}")

    print("dense self-attention")
    base = bm.time_fn(lambda: F.scaled_dot_product_attention(q, k, v), device)
    line("F.sdpa (baseline)", base, None, f)
    line("vidcore.attention (auto)", bm.time_fn(lambda: attention(q, k, v), device), base.median_ms, f)
    for name in attention_backends():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                attention(q, k, v, backend=name)
        except AttentionBackendError as exc:
            print(f"  {name:26s} cannot run: {str(exc).split(';')[0]}")
            continue
        line(name, bm.time_fn(lambda n=name: attention(q, k, v, backend=n), device), base.median_ms, f)

    short = max(1, int(L * args.valid))
    lengths = [L, short]
    print(f"\npadded batch of 2, valid lengths {lengths} (padded to {L})")
    qb, kb, vb = (torch.randn(2, H, L, D, device=device, dtype=dtype) for _ in range(3))
    valid = torch.arange(L, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]
    mask = valid[:, None, None, :]
    useful = sum(flops(1, H, n, n, D) for n in lengths)
    t_mask = bm.time_fn(lambda: attention(qb, kb, vb, mask=mask), device)
    line("padded + bool key mask", t_mask, None, useful)
    packed = [pack(t.transpose(1, 2), lengths) for t in (qb, kb, vb)]
    cu = cu_seqlens(lengths, device=device)
    t_var = bm.time_fn(lambda: attention_varlen(*packed, cu, cu, max_seqlen_q=L, max_seqlen_k=L), device)
    line("attention_varlen (packed)", t_var, None, useful)
    print(f"  varlen speed-up over the mask: {t_mask.median_ms / t_var.median_ms:.2f}x "
          f"(useful FLOPs counted for both)")
    if cuda:
        print(f"peak memory: {bm.peak_memory_mb(device):.0f} MiB")


if __name__ == "__main__":
    main()
