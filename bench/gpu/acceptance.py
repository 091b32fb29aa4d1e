"""The GPU acceptance run (issue 17): kernels, attention, full-size forwards vs diffusers, memory presets,
end to end, and the CUDA noise, each stage in its own process, each result flushed as it finishes.

    python bench/gpu/acceptance.py --out DIR [--stages kernels,attention,...] [--deadline SECONDS]
    python bench/gpu/acceptance.py --tiny --out DIR        # the same code on tiny shapes, on the CPU (CI)
    python bench/gpu/acceptance.py --record DIR/gpu-DATE.json   # copy a run's JSON into bench/results/
                                                                # and append its table to bench/RESULTS.md

The parent process runs every stage as ``--stage NAME`` in a child process with
a time limit taken from what is left of ``--deadline``, so a CUDA fault, a hang
or an out-of-memory in one stage costs that stage alone; each child writes its
JSON part before exiting and the parent merges the parts into
``gpu-YYYY-MM-DD.json`` and ``gpu-YYYY-MM-DD.md`` after every stage (a run cut
short still leaves its first stages). Weights are random, created on the
device; conditions come from `Backend.bench_conditions` (no encoder weights,
no tokenizer files, no download).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
# the default stages, by value; "sweep" and "numerics" run only when named in --stages
STAGES = ["kernels", "attention", "noise", "wan", "presets", "hunyuan", "e2e"]
# rough seconds each stage needs on an H200 (the parent skips a stage it cannot fit)
NEEDS = {"numerics": 150, "sweep": 30, "kernels": 25, "attention": 25, "noise": 10, "wan": 100, "presets": 400,
         "hunyuan": 70, "e2e": 60}
PRESETS = ["resident", "stream", "low-vram", "fp8", "offload"]


def flush(part: dict[str, Any]) -> None:
    """Write this stage's results so far (the parent merges them even if the stage is then killed)."""
    work, stage = os.environ.get("ACCEPTANCE_WORK"), os.environ.get("ACCEPTANCE_STAGE")
    if work and stage:
        tmp = Path(work, f".part-{stage}.json")
        tmp.write_text(json.dumps(part, indent=1))
        tmp.replace(Path(work, f"part-{stage}.json"))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------------------
# set-up shared by the stages
# ---------------------------------------------------------------------------------------------------------
def setup(tiny: bool):
    """(torch, device, dtype); registers the plugins (tiny variants under the same names with --tiny)."""
    for p in ("plugins/vidcore_wan22", "plugins/vidcore_hunyuan", "plugins/vidcore_latte", "."):
        path = str(ROOT / p)
        if path not in sys.path:
            sys.path.insert(0, path)
    if tiny:
        os.environ["VIDCORE_LOAD_PLUGINS"] = "-"  # no installed plugin: the tiny ones take the official names
    import torch

    from vidcore import plugins

    if tiny:
        sys.path.insert(0, str(HERE))
        import tiny as tiny_backends

        plugins.reset(extra_plugins=[("acceptance-tiny", tiny_backends.Plugin())])
    else:
        try:
            plugins.get_backend("wan2.2-t2v-a14b")
        except Exception:  # the plugins are not installed here (a bare GPU host): register them from the tree
            import vidcore_hunyuan.plugin
            import vidcore_wan22.plugin

            plugins.reset(extra_plugins=[("wan22", vidcore_wan22.plugin), ("hunyuan", vidcore_hunyuan.plugin)])
    cuda = torch.cuda.is_available() and not tiny
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    return torch, device, dtype


# ---------------------------------------------------------------------------------------------------------
# stages: each returns a dict merged into the run's JSON
# ---------------------------------------------------------------------------------------------------------
def stage_kernels(tiny: bool) -> dict[str, Any]:
    if tiny:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
    torch, device, dtype = setup(tiny)
    from vidcore.kernels import benchmark as bm
    from vidcore.kernels import reference as ref

    L, C, H = (64, 64, 2) if tiny else (75600, 5120, 40)
    grid = (2, 4, 8) if tiny else (21, 45, 80)
    copy = bm.copy_bandwidth(device)
    gen = torch.Generator(device).manual_seed(0)

    def rnd(*shape, dt=dtype):
        return torch.randn(*shape, generator=gen, device=device, dtype=torch.float32).to(dt)

    x, y = rnd(1, L, C), rnd(1, L, C)
    shift, scale, gate = rnd(1, 1, C, dt=torch.float32), rnd(1, 1, C, dt=torch.float32), rnd(1, 1, C,
                                                                                          dt=torch.float32)
    w = 1 + 0.1 * rnd(C)
    hd = 128 if not tiny else 32
    dims = (44, 42, 42) if not tiny else (12, 10, 10)
    cos, sin = ref.rope_freqs_3d(dims, grid, dtype=torch.float32, device=device)
    q = rnd(1, grid[0] * grid[1] * grid[2], H, hd)
    cos, sin = cos[:, None], sin[:, None]
    from vidcore.kernels import triton_gated_residual as tg
    from vidcore.kernels import triton_norm_modulate as tn
    from vidcore.kernels import triton_qk_rms_norm as tq
    from vidcore.kernels import triton_rope_apply as tr

    cases = [
        ("norm_modulate[layer]", lambda: tn.norm_modulate(x, shift, scale, kind="layer", out_dtype=dtype),
         lambda: ref.norm_modulate(x, shift, scale, kind="layer", out_dtype=dtype), 2 * x.numel() * x.element_size()),
        ("norm_modulate[rms]", lambda: tn.norm_modulate(x, shift, scale, kind="rms", out_dtype=dtype),
         lambda: ref.norm_modulate(x, shift, scale, kind="rms", out_dtype=dtype), 2 * x.numel() * x.element_size()),
        ("gated_residual", lambda: tg.gated_residual(x, y, gate), lambda: ref.gated_residual(x, y, gate),
         3 * x.numel() * x.element_size()),
        ("qk_rms_norm", lambda: tq.qk_rms_norm(x, y, w.to(dtype), w.to(dtype)),
         lambda: ref.qk_rms_norm(x, y, w.to(dtype), w.to(dtype)), 4 * x.numel() * x.element_size()),
        ("rope_apply", lambda: tr.rope_apply(q, cos, sin), lambda: ref.rope_apply(q, cos, sin),
         2 * q.numel() * q.element_size() + 2 * cos.numel() * 4),
    ]
    rows = []
    for name, kern, reference, nbytes in cases:
        row: dict[str, Any] = {"name": name}
        try:
            with torch.no_grad():
                got, want = kern(), reference()
                if isinstance(got, tuple):
                    got, want = torch.cat([g.flatten() for g in got]), torch.cat([w_.flatten() for w_ in want])
                row["rel_err_bf16" if dtype == torch.bfloat16 else f"rel_err_{str(dtype)[6:]}"] = float(
                    (got.float() - want.float()).norm() / want.float().norm())
                t = bm.time_fn(kern, device)
                t_ref = bm.time_fn(reference, device)
            row["ms"] = t.median_ms
            row["gbps"] = nbytes / (t.median_ms * 1e-3) / 1e9
            row["pct_hbm"] = 100 * nbytes / (t.median_ms * 1e-3) / copy
            row["speedup_vs_torch"] = t_ref.median_ms / t.median_ms
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
        log(f"kernel {row}")
        rows.append(row)
        flush({"kernels": rows, "copy_gbps": copy / 1e9})
    return {"kernels": rows, "copy_gbps": copy / 1e9}


def stage_sweep(tiny: bool) -> dict[str, Any]:
    """Launch configurations of the kernels below their goal, timed at the same shapes (picks defaults)."""
    if tiny:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
    torch, device, dtype = setup(tiny)
    from vidcore.kernels import benchmark as bm
    from vidcore.kernels import reference as ref
    from vidcore.kernels import triton_norm_modulate as tn
    from vidcore.kernels import triton_rope_apply as tr

    L, C, H, hd = (64, 64, 2, 32) if tiny else (75600, 5120, 40, 128)
    grid, dims = ((2, 4, 8), (12, 10, 10)) if tiny else ((21, 45, 80), (44, 42, 42))
    copy = bm.copy_bandwidth(device)
    x = torch.randn(1, L, C, device=device, dtype=dtype)
    shift, scale = torch.randn(1, 1, C, device=device), torch.randn(1, 1, C, device=device)
    cos, sin = ref.rope_freqs_3d(dims, grid, dtype=torch.float32, device=device)
    cos, sin = cos[:, None], sin[:, None]
    q = torch.randn(1, grid[0] * grid[1] * grid[2], H, hd, device=device, dtype=dtype)
    plans = [
        ("norm_modulate[layer]", tn.TUNE, [(1, 4), (1, 8), (1, 16), (1, 32), (2, 8), (2, 16), (4, 16), (4, 32)],
         lambda: tn.norm_modulate(x, shift, scale, kind="layer", out_dtype=dtype),
         lambda: ref.norm_modulate(x, shift, scale, kind="layer", out_dtype=dtype), 2 * x.numel() * x.element_size()),
        ("rope_apply", tr.TUNE, [(8, 4), (16, 4), (32, 4), (64, 4), (32, 8), (64, 8), (128, 8)],
         lambda: tr.rope_apply(q, cos, sin), lambda: ref.rope_apply(q, cos, sin),
         2 * q.numel() * q.element_size() + 2 * cos.numel() * 4),
    ]
    rows: list[dict[str, Any]] = []
    for name, tune, configs, kern, reference, nbytes in plans:
        want = reference().float()
        for block_r, warps in configs:
            tune.clear()
            tune.update(block_r=block_r, num_warps=warps)
            row: dict[str, Any] = {"name": name, "block_r": block_r, "num_warps": warps}
            try:
                got = kern().float()
                row["rel_err"] = float((got - want).norm() / want.norm())
                t = bm.time_fn(kern, device)
                row["ms"], row["pct_hbm"] = t.median_ms, 100 * nbytes / (t.median_ms * 1e-3) / copy
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            log(f"sweep {row}")
            rows.append(row)
            flush({"kernel_sweep": rows})
        tune.clear()
    return {"kernel_sweep": rows}


def stage_attention(tiny: bool) -> dict[str, Any]:
    import warnings

    torch, device, dtype = setup(tiny)
    from vidcore.attention import AttentionBackendError, attention, attention_backends, automatic_choice
    from vidcore.kernels import benchmark as bm

    B, H, L, D = (1, 2, 128, 32) if tiny else (1, 40, 75600, 128)
    q, k, v = (torch.randn(B, H, L, D, device=device, dtype=dtype) for _ in range(3))
    flops = 4.0 * B * H * L * L * D
    rows = []
    for name in attention_backends():
        row: dict[str, Any] = {"backend": name}
        if name == "sdpa-math" and not tiny:
            row["skipped"] = "materialises the (L, L) scores: 457 GB at this shape"
            rows.append(row)
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                attention(q, k, v, backend=name)
                t = bm.time_fn(lambda n=name: attention(q, k, v, backend=n), device)
            row["ms"], row["tflops"] = t.median_ms, flops / (t.median_ms * 1e-3) / 1e12
        except (AttentionBackendError, RuntimeError) as exc:
            row["skipped"] = str(exc).splitlines()[0][:200]
        log(f"attention {row}")
        rows.append(row)
        flush({"attention": rows, "attention_shape": [B, H, L, D]})
    t = bm.time_fn(lambda: attention(q, k, v), device)
    auto = automatic_choice(q, k, v)
    timed_rows = [r for r in rows if "tflops" in r]
    best = max(timed_rows, key=lambda r: r["tflops"]) if timed_rows else None
    fastest = best["backend"] if best else None
    auto_tflops = next((r["tflops"] for r in timed_rows if r["backend"] == auto), 0.0)
    out = {"attention": rows, "attention_auto": {"backend": auto, "tflops": flops / (t.median_ms * 1e-3) / 1e12,
                                                 "fastest": fastest,
                                                 # within 3% of the fastest: the same kernel timed twice differs so
                                                 "picks_fastest": bool(best) and auto_tflops >= 0.97 * best["tflops"]},
           "attention_shape": [B, H, L, D]}
    log(f"attention auto {out['attention_auto']}")
    return out


def stage_noise(tiny: bool) -> dict[str, Any]:
    import hashlib

    torch, device, _ = setup(tiny)
    from vidcore import plugins
    from vidcore.request import resolve
    from vidcore.seeds import initial_noise

    backend = plugins.get_backend("wan2.2-t2v-a14b")
    size, frames = (None, None) if tiny else ("832x480", 81)
    req = resolve(backend, "noise", size=size, frames=frames, seed=42)
    x = initial_noise(backend, req, device)
    digest = hashlib.sha256(x.float().cpu().contiguous().numpy().tobytes()).hexdigest()
    log(f"noise {tuple(x.shape)} on {device}: {digest}")
    return {"noise_sha256": digest, "noise_shape": list(x.shape), "noise_device": str(device)}


def _forward_rows(key: str, name: str, sizes: list[tuple[str | None, int | None]], tiny: bool
                  ) -> list[dict[str, Any]]:
    torch, device, dtype = setup(tiny)
    from vidcore.bench import denoiser as bd
    from vidcore.bench.timing import matmul_flops

    peak = matmul_flops(device, dtype)
    rows = []
    for size, frames in sizes:
        case = bd.prepare(name, device=device, dtype=dtype, size=size, frames=frames)
        label = f"{case.request.width}x{case.request.height}x{case.request.frames}"
        row: dict[str, Any] = {"size": label, "backend": name}
        try:
            ours = bd.measure_preset(case, "resident", step=False, flops=True)
            row.update(vidcore_s=ours.forward_s, peak_gib=ours.peak_gib, tflop=ours.tflop,
                       mfu_pct=100 * ours.tflop * 1e12 / ours.forward_s / peak)
            log(f"{name} {label}: vidcore {ours.forward_s:.3f} s/forward, MFU {row['mfu_pct']:.1f}%")
            flush({key: rows + [row]})
            try:
                ref = bd.measure_reference(case)
                row.update(diffusers_s=ref.forward_s, diffusers_peak_gib=ref.peak_gib,
                           speedup=ref.forward_s / ours.forward_s, rel_diff=bd.rel_diff(ours.output, ref.output))
                log(f"{name} {label}: diffusers {ref.forward_s:.3f} s, x{row['speedup']:.3f}, "
                    f"rel diff {row['rel_diff']:.2e}")
                del ref
            except bd.BenchError as exc:
                row["diffusers_s"] = None
                row["diffusers_error"] = str(exc)
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
            log(f"{name} {label}: {row['error']}\n{traceback.format_exc()}")
        row["matmul_tflops"] = peak / 1e12
        rows.append(row)
        flush({key: rows})
        bd.free()
    return rows


def stage_wan(tiny: bool) -> dict[str, Any]:
    sizes = [(None, None)] if tiny else [("832x480", 81), ("1280x720", 81)]
    return {"wan_a14b_forward": _forward_rows("wan_a14b_forward", "wan2.2-t2v-a14b", sizes, tiny)}


def stage_hunyuan(tiny: bool) -> dict[str, Any]:
    sizes = [(None, None)] if tiny else [("960x544", 129)]
    return {"hunyuan_forward": _forward_rows("hunyuan_forward", "hunyuan-video-t2v", sizes, tiny)}


def stage_numerics(tiny: bool) -> dict[str, Any]:
    """Which bf16 implementation is closer to the truth: ours and diffusers' vs ours in float32 (no TF32),
    all on the same weights (the bf16 weights are the float32 ones rounded)."""
    torch, device, dtype = setup(tiny)
    from vidcore.bench import denoiser as bd

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    size, frames = (None, None) if tiny else ("832x480", 81)
    rows = []
    for key, name in (("wan", "wan2.2-t2v-a14b"), ("hunyuan", "hunyuan-video-t2v")):
        row: dict[str, Any] = {"backend": name}
        try:
            hsize, hframes = (None, None) if tiny else (("832x480", 81) if key == "wan" else ("960x544", 61))
            case = bd.prepare(name, device=device, dtype=dtype, size=hsize or size, frames=hframes or frames)
            row["size"] = f"{case.request.width}x{case.request.height}x{case.request.frames}"
            ours = bd.measure_preset(case, "resident", step=False).output.float().cpu()
            bd.free()
            ref = bd.measure_reference(case).output.float().cpu()
            bd.free()
            case32 = bd.prepare(name, device=device, dtype=torch.float32, size=hsize or size,
                                frames=hframes or frames)
            gold = bd.measure_preset(case32, "resident", step=False).output.float().cpu()
            bd.free()
            row.update(vidcore_bf16_vs_fp32=bd.rel_diff(ours, gold), diffusers_bf16_vs_fp32=bd.rel_diff(ref, gold),
                       vidcore_vs_diffusers=bd.rel_diff(ours, ref))
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
            log(traceback.format_exc())
        log(f"numerics {row}")
        rows.append(row)
        flush({"numerics": rows})
    return {"numerics": rows}


def stage_presets(tiny: bool) -> dict[str, Any]:
    torch, device, dtype = setup(tiny)
    from vidcore.bench import denoiser as bd

    case = bd.prepare("wan2.2-t2v-a14b", device=device, dtype=dtype, size=None if tiny else "1280x720",
                      frames=None if tiny else 81)
    label = f"{case.request.width}x{case.request.height}x{case.request.frames}"
    rows: list[dict[str, Any]] = []
    base = None
    for preset in PRESETS:
        row: dict[str, Any] = {"preset": preset, "size": label}
        try:
            m = bd.measure_preset(case, preset, forward=False)
            row.update(step_s=m.step_s, forward_s=m.forward_s, peak_gib=m.peak_gib,
                       stats={k: v for k, v in m.stats.items() if isinstance(v, (int, float))})
            if base is None:
                base = m
            row["ratio_vs_resident"] = m.step_s / base.step_s
            row["rel_diff_vs_resident"] = bd.rel_diff(m.output, base.output)
            log(f"preset {preset}: {m.step_s:.3f} s/step ({row['ratio_vs_resident']:.3f}x), peak {m.peak_gib}")
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
            log(f"preset {preset}: {row['error']}\n{traceback.format_exc()}")
        rows.append(row)
        flush({"memory_presets": rows})
        bd.free()
    return {"memory_presets": rows}


def stage_e2e(tiny: bool) -> dict[str, Any]:
    """TI2V-5B through T5 (random token ids), a few guided flow steps and the tiled VAE decode, to an mp4."""
    torch, device, dtype = setup(tiny)
    from vidcore import plugins
    from vidcore.backend import Conditions
    from vidcore.bench import denoiser as bd
    from vidcore.bench.random_weights import materialise
    from vidcore.bench.timing import peak_gib, peak_reset, sync

    name = "wan2.2-ti2v-5b"
    backend = plugins.get_backend(name)
    steps = 2 if tiny else 3
    case = bd.prepare(name, device=device, dtype=dtype, size=None if tiny else "1280x704",
                      frames=None if tiny else 121)
    req = case.request
    comps = backend.build("meta")
    out: dict[str, Any] = {"backend": name, "size": f"{req.width}x{req.height}x{req.frames}", "steps": steps}
    stages: list[dict[str, Any]] = []

    def stage(label: str, fn):
        peak_reset(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            res = fn()
        sync(device)
        row = {"stage": label, "s": time.perf_counter() - t0, "peak_gib": peak_gib(device)}
        log(f"e2e {row}")
        stages.append(row)
        flush({"end_to_end": {**out, "stages": stages}})
        return res

    enc = stage("t5 weights", lambda: materialise(comps["text_encoder"], device, dtype))
    p = backend.spec.t5
    ids = torch.randint(0, p.vocab, (2, p.text_len), device=device)
    mask = (torch.arange(p.text_len, device=device) < 96).long().expand(2, -1).contiguous()
    ctx = stage("t5 encode (prompt + negative)", lambda: enc.encode(ids, mask))
    comps["text_encoder"] = enc = None
    bd.free()
    expert = backend.experts(comps, req)[0]
    stage("dit weights", lambda: materialise(comps[expert.component], device, dtype))
    cond = {"context": ctx[:1].to(dtype)}
    uncond = {"context": ctx[1:].to(dtype)}
    case.conditions = type(case.conditions)(cond, uncond, {})
    x = bd.noise(case)

    def denoise():
        from vidcore.sampling import Scheduler

        schedule = Scheduler(req.schedule, **req.schedule_options)(steps)
        xs = x
        for i in range(steps):
            t = schedule.timesteps[i].reshape(1).to(device)
            u = expert.network(torch.cat([xs, xs]), t.expand(2), context=torch.cat([cond["context"],
                                                                                   uncond["context"]]))
            v = u[1:] + req.guidance * (u[:1] - u[1:])
            xs = xs + (float(schedule.sigmas[i + 1]) - float(schedule.sigmas[i])) * v
        return xs

    lat = stage(f"dit {steps} guided steps", denoise)
    comps[expert.component] = None
    bd.free()
    vae = comps["vae"]
    stage("vae weights", lambda: materialise(vae, device, torch.float32))
    vae.tiling = True
    frames = stage("vae decode (tiled)", lambda: backend.decode(comps, lat, req, conditions=Conditions({})))
    out["frames_shape"] = list(frames.shape)
    try:
        import hashlib
        import shutil

        from vidcore.video import write_video

        path = Path(os.environ.get("TMPDIR", "/tmp")) / "e2e-ti2v-5b.mp4"
        path.unlink(missing_ok=True)
        t0 = time.perf_counter()
        write_video(path, frames[0], req.fps)
        stages.append({"stage": "mp4 encode", "s": time.perf_counter() - t0, "peak_gib": None})
        out["mp4"] = path.name
        out["mp4_bytes"] = path.stat().st_size
        out["mp4_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        if out["mp4_bytes"] < 12 * 2**20:
            shutil.copyfile(path, Path(os.environ.get("ACCEPTANCE_OUT", ".")) / path.name)
    except Exception as exc:  # PyAV missing on the host, say
        out["mp4_error"] = f"{type(exc).__name__}: {exc}"
    out["stages"] = stages
    return {"end_to_end": out}


# ---------------------------------------------------------------------------------------------------------
# the parent: children, merging, the table
# ---------------------------------------------------------------------------------------------------------
def device_info() -> dict[str, Any]:
    import torch

    info = {"date": datetime.date.today().isoformat(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        info["gpu_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30
    else:
        info["device"] = "cpu (dry run)"
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:
        info["triton"] = None
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except Exception:
        info["diffusers"] = None
    return info


def table(res: dict[str, Any]) -> str:
    """The markdown appended to bench/RESULTS.md."""
    f = _fmt
    lines = [f"## GPU acceptance run, {res.get('date')}, {res.get('device')} (bench/gpu/acceptance.py)", "",
             f"torch {res.get('torch')}, triton {res.get('triton')}, diffusers {res.get('diffusers')}; "
             f"copy bandwidth measured {f(res.get('copy_gbps'), '.0f')} GB/s; random weights, "
             + ("bf16." if "cpu" not in str(res.get("device")) else "fp32, tiny shapes: no figure means anything."),
             ""]
    if res.get("kernels"):
        lines += ["| kernel | rel err | GB/s | % of copy | vs torch |", "|---|---|---|---|---|"]
        for r in res["kernels"]:
            err = r.get("rel_err_bf16", r.get("rel_err_float32"))
            lines.append(f"| {r['name']} | {f(err, '.2e')} | {f(r.get('gbps'), '.0f')} | "
                         f"{f(r.get('pct_hbm'), '.1f')} | {f(r.get('speedup_vs_torch'), '.2f')}x |"
                         + (f" {r['error']}" if r.get("error") else ""))
        lines.append("")
    if res.get("kernel_sweep"):
        lines += ["| kernel sweep | rows/program | warps | ms | % of copy | rel err |", "|---|---|---|---|---|---|"]
        for r in res["kernel_sweep"]:
            lines.append(f"| {r['name']} | {r['block_r']} | {r['num_warps']} | {f(r.get('ms'), '.3f')} | "
                         f"{f(r.get('pct_hbm'), '.1f')} | {f(r.get('rel_err'), '.1e')} |"
                         + (f" {r['error']}" if r.get("error") else ""))
        lines.append("")
    if res.get("attention"):
        shape = res.get("attention_shape")
        lines += [f"| attention {shape} | TFLOP/s |", "|---|---|"]
        for r in res["attention"]:
            lines.append(f"| {r['backend']} | {f(r.get('tflops'), '.0f') if 'tflops' in r else r.get('skipped')} |")
        a = res.get("attention_auto", {})
        lines += [f"| automatic ({a.get('backend')}) | {f(a.get('tflops'), '.0f')} |", "",
                  f"Automatic choice picks the fastest: {a.get('picks_fastest')} (fastest: {a.get('fastest')}).", ""]
    for key, title in (("wan_a14b_forward", "Wan2.2 A14B expert forward"), ("hunyuan_forward", "HunyuanVideo forward")):
        if res.get(key):
            lines += [f"| {title} | vidcore s | diffusers s | speed-up | MFU | peak GiB | rel diff |",
                      "|---|---|---|---|---|---|---|"]
            for r in res[key]:
                lines.append(f"| {r['size']} | {f(r.get('vidcore_s'), '.3f')} | {f(r.get('diffusers_s'), '.3f')} | "
                             f"{f(r.get('speedup'), '.3f')}x | {f(r.get('mfu_pct'), '.1f')}% | "
                             f"{f(r.get('peak_gib'), '.1f')} | {f(r.get('rel_diff'), '.2e')} |"
                             + (f" {r.get('error') or r.get('diffusers_error') or ''}"))
            lines.append("")
    if res.get("memory_presets"):
        lines += ["| preset (A14B expert, guided step) | size | s/step | vs resident | peak GiB | rel diff |",
                  "|---|---|---|---|---|---|"]
        for r in res["memory_presets"]:
            lines.append(f"| {r['preset']} | {r['size']} | {f(r.get('step_s'), '.3f')} | "
                         f"{f(r.get('ratio_vs_resident'), '.3f')}x | {f(r.get('peak_gib'), '.1f')} | "
                         f"{f(r.get('rel_diff_vs_resident'), '.2e')} |" + (f" {r['error']}" if r.get("error") else ""))
        lines.append("")
    if res.get("numerics"):
        lines += ["| bf16 numerics (rel diff, same weights) | size | vidcore vs fp32 | diffusers vs fp32 | vidcore vs "
                  "diffusers |", "|---|---|---|---|---|"]
        for r in res["numerics"]:
            lines.append(f"| {r['backend']} | {r.get('size', '-')} | {f(r.get('vidcore_bf16_vs_fp32'), '.2e')} | "
                         f"{f(r.get('diffusers_bf16_vs_fp32'), '.2e')} | {f(r.get('vidcore_vs_diffusers'), '.2e')} |"
                         + (f" {r['error']}" if r.get("error") else ""))
        lines.append("")
    e2e = res.get("end_to_end")
    if e2e:
        lines += [f"End to end {e2e.get('backend')} {e2e.get('size')}, {e2e.get('steps')} steps "
                  f"(mp4: {e2e.get('mp4') or e2e.get('mp4_error')}):", "", "| stage | s | peak GiB |", "|---|---|---|"]
        for r in e2e.get("stages", []):
            lines.append(f"| {r['stage']} | {f(r.get('s'), '.2f')} | {f(r.get('peak_gib'), '.1f')} |")
        lines.append("")
    if res.get("noise_sha256"):
        lines += [f"Initial noise of wan2.2-t2v-a14b, {res.get('noise_shape')}, seed 42, on "
                  f"{res.get('noise_device')}: sha256 `{res['noise_sha256']}`.", ""]
    for name, err in res.get("stage_errors", {}).items():
        lines.append(f"Stage {name} did not finish: {err}")
    return "\n".join(lines).rstrip() + "\n"


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def run_child(stage: str, tiny: bool, work: Path, out: Path, limit: float) -> str | None:
    """Run one stage in a child process; None when it wrote its part, else why not."""
    part = work / f"part-{stage}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", stage, "--work", str(work)]
    if tiny:
        cmd.append("--tiny")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "ACCEPTANCE_OUT": str(out), "ACCEPTANCE_WORK": str(work),
           "ACCEPTANCE_STAGE": stage}
    child_log = work / f"log-{stage}.txt"
    with child_log.open("w") as logf:
        try:
            proc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, timeout=limit, env=env)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            code = None
    text = child_log.read_text(errors="replace")
    with (out / "acceptance.log").open("a") as f:  # every child's output, in one file that comes back
        f.write(f"===== stage {stage} =====\n{text}\n")
    if code is None:
        return f"timed out after {limit:.0f} s"
    if code != 0 or not part.exists():
        tail = text.strip().splitlines()[-3:]
        return f"exit {code}: " + " | ".join(tail)[-400:]
    return None


def parent(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for old in work.glob("part-*.json"):
        old.unlink()
    start = time.monotonic()
    res: dict[str, Any] = device_info()
    res["stage_errors"] = {}
    res["stage_seconds"] = {}
    stem = f"gpu-{res['date']}" if not args.tiny else f"tiny-{res['date']}"
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    for stage in stages:
        left = args.deadline - (time.monotonic() - start)
        if not args.tiny and left < NEEDS[stage] * 0.6:
            res["stage_errors"][stage] = f"skipped: {left:.0f} s left of the deadline, it needs ~{NEEDS[stage]} s"
            log(res["stage_errors"][stage])
            continue
        log(f"stage {stage} (limit {left:.0f} s)")
        t0 = time.monotonic()
        err = run_child(stage, args.tiny, work, out, max(1.0, left))
        res["stage_seconds"][stage] = round(time.monotonic() - t0, 1)
        part = work / f"part-{stage}.json"
        if part.exists():
            res.update(json.loads(part.read_text()))
        if err:
            res["stage_errors"][stage] = err
            log(f"stage {stage}: {err}")
        (out / f"{stem}.json").write_text(json.dumps(res, indent=1))
        (out / f"{stem}.md").write_text(table(res))
    log(f"done in {time.monotonic() - start:.0f} s: {out / stem}.json")
    print(table(res))
    return 1 if res["stage_errors"] else 0


def record(path: Path) -> int:
    """Copy a run's JSON into bench/results/ and append its table to bench/RESULTS.md."""
    res = json.loads(path.read_text())
    dest = ROOT / "bench" / "results" / path.name
    dest.parent.mkdir(exist_ok=True)
    n = 2
    while dest.exists():  # a second run the same day gets its own file
        dest = dest.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    dest.write_text(json.dumps(res, indent=1) + "\n")
    with (ROOT / "bench" / "RESULTS.md").open("a") as f:
        f.write("\n" + table(res))
    log(f"wrote {dest} and appended the table to bench/RESULTS.md")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="acceptance-out", help="where the JSON, the table, the log and the mp4 go")
    p.add_argument("--work", default=None, help="scratch folder for the stages' parts (default: OUT/work)")
    p.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU: checks the script, measures nothing")
    p.add_argument("--stages", default=",".join(STAGES))
    p.add_argument("--deadline", type=float, default=420.0, help="seconds for the whole run (stages that cannot "
                   "fit in what is left are skipped, a running one is stopped)")
    p.add_argument("--stage", default=None, help=argparse.SUPPRESS)
    p.add_argument("--record", type=Path, default=None)
    args = p.parse_args()
    if args.record:
        return record(args.record)
    args.work = args.work or str(Path(args.out) / "work")
    if args.stage is None:
        return parent(args)
    fn = globals()[f"stage_{args.stage}"]
    part = fn(args.tiny)
    Path(args.work, f"part-{args.stage}.json").write_text(json.dumps(part, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
