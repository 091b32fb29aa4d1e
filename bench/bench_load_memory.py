"""Peak RSS of loading a ~1 GB bf16 safetensors checkpoint through `vidcore.checkpoints.load_component`.

The issue's target: loading a 1 GB bf16 checkpoint into a meta-built module
stays under 1.5 GB peak RSS (no full-precision copy, no second copy). Each
measurement runs in a fresh subprocess so ``ru_maxrss`` belongs to that load
alone; the post-import baseline is printed too.

    python bench/bench_load_memory.py              # vidcore's loader, into bf16 and (converting) fp16
    python bench/bench_load_memory.py --compare    # also safetensors' load_file + load_state_dict(assign=True)

After loading, every weight is read once (as a forward pass would), so
memory-mapped loaders are charged for the pages they fault in.

Not a test: it writes ~1 GB to a temp dir and takes tens of seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WIDTH = 4096  # one tensor = WIDTH x WIDTH bf16 = 32 MiB


def _module(n_layers: int, device: str):
    from torch import nn

    from vidcore.nn.blocks import BlockStack

    class Big(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = BlockStack([nn.Linear(WIDTH, WIDTH, bias=False, device=device) for _ in range(n_layers)])

    return Big()


def _layout():
    from vidcore.checkpoints import CheckpointLayout

    return CheckpointLayout(repo_id=None, files={"denoiser": ("model.safetensors",)})


def write_checkpoint(path: Path, n_layers: int) -> int:
    """Stream a bf16 safetensors file tensor by tensor (the writer never holds the whole model)."""
    import torch

    nbytes = WIDTH * WIDTH * 2
    header = {f"blocks.{i}.weight": {"dtype": "BF16", "shape": [WIDTH, WIDTH],
                                     "data_offsets": [i * nbytes, (i + 1) * nbytes]} for i in range(n_layers)}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    gen = torch.Generator().manual_seed(0)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for _ in range(n_layers):
            t = torch.randn(WIDTH, WIDTH, generator=gen, dtype=torch.float32).to(torch.bfloat16)
            f.write(t.view(torch.uint8).numpy().tobytes())
    return path.stat().st_size


def _rss_now() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def child(folder: Path, n_layers: int, mode: str) -> None:
    import torch  # noqa: F401 - imported before the baseline is taken

    from vidcore.checkpoints import load_component

    baseline = _rss_now()
    t0 = time.perf_counter()
    module = _module(n_layers, "meta")
    if mode.startswith("vidcore"):
        dtype = torch.float16 if mode.endswith("fp16") else torch.bfloat16
        load_component(_layout(), "denoiser", module, folder, device="cpu", dtype=dtype, name="bench-load")
    else:
        from safetensors.torch import load_file

        module.load_state_dict(load_file(str(folder / "model.safetensors")), assign=True, strict=True)
    seconds = time.perf_counter() - t0
    peak_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # touch every weight, as a forward pass would: memory-mapped weights only become resident now
    # (a max-reduction allocates no temporary of the tensor's size)
    top = max(float(p.max()) for p in module.parameters())
    assert math.isfinite(top)
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"mode": mode, "baseline_rss": baseline, "peak_rss": peak, "peak_load": peak_load,
                      "param_bytes": params,
                      "seconds": seconds}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=1.0, help="checkpoint size in GiB (default 1)")
    ap.add_argument("--compare", action="store_true", help="also measure load_file + load_state_dict")
    ap.add_argument("--child", nargs=3, metavar=("DIR", "LAYERS", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(Path(args.child[0]), int(args.child[1]), args.child[2])

    n_layers = max(1, math.ceil(args.gib * 2**30 / (WIDTH * WIDTH * 2)))
    with tempfile.TemporaryDirectory(prefix="vidcore-bench-") as tmp:
        size = write_checkpoint(Path(tmp) / "model.safetensors", n_layers)
        gb = 1e9
        print(f"checkpoint: {size / gb:.3f} GB ({size / 2**30:.3f} GiB) bf16, {n_layers} tensors of "
              f"{WIDTH}x{WIDTH}")
        for mode in ["vidcore-bf16", "vidcore-fp16"] + (["load_file"] if args.compare else []):
            out = subprocess.run([sys.executable, __file__, "--child", tmp, str(n_layers), mode],
                                 check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"{mode:>12}: peak RSS {r['peak_rss'] / gb:.3f} GB (baseline after imports "
                  f"{r['baseline_rss'] / gb:.3f} GB, increase {(r['peak_rss'] - r['baseline_rss']) / gb:.3f} GB, "
                  f"before touching the weights {r['peak_load'] / gb:.3f} GB) "
                  f"= {r['peak_rss'] / size:.2f}x the file; weights {r['param_bytes'] / gb:.3f} GB; "
                  f"{r['seconds']:.1f} s")


if __name__ == "__main__":
    main()
