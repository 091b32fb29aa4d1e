"""Benchmark: QK RMSNorm of q and k in one launch (Triton) vs its torch reference vs torch.compile(reference).

Wan2.2 A14B 720p normalises q and k over the full dim: rows (1, 75600, 5120) bf16 with bf16 weights.
``--per-head`` times HunyuanVideo's layout instead: rows (1, L, 24, 128).

    python bench/bench_qk_rms_norm.py [--device cuda] [--tokens 75600] [--per-head] [--csv out.csv]
"""

from __future__ import annotations

import torch

from vidcore.kernels import benchmark as bm
from vidcore.kernels import reference as ref


def main() -> None:
    p = bm.common_args(__doc__.splitlines()[0])
    p.add_argument("--per-head", action="store_true")
    p.add_argument("--dim", type=int, default=5120, help="row length for the full-dim layout")
    args = p.parse_args()
    device, dtype, tokens = bm.resolve_common(args)
    shape = (1, tokens, 24, 128) if args.per_head else (1, tokens, args.dim)
    q, k = torch.randn(shape, device=device, dtype=dtype), torch.randn(shape, device=device, dtype=dtype)
    wq = torch.randn(shape[-1], device=device, dtype=dtype)
    wk = torch.randn(shape[-1], device=device, dtype=dtype)
    compiled_ref = bm.maybe_compile(ref.qk_rms_norm, not args.no_compile)
    triton_fn = "needs CUDA (the CPU interpreter is for correctness, not speed)"
    if device.type == "cuda":
        from vidcore.kernels import triton_qk_rms_norm as tk

        got, want = tk.qk_rms_norm(q, k, wq, wk), ref.qk_rms_norm(q, k, wq, wk)
        torch.testing.assert_close(got, want, rtol=1e-2, atol=1e-2)

        def triton_fn():
            return tk.qk_rms_norm(q, k, wq, wk)

    nbytes = 4 * q.numel() * q.element_size()
    print(f"device: {bm.device_name(device)}; copy bandwidth measured now: {bm.copy_bandwidth(device) / 1e9:.1f} GB/s")
    with torch.no_grad():
        bm.run_providers("qk_rms_norm" + ("[head]" if args.per_head else "[full]"), str(shape), dtype, device,
                         {"reference": lambda: ref.qk_rms_norm(q, k, wq, wk),
                          "torch.compile(ref)": (lambda: compiled_ref(q, k, wq, wk)) if compiled_ref else bm.NO_COMPILE,
                          "triton": triton_fn},
                         nbytes, args.csv)


if __name__ == "__main__":
    main()
