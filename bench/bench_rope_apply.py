"""Benchmark: 3D RoPE on interleaved pairs (Triton) vs its torch reference vs torch.compile(reference).

Wan2.2 A14B 720p: q (1, 75600, 40, 128) bf16 token-first, head dim split 44/42/42 over a 21x45x80 latent
grid, float32 tables (L, 1, 64). (Wan's own code rotates in float64; float64 tables are accepted too.)

    python bench/bench_rope_apply.py [--device cuda] [--dtype bf16] [--grid 21 45 80] [--csv out.csv]
"""

from __future__ import annotations

import torch

from vidcore.kernels import benchmark as bm
from vidcore.kernels import reference as ref


def main() -> None:
    p = bm.common_args(__doc__.splitlines()[0])
    p.add_argument("--grid", type=int, nargs=3, default=None, help="latent (t, h, w); default 21 45 80 on CUDA")
    p.add_argument("--heads", type=int, default=40)
    p.add_argument("--table-dtype", default="fp32", choices=["fp32", "fp64"])
    args = p.parse_args()
    device, dtype, _ = bm.resolve_common(args)
    grid = tuple(args.grid) if args.grid else ((21, 45, 80) if device.type == "cuda" else (4, 16, 16))
    tdt = torch.float64 if args.table_dtype == "fp64" else torch.float32
    cos, sin = ref.rope_freqs_3d((44, 42, 42), grid, dtype=tdt, device=device)
    cos, sin = cos[:, None], sin[:, None]
    L = cos.shape[0]
    q = torch.randn(1, L, args.heads, 128, device=device, dtype=dtype)
    compiled_ref = bm.maybe_compile(ref.rope_apply, not args.no_compile)
    triton_fn = "needs CUDA (the CPU interpreter is for correctness, not speed)"
    if device.type == "cuda":
        from vidcore.kernels import triton_rope_apply as tk

        torch.testing.assert_close(tk.rope_apply(q, cos, sin), ref.rope_apply(q, cos, sin), rtol=1e-2, atol=1e-2)

        def triton_fn():
            return tk.rope_apply(q, cos, sin)

    nbytes = 2 * q.numel() * q.element_size() + 2 * cos.numel() * cos.element_size()
    print(f"device: {bm.device_name(device)}; copy bandwidth measured now: {bm.copy_bandwidth(device) / 1e9:.1f} GB/s")
    with torch.no_grad():
        bm.run_providers("rope_apply", f"(1,{L},{args.heads},128)", dtype, device,
                         {"reference": lambda: ref.rope_apply(q, cos, sin),
                          "torch.compile(ref)": (lambda: compiled_ref(q, cos, sin)) if compiled_ref else bm.NO_COMPILE,
                          "triton": triton_fn},
                         nbytes, args.csv)


if __name__ == "__main__":
    main()
