"""`vidcore bench BACKEND`: how fast and how big is this model on this accelerator, under each preset?

Operators ask it before they pay for an instance. The full-size denoiser is
built with random weights straight on the device (nothing is downloaded), and
each ``--memory`` preset times a forward and a whole guided step, with MFU
against a matmul measured in the same run and the peak accelerator memory;
``--vs diffusers`` times the reference implementation on the same weights.
Every check that can fail (device, backend, size, presets, the JSON path,
whether the weights fit) runs before any weight is made.
"""

from __future__ import annotations

import argparse
import datetime
import logging
from typing import Any

from ..errors import InvalidRequestError
from .denoiser import BenchError

log = logging.getLogger(__name__)
DTYPES = ("bf16", "fp16", "fp32")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("backend", metavar="BACKEND")
    p.add_argument("--size", default=None, help="WIDTHxHEIGHT (default: the backend's official size)")
    p.add_argument("--frames", type=int, default=None, help="frames (default: the backend's)")
    p.add_argument("--memory", nargs="+", default=["resident"], metavar="PRESET",
                   help="memory presets to measure, e.g. --memory resident stream low-vram (default: resident)")
    p.add_argument("--vs", choices=["diffusers"], default=None, help="also time this implementation, same weights")
    p.add_argument("--expert", default=None, help="which expert of a multi-expert model (default: the first)")
    p.add_argument("--device", default=None, help="cuda, cuda:N, or cpu (slow: full-size models take hours)")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="default: bf16 on a GPU, fp32 on the CPU")
    p.add_argument("--repeat", type=int, default=1, help="timed calls per measurement (median; default 1)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the results as JSON to FILE")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json FILE")


def _out(text: str) -> None:
    print(text, flush=True)


def _gib(n: float | None) -> str:
    return "-" if n is None else f"{n:.1f} GiB"


def run(args: argparse.Namespace) -> int:
    import torch

    from ..fileio import check_output_path, write_json_atomic
    from ..memory import get_policy
    from ..request import parse_device
    from ..validate import integer
    from . import denoiser as bd
    from .timing import matmul_flops

    # -- every check first ------------------------------------------------------------------------
    if args.device is None and not torch.cuda.is_available():
        raise InvalidRequestError("no GPU is visible: vidcore bench measures an accelerator; pass --device cpu to "
                                  "run it on the CPU anyway (hours at full size)")
    device = parse_device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
        args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    integer("--repeat", args.repeat, lo=1, hi=100)
    if args.frames is not None:
        integer("--frames", args.frames, lo=1)
    for preset in args.memory:
        get_policy(preset, dtype)  # an unknown preset is one line naming the known ones
    json_path = check_output_path(args.json, suffix=".json", overwrite=args.overwrite) if args.json else None
    case = bd.prepare(args.backend, device=device, dtype=dtype, size=args.size, frames=args.frames)
    sizes = bd.expert_params(case)
    if args.expert is not None and args.expert not in sizes:
        raise InvalidRequestError(f"no expert {args.expert!r} in {args.backend}; experts: {', '.join(sizes)}")
    expert = args.expert or next(iter(sizes))
    params = sizes[expert]
    need = params * torch.empty((), dtype=dtype).element_size()
    _check_fits(args.memory, need, device)
    req = case.request

    # -- measurements -----------------------------------------------------------------------------
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    _out(f"vidcore bench {args.backend}: {req.width}x{req.height}x{req.frames}, expert {expert} "
         f"({params / 1e9:.2f}B parameters, {need / 2**30:.1f} GiB in {str(dtype)[6:]}), on {where}")
    peak = matmul_flops(device, dtype)
    _out(f"  matmul measured now: {peak / 1e12:.1f} TFLOP/s (the MFU denominator)")
    result: dict[str, Any] = {"backend": args.backend, "size": f"{req.width}x{req.height}", "frames": req.frames,
                              "expert": expert, "params": params, "dtype": str(dtype)[6:], "device": where,
                              "torch": torch.__version__, "date": datetime.date.today().isoformat(),
                              "matmul_tflops": peak / 1e12, "presets": []}
    failed = 0
    base = None
    tflop = None
    for i, preset in enumerate(args.memory, 1):
        _out(f"[{i}/{len(args.memory)}] {preset}: random weights on {device}, a forward, a guided step ...")
        try:
            m = bd.measure_preset(case, preset, expert=expert, repeat=args.repeat, flops=tflop is None)
        except torch.OutOfMemoryError as exc:
            failed += 1
            _out(f"  {preset}: out of memory: {_oom_line(exc, device)}")
            result["presets"].append({"preset": preset, "error": "out of memory"})
            bd.free()
            continue
        tflop = m.tflop if m.tflop is not None else tflop
        row = m.report()
        row["preset"] = preset
        row["mfu_pct"] = 100 * tflop * 1e12 / m.forward_s / peak if tflop else None
        if base is None:
            base = m
        row["step_vs_first"] = m.step_s / base.step_s if base.step_s else None
        row["rel_diff_vs_first"] = bd.rel_diff(m.output, base.output)
        result["presets"].append(row)
        _out(f"  {preset}: {m.forward_s:.3f} s/forward, {m.step_s:.3f} s/step"
             + (f", MFU {row['mfu_pct']:.1f}%" if row["mfu_pct"] is not None else "")
             + f", peak {_gib(m.peak_gib)}"
             + (f", {row['step_vs_first']:.3f}x {args.memory[0]}'s step, output rel diff "
                f"{row['rel_diff_vs_first']:.1e}" if m is not base else ""))
    if args.vs:
        _out(f"[vs] {args.vs}: the same weights, resident ...")
        try:
            ref = bd.measure_reference(case, expert=expert, repeat=args.repeat)
        except torch.OutOfMemoryError as exc:
            failed += 1
            _out(f"  {args.vs}: out of memory: {_oom_line(exc, device)}")
        else:
            row = {"forward_s": ref.forward_s, "peak_gib": ref.peak_gib}
            if base is not None:
                row["ours_speedup"] = ref.forward_s / base.forward_s
                row["rel_diff"] = bd.rel_diff(base.output, ref.output)
                row["max_abs_diff_over_max"] = float((base.output.float() - ref.output.float()).abs().max()
                                                     / ref.output.float().abs().max().clamp_min(1e-30))
            result[args.vs] = row
            _out(f"  {args.vs}: {ref.forward_s:.3f} s/forward, peak {_gib(ref.peak_gib)}"
                 + (f"; vidcore ({args.memory[0]}) is {row['ours_speedup']:.3f}x as fast; outputs differ by "
                    f"{row['rel_diff']:.1e} (norm), {row['max_abs_diff_over_max']:.1e} (max)" if base else ""))
    if json_path is not None:
        write_json_atomic(json_path, result, overwrite=args.overwrite)
        _out(f"wrote {json_path}")
    return 2 if failed else 0


def _check_fits(presets: list[str], need: int, device: Any) -> None:
    """Refuse, before any weight is made, a resident preset whose weights alone exceed the free memory."""
    import torch

    from ..memory import get_policy
    from ..request import _available_bytes

    ram = _available_bytes(torch.device("cpu"))
    if device.type == "cpu":
        if ram is not None and need > ram:
            raise BenchError(f"the weights need {need / 2**30:.1f} GiB and this machine has {ram / 2**30:.1f} GiB of "
                             "RAM available; run it on a GPU host, or choose a smaller model")
        return
    free, total = torch.cuda.mem_get_info(device)
    for preset in presets:
        on_host = get_policy(preset).load_device("denoiser", device).type == "cpu"
        if not on_host and need > free:
            raise BenchError(f"preset {preset!r} keeps the weights on the GPU: they need {need / 2**30:.1f} GiB and "
                             f"{free / 2**30:.1f} GiB of {total / 2**30:.1f} GiB is free; try --memory stream "
                             "(or low-vram)")
        if on_host and ram is not None and need > ram:
            raise BenchError(f"preset {preset!r} keeps the weights in host memory: they need {need / 2**30:.1f} GiB "
                             f"and {ram / 2**30:.1f} GiB of RAM is available")


def _oom_line(exc: BaseException, device: Any) -> str:
    import re

    import torch

    m = re.search(r"Tried to allocate ([\d.]+ [KMGT]iB)", str(exc))
    asked = f"it asked for {m.group(1)} more" if m else "an allocation failed"
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return (f"{asked} with {free / 2**30:.1f} GiB of {total / 2**30:.1f} GiB free; try a leaner preset "
                "(stream, low-vram), a smaller --size or fewer --frames")
    return f"{asked}; try a smaller --size or fewer --frames"

