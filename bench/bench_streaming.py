"""Block streaming vs resident: step-time ratio and peak memory on a stack of large Linear blocks.

Each block is a DiT-sized feed-forward (``x + W2 gelu(W1 x)``); the model is
the stack between an input and an output projection, as the non-block parts
of a DiT are. The same weights run resident and streamed (``ahead`` blocks
in flight) and the script prints the streamed/resident step-time ratio and
the peak memory of each.

On CUDA: peak is ``torch.cuda.max_memory_allocated``; host copies are
pinned and copies run on a side stream. Without CUDA the CPU stands in for
the device: the script runs and prints, but the "copies" are memcpy on the
same memory and the peak is the policy's count of bytes on the stand-in
device, so the ratio says nothing about a GPU.

    python bench/bench_streaming.py                       # CUDA if present, small CPU sizes otherwise
    python bench/bench_streaming.py --dim 5120 --hidden 13824 --blocks 40 --tokens 75600   # ~Wan A14B
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from vidcore.memory import ComposedPolicy, MemoryPolicy, PolicySpec
from vidcore.nn import BlockStack

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class FFBlock(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Stack(nn.Module):
    def __init__(self, dim: int, hidden: int, blocks: int):
        super().__init__()
        self.inp = nn.Linear(dim, dim)
        self.blocks = BlockStack(FFBlock(dim, hidden) for _ in range(blocks))
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(self.inp(x)))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(policy: MemoryPolicy, x: torch.Tensor, steps: int, warmup: int) -> tuple[list[float], torch.Tensor]:
    times = []
    with torch.no_grad(), policy.use("denoiser") as model:
        for i in range(warmup + steps):
            _sync(x.device)
            t0 = time.perf_counter()
            y = model(x)
            _sync(x.device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return times, y


def measure(policy: MemoryPolicy, args, device: torch.device, dtype: torch.dtype) -> dict:
    torch.manual_seed(0)
    place = policy.placement(device, dtype)
    with torch.device("meta"):
        model = Stack(args.dim, args.hidden, args.blocks)
    load_dev, wdtype = place("denoiser")
    model = model.to_empty(device=load_dev).to(wdtype)
    gen = torch.Generator(load_dev).manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, p.shape[-1] ** -0.5 if p.dim() > 1 else 0.02, generator=gen)
    model.requires_grad_(False)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    policy.setup({"denoiser": model}, device)
    x = torch.randn(args.tokens, args.dim, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    times, y = _time_steps(policy, x, args.steps, args.warmup)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = policy.stats()["peak_device_bytes"] if hasattr(policy, "stats") else _weight_bytes(model)
    stats = policy.stats() if hasattr(policy, "stats") else {}
    out = {"step_s": statistics.median(times), "peak_bytes": peak, "checksum": y.float().sum().item(),
           "sync_loads": stats.get("sync_loads", 0), "weight_bytes": _weight_bytes(model)}
    policy.teardown()
    return out


def _weight_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def main() -> None:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--dtype", default="bf16" if cuda else "fp32", choices=sorted(DTYPES))
    ap.add_argument("--dim", type=int, default=5120 if cuda else 512)
    ap.add_argument("--hidden", type=int, default=13824 if cuda else 2048)
    ap.add_argument("--blocks", type=int, default=40 if cuda else 8)
    ap.add_argument("--tokens", type=int, default=32760 if cuda else 64)
    ap.add_argument("--ahead", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2 if cuda else 1)
    args = ap.parse_args()
    device, dtype = torch.device(args.device), DTYPES[args.dtype]

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (stand-in device)"
    print(f"device: {name}; torch {torch.__version__}; {args.blocks} blocks of {args.dim}->{args.hidden}->"
          f"{args.dim}, {args.tokens} tokens, {args.dtype}")
    base = measure(ComposedPolicy(PolicySpec("resident"), dtype), args, device, dtype)
    gib = 2**30
    print(f"{'policy':<16} {'step ms':>9} {'ratio':>7} {'peak GiB':>9} {'misses':>7}")
    print(f"{'resident':<16} {base['step_s'] * 1e3:>9.2f} {1.0:>7.3f} {base['peak_bytes'] / gib:>9.3f} {0:>7}")
    for ahead in args.ahead:
        spec = PolicySpec(f"stream ahead={ahead}", rules={"denoiser": "stream"}, ahead=ahead)
        res = measure(ComposedPolicy(spec, dtype), args, device, dtype)
        same = "" if res["checksum"] == base["checksum"] else "  (OUTPUT DIFFERS)"
        print(f"{spec.name:<16} {res['step_s'] * 1e3:>9.2f} {res['step_s'] / base['step_s']:>7.3f} "
              f"{res['peak_bytes'] / gib:>9.3f} {res['sync_loads']:>7}{same}")
    print(f"weights: {base['weight_bytes'] / gib:.3f} GiB; block: "
          f"{base['weight_bytes'] / args.blocks / gib:.3f} GiB")


if __name__ == "__main__":
    main()
