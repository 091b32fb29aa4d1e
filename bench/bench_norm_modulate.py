"""Benchmark: fused LayerNorm + AdaLN modulation (Triton) vs its torch reference vs torch.compile(reference).

Shapes of Wan2.2 A14B at 720p x 81 frames: x (1, 75600, 5120) bf16, per-sample shift/scale
(1, 1, 5120) float32, result in bf16. Prints time, GB/s and % of nominal bandwidth per provider.

    python bench/bench_norm_modulate.py [--device cuda] [--tokens 75600] [--dtype bf16] [--csv out.csv]
"""

from __future__ import annotations

import torch

from vidcore.kernels import benchmark as bm
from vidcore.kernels import reference as ref


def main() -> None:
    p = bm.common_args(__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=5120)
    p.add_argument("--kind", default="layer", choices=["layer", "rms"])
    args = p.parse_args()
    device, dtype, tokens = bm.resolve_common(args)
    C = args.dim
    x = torch.randn(1, tokens, C, device=device, dtype=dtype)
    shift = torch.randn(1, 1, C, device=device)
    scale = torch.randn(1, 1, C, device=device)

    def reference():
        return ref.norm_modulate(x, shift, scale, kind=args.kind, out_dtype=dtype)

    compiled_ref = bm.maybe_compile(ref.norm_modulate, not args.no_compile)
    triton_fn = "needs CUDA (the CPU interpreter is for correctness, not speed)"
    if device.type == "cuda":
        from vidcore.kernels import triton_norm_modulate as tk

        def triton_fn():
            return tk.norm_modulate(x, shift, scale, kind=args.kind, out_dtype=dtype)

        torch.testing.assert_close(triton_fn(), reference(), rtol=1e-2, atol=1e-2)
    nbytes = 2 * x.numel() * x.element_size() + 2 * C * 4
    print(f"device: {bm.device_name(device)}; copy bandwidth measured now: {bm.copy_bandwidth(device) / 1e9:.1f} GB/s")
    with torch.no_grad():
        bm.run_providers(
            f"norm_modulate[{args.kind}]", f"(1,{tokens},{C})", dtype, device,
            {"reference": reference,
             "torch.compile(ref)": (lambda: compiled_ref(x, shift, scale, kind=args.kind, out_dtype=dtype))
             if compiled_ref else bm.NO_COMPILE,
             "triton": triton_fn},
            nbytes, args.csv,
        )


if __name__ == "__main__":
    main()
