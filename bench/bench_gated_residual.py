"""Benchmark: gated residual ``x + gate * y`` (Triton) vs its torch reference vs torch.compile(reference).

Wan2.2 A14B 720p shapes: x, y (1, 75600, 5120) bf16, per-sample gate (1, 1, 5120) float32, result in
x's dtype; also the in-place form (out=x) that saves allocating the residual stream.

    python bench/bench_gated_residual.py [--device cuda] [--tokens 75600] [--dtype bf16] [--csv out.csv]
"""

from __future__ import annotations

import torch

from vidcore.kernels import benchmark as bm
from vidcore.kernels import reference as ref


def main() -> None:
    p = bm.common_args(__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=5120)
    args = p.parse_args()
    device, dtype, tokens = bm.resolve_common(args)
    C = args.dim
    x = torch.randn(1, tokens, C, device=device, dtype=dtype)
    y = torch.randn_like(x)
    gate = torch.randn(1, 1, C, device=device)
    compiled_ref = bm.maybe_compile(ref.gated_residual, not args.no_compile)
    providers = {
        "reference": lambda: ref.gated_residual(x, y, gate),
        "torch.compile(ref)": (lambda: compiled_ref(x, y, gate)) if compiled_ref else bm.NO_COMPILE,
        "triton": "needs CUDA (the CPU interpreter is for correctness, not speed)",
        "triton out=x": "needs CUDA",
    }
    if device.type == "cuda":
        from vidcore.kernels import triton_gated_residual as tk

        torch.testing.assert_close(tk.gated_residual(x, y, gate), ref.gated_residual(x, y, gate),
                                   rtol=1e-2, atol=1e-2)
        stream = x.clone()
        providers["triton"] = lambda: tk.gated_residual(x, y, gate)
        providers["triton out=x"] = lambda: tk.gated_residual(stream, y, gate, out=stream)
    nbytes = 3 * x.numel() * x.element_size() + C * 4
    print(f"device: {bm.device_name(device)}; copy bandwidth measured now: {bm.copy_bandwidth(device) / 1e9:.1f} GB/s")
    with torch.no_grad():
        bm.run_providers("gated_residual", f"(1,{tokens},{C})", dtype, device, providers, nbytes, args.csv)


if __name__ == "__main__":
    main()
