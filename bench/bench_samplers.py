"""Benchmark: the sampling loop's own cost per step, ours vs the matching diffusers scheduler, same run.

The model is near-free (it returns a preallocated tensor), so the time is the
loop: parameterisation, sampler arithmetic, scheduler bookkeeping. Each sampler
runs against the diffusers scheduler that computes the same trajectory (see
tests/test_sampling_parity.py), on two latents: a small one (Python overhead)
and Wan2.2 TI2V-5B's 720p latent (1, 48, 31, 44, 80) (memory traffic).

"Real model step" reference: the linear layers of one Wan2.2-TI2V-5B-sized DiT
block (dim 3072, ffn 14336) timed on this device at ``--probe-tokens`` tokens,
scaled to the latent's 27280 tokens and 30 blocks. Attention, norms and
modulation are left out, so this is a lower bound of a real step.

    python bench/bench_samplers.py [--steps 30] [--big-steps 6] [--repeat 3] [--no-reference]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from vidcore.sampling import Sampler, Schedule, Scheduler, wrap_network

SCALED = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


def cases(d) -> list[tuple[str, str, Callable[[int], Schedule], dict, Callable[[int], object], str]]:
    """(label, our sampler, our schedule, sampler options, diffusers scheduler factory, prediction)."""

    def made(cls, **kw):
        def factory(n):
            s = cls(**kw)
            s.set_timesteps(n)
            return s

        return factory

    return [
        ("ddpm", "ddpm", lambda n: Scheduler("ddpm", spacing="leading")(n), {},
         made(d.DDPMScheduler, clip_sample=False), "eps"),
        ("ddim eta=0", "ddim", lambda n: Scheduler("ddpm", spacing="trailing", **SCALED)(n), {},
         made(d.DDIMScheduler, clip_sample=False, timestep_spacing="trailing", **SCALED), "eps"),
        ("euler karras", "euler", lambda n: Scheduler("karras", **SCALED)(n), {},
         made(d.EulerDiscreteScheduler, use_karras_sigmas=True, **SCALED), "eps"),
        ("heun karras", "heun", lambda n: Scheduler("karras", **SCALED)(n), {},
         made(d.HeunDiscreteScheduler, use_karras_sigmas=True, **SCALED), "eps"),
        ("dpm++ 2m", "dpmpp_2m", lambda n: Scheduler("ddpm", spacing="trailing", **SCALED)(n), {},
         made(d.DPMSolverMultistepScheduler, timestep_spacing="trailing", **SCALED), "eps"),
        ("dpm++ 2m flow", "dpmpp_2m", lambda n: Scheduler("flow", shift=5.0, grid="dpm")(n), {},
         made(d.DPMSolverMultistepScheduler, use_flow_sigmas=True, flow_shift=5.0,
              prediction_type="flow_prediction"), "flow"),
        ("unipc bh2", "unipc", lambda n: Scheduler("ddpm", spacing="trailing", **SCALED)(n), {},
         made(d.UniPCMultistepScheduler, timestep_spacing="trailing", **SCALED), "eps"),
        ("unipc flow", "unipc", lambda n: Scheduler("flow", shift=5.0, grid="unipc")(n), {},
         made(d.UniPCMultistepScheduler, use_flow_sigmas=True, flow_shift=5.0,
              prediction_type="flow_prediction"), "flow"),
        ("flow euler", "flow_euler", lambda n: Scheduler("flow", shift=5.0)(n), {},
         made(d.FlowMatchEulerDiscreteScheduler, shift=5.0), "flow"),
    ]


def near_free(shape):
    out = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 0.1

    def network(x, t, **cond):
        return out

    return network


def time_ours(name, schedule_fn, opts, prediction, shape, steps, repeat):
    net = near_free(shape)
    times = []
    for _ in range(repeat):
        schedule = schedule_fn(steps)  # building the schedule is part of the loop's cost
        x = schedule.prior(torch.randn(shape))
        t0 = time.perf_counter()
        model = wrap_network(net, prediction, schedule)
        Sampler.get(name)(model, x, schedule, generator=torch.Generator().manual_seed(1), **opts)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / steps


def time_diffusers(factory, shape, steps, repeat):
    net = near_free(shape)
    times = []
    for _ in range(repeat):
        x = torch.randn(shape)
        t0 = time.perf_counter()
        sched = factory(steps)
        gen = torch.Generator().manual_seed(1)
        accepts_gen = "generator" in sched.step.__code__.co_varnames
        for t in sched.timesteps:
            inp = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
            out = net(inp, t)
            x = (sched.step(out, t, x, generator=gen) if accepts_gen else sched.step(out, t, x)).prev_sample
        times.append(time.perf_counter() - t0)
    calls = len(sched.timesteps)
    return statistics.median(times) / steps, calls


def reference_step(probe_tokens: int, tokens: int = 31 * 22 * 40, blocks: int = 30, repeat: int = 2) -> float:
    """Lower bound of one Wan2.2-TI2V-5B step: its block's linear layers, scaled to all tokens and blocks."""
    dim, ffn = 3072, 14336
    g = torch.Generator().manual_seed(0)
    w = [torch.randn(dim, dim, generator=g) * 0.02 for _ in range(4)]
    w1, w2 = torch.randn(dim, ffn, generator=g) * 0.02, torch.randn(ffn, dim, generator=g) * 0.02
    h = torch.randn(probe_tokens, dim, generator=g)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for m in w:
            h = h @ m
        h = torch.nn.functional.gelu(h @ w1) @ w2
        times.append(time.perf_counter() - t0)
    return min(times) * (tokens / probe_tokens) * blocks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30, help="steps for the small latent")
    p.add_argument("--big-steps", type=int, default=6, help="steps for the 720p latent")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--probe-tokens", type=int, default=512)
    p.add_argument("--no-reference", action="store_true")
    args = p.parse_args()
    import diffusers

    torch.set_grad_enabled(False)
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, threads {torch.get_num_threads()}")
    sizes = [("small (1,16,4,8,8)", (1, 16, 4, 8, 8), args.steps, args.repeat),
             ("720p 5B (1,48,31,44,80)", (1, 48, 31, 44, 80), args.big_steps, max(1, args.repeat - 1))]
    worst_big = 0.0
    for label, shape, steps, repeat in sizes:
        print(f"\n{label}, {steps} steps, median of {repeat}: per-step loop time (ms)")
        print(f"{'sampler':16s} {'ours':>9s} {'diffusers':>10s} {'ours/diffusers':>15s}")
        for case, name, sched_fn, opts, factory, prediction in cases(diffusers):
            time_ours(name, sched_fn, opts, prediction, shape, 2, 1)  # warm-up (imports, registry, allocator)
            time_diffusers(factory, shape, 2, 1)
            ours = time_ours(name, sched_fn, opts, prediction, shape, steps, repeat)
            ref, _ = time_diffusers(factory, shape, steps, repeat)
            print(f"{case:16s} {ours * 1e3:9.3f} {ref * 1e3:10.3f} {ours / ref:15.2f}")
            if shape[1] == 48:
                worst_big = max(worst_big, ours)
    if not args.no_reference:
        step = reference_step(args.probe_tokens)
        print(f"\nreal-step lower bound (Wan2.2-TI2V-5B linear layers, 27280 tokens, 30 blocks): {step:.1f} s")
        print(f"slowest sampler loop at 720p: {worst_big * 1e3:.1f} ms/step = {100 * worst_big / step:.4f}% of it")


if __name__ == "__main__":
    main()
