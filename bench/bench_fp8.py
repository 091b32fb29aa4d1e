"""fp8 weight storage (e4m3, per-output-channel scales, computed in bf16) vs bf16 weights: time and error.

For each layer shape (default: the linear layers of a Wan A14B block), times
``FP8Linear`` (cast the e4m3 weight to bf16, matmul, scale the output)
against a bf16 ``nn.Linear`` with the same weights, and reports the weight
bytes of each and the per-layer error table of `vidcore.memory.fp8_error_table`.
fp8 storage trades a cast per layer for half the weight memory (and half the
bytes to stream); it is not meant to be faster than bf16 on its own.

    python bench/bench_fp8.py                 # CUDA if present, small CPU shapes otherwise
    python bench/bench_fp8.py --tokens 75600  # Wan A14B 720p x 81 frames
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from vidcore.memory import format_table, fp8_error_table, quantize_fp8_

WAN_A14B = [(5120, 5120), (13824, 5120), (5120, 13824)]  # attention projections, FFN in, FFN out
CPU_SHAPES = [(512, 512), (1536, 512), (512, 1536)]


def _time(fn, x, device, repeats, warmup) -> float:
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            fn(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--tokens", type=int, default=32760 if cuda else 256)
    ap.add_argument("--repeats", type=int, default=20 if cuda else 5)
    ap.add_argument("--warmup", type=int, default=3 if cuda else 1)
    args = ap.parse_args()
    device = torch.device(args.device)
    shapes = WAN_A14B if device.type == "cuda" else CPU_SHAPES
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; {args.tokens} tokens, bf16 compute")

    torch.manual_seed(0)
    layers = nn.ModuleDict({f"{o}x{i}": nn.Linear(i, o) for o, i in shapes}).to(device, torch.bfloat16)
    layers.requires_grad_(False)
    fp8 = copy.deepcopy(layers)
    quantize_fp8_(fp8)
    print(f"{'layer':<14} {'bf16 ms':>9} {'fp8 ms':>9} {'ratio':>7} {'bf16 MiB':>9} {'fp8 MiB':>8}")
    for key in layers:
        ref, q = layers[key], fp8[key]
        x = torch.randn(args.tokens, ref.in_features, device=device, dtype=torch.bfloat16)
        t_ref = _time(ref, x, device, args.repeats, args.warmup)
        t_q = _time(q, x, device, args.repeats, args.warmup)
        b_ref = sum(t.numel() * t.element_size() for t in ref.state_dict().values()) / 2**20
        b_q = sum(t.numel() * t.element_size() for t in q.state_dict().values()) / 2**20
        print(f"{key:<14} {t_ref * 1e3:>9.3f} {t_q * 1e3:>9.3f} {t_q / t_ref:>7.3f} {b_ref:>9.2f} {b_q:>8.2f}")
    print()
    print(format_table(fp8_error_table(layers.cpu())))


if __name__ == "__main__":
    main()
