"""`vidcore eval latte-shapes`: generate clips over colours x shapes x directions and judge them.

Text-to-video: every combination (48) per seed round, fixed seeds, judged by
the analytic detector (`vidcore_latte.detector`). Prediction (``--predict``):
the first K frames of each ground-truth clip are given, the rest generated,
and the mean squared error of the generated frames against the procedural
truth is reported next to the copy-last-frame baseline.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from .data.shapes import grid_clips, render, to_uint8
from .detector import detect


def load_demo(path: str | None = None, device: str = "cpu"):
    from .backends import DEMO
    from .system import load_model

    return load_model(path or DEMO.weights, device)


def demo_sampling() -> dict:
    """The demo backend's sampling defaults (steps, guidance, shift, sampler): what `vidcore generate` uses."""
    from .backends import DEMO

    d = DEMO.defaults
    return {"steps": d.steps, "guidance": d.guidance, "shift": d.schedule_options["shift"], "sampler": d.sampler}


def evaluate_t2v(components, config, rounds: int = 1, steps: int | None = None, guidance: float | None = None,
                 shift: float | None = None, sampler: str | None = None, batch: int = 16, seed: int = 0,
                 limit: int | None = None) -> dict:
    """Accuracy of colour, shape and direction (and all three) over ``rounds`` x 48 clips.

    Sampling settings left as None are the demo backend's defaults.
    """
    from .generate import generate

    steps, guidance, shift, sampler = _settings(steps, guidance, shift, sampler)

    clips = grid_clips(rounds)[:limit]
    tally = {"colour": 0, "shape": 0, "direction": 0, "all": 0}
    failures = []
    for start in range(0, len(clips), batch):
        part = clips[start: start + batch]
        seeds = [seed + start + i for i in range(len(part))]
        videos = generate(components, config, [c.caption for c in part], seeds, steps=steps, guidance=guidance,
                          shift=shift, sampler=sampler)
        for clip, video, s in zip(part, videos, seeds):
            det = detect(video)
            m = det.matches(clip)
            for k, ok in m.items():
                tally[k] += int(ok)
            tally["all"] += int(all(m.values()))
            if not all(m.values()):
                failures.append({"prompt": clip.caption, "seed": s, "seen": [det.colour, det.shape, det.direction],
                                 "fill": round(det.fill, 3)})
    n = len(clips)
    return {"clips": n, **{k: v / n for k, v in tally.items()}, "failures": failures}


def evaluate_predict(components, config, given: int = 4, rounds: int = 1, steps: int | None = None,
                     guidance: float | None = None, shift: float | None = None, sampler: str | None = None,
                     batch: int = 16, seed: int = 0, limit: int | None = None) -> dict:
    """MSE (pixels in [0, 1]) of predicted frames vs the true continuation, and the copy-last-frame baseline."""
    from .generate import generate

    steps, guidance, shift, sampler = _settings(steps, guidance, shift, sampler)

    clips = grid_clips(rounds, base_seed=4321)[:limit]
    err_model, err_copy, n, correct = 0.0, 0.0, 0, 0
    for start in range(0, len(clips), batch):
        part = clips[start: start + batch]
        truth = [to_uint8(render(c, config.frames, config.size)) for c in part]
        seeds = [seed + start + i for i in range(len(part))]
        videos = generate(components, config, [c.caption for c in part], seeds, steps=steps, guidance=guidance,
                          shift=shift, sampler=sampler, context=[t[:given] for t in truth])
        for clip, video, true in zip(part, videos, truth):
            future = true[given:].float() / 255
            err_model += float(((video[given:].float() / 255 - future) ** 2).mean())
            err_copy += float(((true[given - 1: given].float() / 255 - future) ** 2).mean())
            correct += int(all(detect(video).matches(clip).values()))
            n += 1
    return {"clips": n, "given_frames": given, "mse_model": err_model / n, "mse_copy_last": err_copy / n,
            "all_attributes_right": correct / n}


def _settings(steps, guidance, shift, sampler) -> tuple:
    d = demo_sampling()
    return (d["steps"] if steps is None else steps, d["guidance"] if guidance is None else guidance,
            d["shift"] if shift is None else shift, d["sampler"] if sampler is None else sampler)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("backend", nargs="?", default="latte-shapes", choices=["latte-shapes"],
                        help="what to evaluate (the embedded demo model)")
    parser.add_argument("--weights", help="a model file to judge instead of the shipped one")
    parser.add_argument("--rounds", type=int, default=1, help="48 clips per round (default 1)")
    parser.add_argument("--steps", type=int, help="sampling steps (default: the demo backend's)")
    parser.add_argument("--guidance", type=float, help="guidance scale (default: the demo backend's)")
    parser.add_argument("--shift", type=float, help="flow schedule shift (default: the demo backend's)")
    parser.add_argument("--sampler", help="core sampler name (default: the demo backend's)")
    parser.add_argument("--seed", type=int, default=0, help="clip i uses seed + i")
    parser.add_argument("--predict", type=int, metavar="K", default=0,
                        help="also evaluate prediction from the first K frames (e.g. 4)")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    components, config = load_demo(args.weights)
    opts = {"steps": args.steps, "guidance": args.guidance, "shift": args.shift, "sampler": args.sampler,
            "seed": args.seed}
    used = dict(zip(("steps", "guidance", "shift", "sampler"), _settings(args.steps, args.guidance, args.shift,
                                                                          args.sampler)))
    print("sampling: " + ", ".join(f"{k} {v}" for k, v in used.items()))
    result = {"sampling": used, "t2v": evaluate_t2v(components, config, rounds=args.rounds, **opts)}
    t2v = result["t2v"]
    print(f"text-to-video: {t2v['clips']} clips  colour {t2v['colour']:.1%}  shape {t2v['shape']:.1%}  "
          f"direction {t2v['direction']:.1%}  all three {t2v['all']:.1%}")
    if args.predict:
        pred = evaluate_predict(components, config, given=args.predict, rounds=args.rounds, **opts)
        result["predict"] = pred
        print(f"prediction from {pred['given_frames']} frames: {pred['clips']} clips  MSE model "
              f"{pred['mse_model']:.5f}  copy-last-frame {pred['mse_copy_last']:.5f}  "
              f"attributes right {pred['all_attributes_right']:.1%}")
    result["seconds"] = round(time.time() - t0, 1)
    print(f"({result['seconds']} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0
