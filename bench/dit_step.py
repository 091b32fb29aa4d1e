"""Benchmark: one denoiser forward per backend at its official resolution, with MFU.

For each backend name given: build its components on ``meta``, materialise the
denoiser (the first expert; ``--all-experts`` for each) straight on the device
with random weights (no download), make its conditions, and time one forward
at the official size and frame count (override with ``--size``/``--frames``).
FLOPs are counted with `torch.utils.flop_counter` on one extra forward; MFU is
achieved FLOP/s over a dense matmul in the same dtype measured in the same run
(8192^3 bf16 on CUDA). ``--cache KIND:THRESHOLD`` also runs ``--steps`` steps of
a flow-Euler loop with and without that step cache and reports the speed-up and
the output's deviation.

Conditions come from the backend's optional ``bench_conditions(request,
device, dtype) -> Conditions`` (denoiser keyword arguments); without it, the
encoders are materialised with random weights and ``backend.encode`` is run.

    python bench/dit_step.py wan2.2-t2v-a14b hunyuan-t2v [--device cuda] [--dtype bf16] [--repeat 5]
    python bench/dit_step.py toy --plugin tests/toy_backend.py --device cpu --dtype fp32
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from vidcore import plugins
from vidcore.backend import Inputs
from vidcore.bench.random_weights import materialise
from vidcore.bench.timing import matmul_flops
from vidcore.errors import UnknownNameError
from vidcore.kernels import benchmark as bm
from vidcore.request import resolve
from vidcore.seeds import initial_noise


def conditions(backend, comps: dict, req, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    made = backend.bench_conditions(req, device, dtype)
    if made is not None:
        return made.cond
    for name in backend.encode_components(req):
        materialise(comps[name], device, dtype)
    with torch.no_grad():
        cond = backend.encode(comps, req, Inputs(), device).cond
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in cond.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(fn, device: torch.device, repeat: int) -> list[float]:
    fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def cache_run(network, x0: torch.Tensor, schedule, cond: dict, module, kind: str, threshold: float,
              device: torch.device) -> None:
    """Flow-Euler over the schedule with and without the step cache: speed-up and deviation."""
    from vidcore.cache import disable_step_cache, enable_step_cache, reset_step_caches

    def loop() -> torch.Tensor:
        x = x0.clone()
        sig = schedule.sigmas
        for i in range(len(sig) - 1):
            t = schedule.timesteps[i].reshape(1).to(device)
            x = x + (float(sig[i + 1]) - float(sig[i])) * network(x, t, **cond).to(x.dtype)
        return x

    with torch.no_grad():
        t0 = time.perf_counter(); plain = loop(); _sync(device); t_plain = time.perf_counter() - t0  # noqa: E702
        enable_step_cache(module, kind, threshold)
        reset_step_caches(module)
        t0 = time.perf_counter(); cached = loop(); _sync(device); t_cached = time.perf_counter() - t0  # noqa: E702
        (stats, *_) = reset_step_caches(module)
        disable_step_cache(module)
    dev = ((cached.float() - plain.float()).abs().mean() / plain.float().abs().mean()).item()
    print(f"  step cache {kind}:{threshold}: {stats['skipped']}/{stats['calls']} stack calls skipped, "
          f"{t_plain:.2f} s -> {t_cached:.2f} s ({t_plain / t_cached:.2f}x), "
          f"mean relative deviation of the output {dev:.3g} (random weights: mechanics, not quality)")


def bench_backend(name: str, args: argparse.Namespace, device: torch.device, dtype: torch.dtype,
                  peak: float) -> None:
    from vidcore.sampling import Scheduler

    try:
        backend = plugins.get_backend(name)
    except (UnknownNameError, Exception) as exc:
        print(f"{name}: skipped: not registered ({str(exc).splitlines()[0]})")
        return
    req = resolve(backend, "a benchmark prompt", size=args.size, frames=args.frames)
    comps = backend.build("meta")
    try:
        cond = conditions(backend, comps, req, device, dtype)
    except Exception as exc:
        print(f"{name}: skipped: no conditions ({type(exc).__name__}: {exc}); "
              f"give the backend a bench_conditions(request, device, dtype) method")
        return
    schedule = Scheduler(req.schedule, **req.schedule_options)(req.steps)
    experts = backend.experts(comps, req)
    for expert in experts if args.all_experts else experts[:1]:
        module = materialise(comps[expert.component], device, dtype)
        x = initial_noise(backend, req, device).to(dtype)
        t = schedule.timesteps[0].reshape(1).to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        def fwd(module=module, expert=expert, x=x, t=t):
            with torch.no_grad():
                return expert.network(x, t, **cond)

        times = time_forward(fwd, device, args.repeat)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            expert.network(x, t, **cond)
        flops = counter.get_total_flops()
        med = sorted(times)[len(times) // 2]
        params = sum(p.numel() for p in module.parameters())
        mem = bm.peak_memory_mb(device)
        print(f"{name} [{expert.name}] {req.width}x{req.height}x{req.frames}f latent {tuple(x.shape)} "
              f"{params / 1e9:.2f}B params: {med * 1e3:.1f} ms/forward (min {min(times) * 1e3:.1f}), "
              f"{flops / 1e12:.1f} TFLOP, {flops / med / 1e12:.1f} TFLOP/s, MFU {100 * flops / med / peak:.1f}%"
              + (f", peak {mem:.0f} MiB" if mem is not None else ""))
        if args.cache:
            kind, _, thr = args.cache.partition(":")
            cache_run(expert.network, x, schedule, cond, module, kind, float(thr or 0.1), device)
        comps[expert.component] = None
        del module
        if device.type == "cuda":
            torch.cuda.empty_cache()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("backends", nargs="+")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, choices=list(bm.DTYPES))
    p.add_argument("--size", default=None, help="WIDTHxHEIGHT (default: the backend's official size)")
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--all-experts", action="store_true")
    p.add_argument("--cache", default=None, help="KIND:THRESHOLD, e.g. teacache:0.1 (runs a full step loop)")
    p.add_argument("--plugin", action="append", default=[], type=Path,
                   help="a plugin module file to register (e.g. tests/toy_backend.py)")
    args = p.parse_args()
    device = torch.device(args.device)
    dtype = bm.DTYPES[args.dtype] if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    extra = []
    for path in args.plugin:
        sys.path.insert(0, str(path.parent.resolve()))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        extra.append((path.stem, mod))
    if extra:
        plugins.reset(extra_plugins=extra)
    peak = matmul_flops(device, dtype)
    print(f"device: {bm.device_name(device)}; torch {torch.__version__}; dtype {dtype}; "
          f"matmul peak measured now: {peak / 1e12:.2f} TFLOP/s")
    for name in args.backends:
        bench_backend(name, args, device, dtype, peak)


if __name__ == "__main__":
    main()
