"""Timing helpers shared by ``bench/bench_<op>.py`` and ``bench/bench_attention.py`` (never used by tests).

On CUDA, times come from `triton.testing.do_bench` (median, 20th and 80th
percentile of many runs, caches flushed between runs); on CPU from a plain
timer (median of repeats after a warm-up). Memory-bound kernels are judged by
achieved bandwidth against the device's nominal figure and against a copy
measured in the same run; each result can be appended to a CSV with the
device name and library versions, as Liger-Kernel's benchmarks do.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

# Nominal HBM/GDDR bandwidth in bytes/s, by a substring of torch.cuda.get_device_name (first match wins).
NOMINAL_BANDWIDTH = [
    ("H200", 4.8e12), ("H100 NVL", 3.9e12), ("H100 PCIe", 2.0e12), ("H100", 3.35e12),
    ("A100-SXM4-80GB", 2.039e12), ("A100 80GB PCIe", 1.935e12), ("A100", 1.555e12),
    ("L40S", 0.864e12), ("L4", 0.3e12), ("RTX 4090", 1.008e12), ("A10G", 0.6e12),
]


@dataclass
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float


@dataclass
class Result:
    bench: str
    provider: str
    shape: str
    dtype: str
    median_ms: float
    p20_ms: float
    p80_ms: float
    gbps: float | None
    pct_nominal: float | None
    device: str
    torch: str
    triton: str | None
    date: str


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} logical cores)"


def nominal_bandwidth(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((bw for key, bw in NOMINAL_BANDWIDTH if key in name), None)


def triton_version() -> str | None:
    try:
        import triton

        return triton.__version__
    except Exception:
        return None


def time_fn(fn: Callable[[], Any], device: torch.device, *, cpu_repeats: int = 7) -> Timing:
    """Median/p20/p80 milliseconds of ``fn()``."""
    if device.type == "cuda":
        import triton.testing

        med, p20, p80 = triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8])
        return Timing(med, p20, p80)
    fn()  # warm-up (allocations, lazy imports, compilation)
    times = []
    for _ in range(cpu_repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=5) if len(times) >= 2 else [times[0]] * 4
    return Timing(statistics.median(times), q[0], q[3])


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 30) -> float:
    """bytes/s of a device-to-device copy of ``nbytes`` (read + write counted), measured now."""
    n = nbytes // 2 if device.type == "cuda" else nbytes // 32
    src = torch.empty(n // 2, dtype=torch.float16, device=device)
    dst = torch.empty_like(src)
    t = time_fn(lambda: dst.copy_(src), device)
    return 2 * src.numel() * src.element_size() / (t.median_ms * 1e-3)


def maybe_compile(fn: Callable[..., Any], enabled: bool) -> Callable[..., Any] | None:
    """torch.compile(fn), or None when disabled or the compiler is unusable here."""
    if not enabled:
        return None
    try:
        return torch.compile(fn, dynamic=False)
    except Exception as exc:  # e.g. no C++ toolchain
        log.warning("torch.compile unavailable: %s", exc)
        return None


def common_args(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="bf16, fp16 or fp32 (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--tokens", type=int, default=None,
                   help="sequence length (default: Wan A14B 720p's 75600 on CUDA, 4096 on CPU)")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile(reference)")
    p.add_argument("--csv", type=Path, default=None, help="append the results to this CSV")
    return p


NO_COMPILE = "torch.compile disabled (--no-compile) or unavailable"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_common(args: argparse.Namespace) -> tuple[torch.device, torch.dtype, int]:
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype] if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    tokens = args.tokens or (75600 if device.type == "cuda" else 4096)
    return device, dtype, tokens


def run_providers(bench: str, shape: str, dtype: torch.dtype, device: torch.device,
                  providers: dict[str, Callable[[], Any] | str | None], nbytes: int,
                  csv_path: Path | None = None) -> list[Result]:
    """Time each provider (a str or None instead of a function: skipped, with that reason) and print one
    line each with bandwidth, % of the nominal bandwidth, and the speed ratio to ``reference``."""
    nominal = nominal_bandwidth(device)
    today = datetime.date.today().isoformat()
    results: list[Result] = []
    lines: list[tuple[str, Result | str]] = []
    for name, fn in providers.items():
        if not callable(fn):
            lines.append((name, fn or "unavailable"))
            continue
        t = time_fn(fn, device)
        gbps = nbytes / (t.median_ms * 1e-3) / 1e9
        pct = 100 * gbps * 1e9 / nominal if nominal else None
        r = Result(bench, name, shape, str(dtype).replace("torch.", ""), t.median_ms, t.p20_ms, t.p80_ms, gbps,
                   pct, device_name(device), torch.__version__, triton_version(), today)
        results.append(r)
        lines.append((name, r))
    base = next((r.median_ms for r in results if r.provider == "reference"), None)
    for name, r in lines:
        if isinstance(r, str):
            print(f"{bench:22s} {name:20s} skipped: {r}")
            continue
        ratio = f"{base / r.median_ms:5.2f}x ref" if base else ""
        pct = f"{r.pct_nominal:5.1f}% of nominal" if r.pct_nominal is not None else ""
        print(f"{bench:22s} {name:20s} {r.median_ms:9.3f} ms  [{r.p20_ms:.3f}, {r.p80_ms:.3f}]  "
              f"{r.gbps:8.2f} GB/s  {pct}  {ratio}")
    if csv_path is not None and results:
        new = not csv_path.exists()
        with csv_path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(asdict(results[0])))
            if new:
                w.writeheader()
            for r in results:
                w.writerow(asdict(r))
    return results


def peak_memory_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20
